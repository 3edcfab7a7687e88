"""Gateway overhead: the same load straight to llama-server and through the gateway, interleaved in one run.

Two measurements, each alternating the two paths so that drift of a shared, noisy machine hits both:

- throughput: `--rounds` closed-loop runs per path at `--concurrency` (streaming, `--output-len`
  tokens each, `llmops_lib.bench.run_load`), in the order direct, gateway, gateway, direct, …;
  the ratio of aggregate output throughputs (gateway / direct). Claim: >= 0.97.
- latency: `--pairs` pairs of one-token, non-streaming requests sent one at a time, direct then
  through the gateway (order alternating); the median of the per-pair differences is the latency
  the gateway adds to a request. Claim: <= 2 ms.

And the gateway's own CPU time per request (user + system of its process, psutil), over all of it.
The gateway runs as in production: its own process, uvloop, request log on (SQLite, WAL), metrics
on, response cache off (it would answer repeated requests without the engine and flatter us).

Prints a table and writes JSON (default benchmarks/results/gateway_overhead.json). Exits 0 whatever
the claims say: a claim that fails on this machine is a result, reported as FAIL.

    .venv/bin/python benchmarks/gateway_overhead.py --help
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from llmops_lib.bench import LoadPlan, Workload, run_load
from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.engines.client import OpenAIClient
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.models import default_model

THROUGHPUT_CLAIM = 0.97  # gateway / direct aggregate output throughput, at least
LATENCY_CLAIM_MS = 2.0  # median added latency per request, at most
MODEL = "default"  # the name OpenAIClient sends; the gateway's route uses it too


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def throughput_rounds(
    direct: OpenAIClient, gateway: OpenAIClient, rounds: int, concurrency: int, output_len: int
) -> dict[str, dict]:
    """Interleaved closed-loop runs; returns per path the sums and every run's throughput."""
    totals = {name: {"tokens": 0, "seconds": 0.0, "runs": [], "failed": 0} for name in ("direct", "gateway")}
    for i in range(rounds):
        order = [("direct", direct), ("gateway", gateway)] if i % 2 == 0 else [("gateway", gateway), ("direct", direct)]
        for name, client in order:
            result = run_load(
                client,
                Workload.random(output_len, seed=i),
                LoadPlan(concurrency=concurrency, num_requests=4 * concurrency),
                progress=False,
            )
            m = result.metrics
            total = totals[name]
            total["tokens"] += m.total_output_tokens
            total["seconds"] += m.duration_s
            total["failed"] += m.failed
            total["runs"].append(m.output_throughput)
        print(f"throughput round {i + 1}/{rounds} done", file=sys.stderr)
    return totals


def latency_pairs(direct_url: str, gateway_url: str, pairs: int) -> list[float]:
    """Per-pair latency differences (gateway − direct) in ms of one-token requests, one at a time."""
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}
    differences = []
    with httpx.Client(timeout=60) as client:

        def timed(url: str) -> float:
            start = time.perf_counter()
            response = client.post(url + "/v1/completions", json=body)
            response.raise_for_status()
            return time.perf_counter() - start

        for _ in range(5):  # warm both paths (connections, the engine's prompt cache)
            timed(direct_url), timed(gateway_url)
        for i in range(pairs):
            if i % 2 == 0:
                d, g = timed(direct_url), timed(gateway_url)
            else:
                g, d = timed(gateway_url), timed(direct_url)
            differences.append((g - d) * 1000)
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="engine threads (default 1: the gateway needs a core of its own on 2 cores)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight in the throughput runs")
    parser.add_argument(
        "--rounds", type=int, default=6, help="throughput runs per path (each 4 x concurrency requests)"
    )
    parser.add_argument(
        "--output-len", type=int, default=32, help="tokens generated per request in the throughput runs"
    )
    parser.add_argument("--pairs", type=int, default=300, help="latency pairs (one-token requests)")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/gateway_overhead.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    if min(args.threads, args.concurrency, args.rounds, args.pairs) < 1 or args.output_len < 2:
        parser.error("--threads, --concurrency, --rounds and --pairs must be at least 1, --output-len at least 2")

    spec = EngineSpec(model=default_model(), n_ctx=512, threads=args.threads, parallel=args.concurrency)
    with tempfile.TemporaryDirectory() as tmp, LlamaServer(spec) as server:
        route = Route(model=MODEL, deployments=[Deployment(name="engine", url=server.base_url)])
        config = GatewayConfig(
            routes=[route],
            request_log=str(Path(tmp) / "requests.sqlite"),
            cache_size=0,
            concurrency=max(16, args.concurrency),
            context_window=512,
        )
        with GatewayServer(config) as gw:
            direct, through = OpenAIClient(server.base_url), OpenAIClient(gw.base_url)
            server.complete("Warm up.", max_tokens=4)
            cpu_before = cpu_seconds(gw.pid)
            totals = throughput_rounds(direct, through, args.rounds, args.concurrency, args.output_len)
            differences = latency_pairs(server.base_url, gw.base_url, args.pairs)
            gateway_cpu_s = cpu_seconds(gw.pid) - cpu_before
            direct.close(), through.close()

    throughput = {name: t["tokens"] / t["seconds"] for name, t in totals.items()}
    ratio = throughput["gateway"] / throughput["direct"]
    added_ms = statistics.median(differences)
    gateway_requests = args.rounds * 4 * args.concurrency + args.pairs + 5
    cpu_ms_per_request = gateway_cpu_s / gateway_requests * 1000

    print(f"{'path':<9}{'out tok/s':>11}{'runs (tok/s)':>40}{'failed':>8}")
    for name, t in totals.items():
        runs = " ".join(f"{x:.0f}" for x in t["runs"])
        print(f"{name:<9}{throughput[name]:>11.1f}{runs:>40}{t['failed']:>8}")
    quartiles = statistics.quantiles(differences, n=4)
    print(
        f"added latency per request: median {added_ms:.2f} ms "
        f"(quartiles {quartiles[0]:.2f} / {quartiles[2]:.2f} ms, {len(differences)} pairs)"
    )
    print(
        f"gateway CPU: {cpu_ms_per_request:.2f} ms per request ({gateway_cpu_s:.2f} s over {gateway_requests} requests)"
    )

    claims = {
        "throughput": {
            "claim": f"gateway throughput >= {THROUGHPUT_CLAIM} x direct",
            "value": ratio,
            "passed": ratio >= THROUGHPUT_CLAIM,
        },
        "latency": {
            "claim": f"median added latency <= {LATENCY_CLAIM_MS} ms",
            "value": added_ms,
            "passed": added_ms <= LATENCY_CLAIM_MS,
        },
        "no_failures": {
            "claim": "no failed request on either path",
            "value": sum(t["failed"] for t in totals.values()),
            "passed": all(t["failed"] == 0 for t in totals.values()),
        },
    }
    for name, claim in claims.items():
        print(f"{'PASS' if claim['passed'] else 'FAIL'}  {name}: {claim['claim']} (measured {claim['value']:.3g})")
    report = {
        "spec": spec.as_dict(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "throughput_tok_s": throughput,
        "throughput_ratio": ratio,
        "added_latency_ms": {"median": added_ms, "quartiles": quartiles},
        "gateway_cpu_ms_per_request": cpu_ms_per_request,
        "runs": {n: t["runs"] for n, t in totals.items()},
    }
    write_report(args.json, "gateway_overhead", report | {"claims": claims})
    return 0


if __name__ == "__main__":
    sys.exit(main())
