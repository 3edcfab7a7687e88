"""Beyond one machine, measured: issue 17's goals on a real two-node Ray cluster on loopback serving the default
model (Gemma 3 270M) through llama-server replicas, against one direct llama-server in the same run.

Steps, in this order, on one cluster (its head on --head-ip, its worker on the next address):

cluster     start a 2-node `LocalRayCluster` (1 CPU each). Goal: up in <= 60 s.
autoscale   deploy the app with autoscaling (min 1, max 2), load Ray's proxy at concurrency 4 until a second
            replica runs, then --rest more requests. Goals: 1 -> 2 replicas within 15 s of the load's start; the new
            replica serves >= 25 % of the requests sent once it ran.
replicas    the app at 2 replicas (autoscaling floor 2). Goal: 2 replicas running on 2 distinct node addresses.
spread      --requests requests at --concurrency straight to Ray's proxy. Goal: 0 errors, each replica >= 25 %
            (counted from the `x-served-by` header).
throughput  --rounds closed-loop runs of 4 x concurrency requests of --output-len tokens on the 2 replicas (1 thread
            each) and on one direct llama-server (1 thread), interleaved. Goal: aggregate output tokens/s of the
            replicas >= 1.5 x the direct server's.
overhead    --pairs pairs of one request on each (order alternating). Goal: Ray adds <= 40 ms median per request.
engine      the gateway in front (route: Ray 100 %, the direct server 0 % and fallback); SIGKILL the llama-server
            inside one replica under load. Goals: 0 client errors; a replacement replica running <= 60 s after.
node        the same load; SIGKILL every process of the worker node, then start it again. Goals: 0 client errors;
            2 replicas on 2 nodes again <= 60 s after the node returns.
teardown    stop the cluster. Goal: none of its processes runs and none of its ports listens.

Prints each measurement, then every goal as PASS or MISS, and writes JSON (default
benchmarks/results/scale_out.json). Exits 0 whatever the goals say: a goal missed here is a result. The time
goals are for a quiet machine: on a shared one say what else ran.

    .venv/bin/python benchmarks/scale_out.py --help
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.engines.server import free_port
from llmops_lib.errors import LLMOpsError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.models import default_model
from llmops_lib.scale import drills
from llmops_lib.scale.cluster import LocalRayCluster
from llmops_lib.scale.serve_config import Autoscaling, deploy, proxy_url, serve_config

UP_S = 60.0  # cluster: start, at most
MIN_SHARE = 0.25  # spread and autoscale: each replica's share, at least
THROUGHPUT_RATIO = 1.5  # throughput: 2 replicas / 1 direct server, at least
OVERHEAD_MS = 40.0  # overhead: median added per request, at most
RESTORED_S = 60.0  # engine and node: capacity back, at most
SCALED_S = 15.0  # autoscale: 1 -> 2 replicas after the load starts, at most
REPLICAS = 2
AUTOSCALING = Autoscaling(min_replicas=1, max_replicas=REPLICAS, target_ongoing_requests=1, upscale_delay_s=2)


def attempt(step: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one step; a step that breaks (a replica that never comes) is a result, not the end of the run."""
    started = time.perf_counter()
    try:
        out = action()
    except LLMOpsError as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["step_s"] = round(time.perf_counter() - started, 1)
    print(f"{step:<11}{ {k: v for k, v in out.items() if k not in ('spread', 'runs')} }", flush=True)
    return out


def interleaved_throughput(proxy: str, direct: str, rounds: int, concurrency: int, output_len: int) -> dict[str, Any]:
    """Output tokens/s of Ray's replicas and of the direct server, closed-loop runs alternating (r, d, d, r, ...)."""
    totals: dict[str, dict[str, float]] = {
        "ray": {"tokens": 0, "seconds": 0.0},
        "direct": {"tokens": 0, "seconds": 0.0},
    }
    runs = []
    for i in range(rounds):
        for name in ("ray", "direct") if i % 2 == 0 else ("direct", "ray"):
            traffic = drills.send(
                proxy if name == "ray" else direct,
                requests=4 * concurrency,
                concurrency=concurrency,
                max_tokens=output_len,
            )
            totals[name]["tokens"] += sum(r.output_tokens for r in traffic.replies if r.ok)
            totals[name]["seconds"] += traffic.duration_s
            runs.append({"engine": name, "tok_s": round(traffic.output_tokens_per_s, 1), "errors": traffic.errors})
    speed = {name: t["tokens"] / t["seconds"] for name, t in totals.items()}
    return {"ray_tok_s": speed["ray"], "direct_tok_s": speed["direct"], "ratio": speed["ray"] / speed["direct"]} | {
        "runs": runs
    }


def overhead(proxy: str, direct: str, pairs: int, output_len: int) -> dict[str, Any]:
    """Median per-pair latency difference (Ray - direct) of one request at a time, order alternating."""
    differences = []
    for i in range(pairs):
        latency = {}
        for name in ("ray", "direct") if i % 2 == 0 else ("direct", "ray"):
            traffic = drills.send(proxy if name == "ray" else direct, requests=1, concurrency=1, max_tokens=output_len)
            latency[name] = traffic.replies[0].latency_s if traffic.errors == 0 else None
        if None not in latency.values():
            differences.append(1000 * (latency["ray"] - latency["direct"]))
    quartiles = statistics.quantiles(differences, n=4) if len(differences) > 1 else [0.0, 0.0, 0.0]
    return {"pairs": len(differences), "added_ms": statistics.median(differences), "quartiles_ms": quartiles}


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    spec = EngineSpec(model=default_model(), n_ctx=1024, threads=1, parallel=args.concurrency)
    cluster = LocalRayCluster(nodes=REPLICAS, cpus=1, head_ip=args.head_ip)
    try:
        started = time.perf_counter()
        cluster.start()
        report["cluster"] = {"up_s": time.perf_counter() - started, "ips": cluster.ips}
        print(f"cluster    up in {report['cluster']['up_s']:.1f} s on {cluster.ips}", flush=True)
        port = free_port(args.head_ip)

        def config(**kind: Any) -> dict:
            return serve_config(spec, http_host=args.head_ip, http_port=port, **kind)

        def autoscale() -> dict[str, Any]:
            clock = time.perf_counter()
            deploy(cluster, config(autoscaling=AUTOSCALING))
            deploy_s = time.perf_counter() - clock
            drill = drills.autoscale(
                cluster, proxy_url(cluster), to=REPLICAS, concurrency=args.concurrency, rest=args.rest
            )
            return {"deploy_1_replica_s": deploy_s} | drill.as_dict()

        report["autoscale"] = attempt("autoscale", autoscale)

        def replicas() -> dict[str, Any]:
            # a floor of 2: Serve applies an autoscaling change to the running replicas, while a switch to
            # `num_replicas` would replace them (a minute of llama-server starts on a loaded machine)
            deploy(cluster, config(autoscaling=AUTOSCALING.model_copy(update={"min_replicas": REPLICAS})))
            return {"running": [drills.served_by(r) for r in drills.running(cluster)]}

        report["replicas"] = attempt("replicas", replicas)
        proxy = proxy_url(cluster)

        def spread() -> dict[str, Any]:
            traffic = drills.send(proxy, requests=args.requests, concurrency=args.concurrency)
            return {"errors": traffic.errors, "shares": traffic.shares(), "min_share": traffic.min_share(REPLICAS)}

        report["spread"] = attempt("spread", spread)
        with LlamaServer(spec) as direct:
            report["throughput"] = attempt(
                "throughput",
                lambda: interleaved_throughput(proxy, direct.base_url, args.rounds, args.concurrency, args.output_len),
            )
            report["overhead"] = attempt("overhead", lambda: overhead(proxy, direct.base_url, args.pairs, 8))
            route = Route(
                model="default",
                deployments=[
                    Deployment(name="ray", url=proxy),
                    Deployment(name="direct", url=direct.base_url, weight=0),
                ],
                fallback="direct",
            )
            with GatewayServer(GatewayConfig(routes=[route], cache_size=0)) as gateway:
                load = {"requests": args.drill_requests, "concurrency": args.concurrency}
                report["engine"] = attempt(
                    "engine", lambda: drills.kill_engine(cluster, gateway.base_url, **load).as_dict()
                )
                report["node"] = attempt("node", lambda: drills.kill_node(cluster, gateway.base_url, **load).as_dict())
    finally:
        cluster.stop()
    report["teardown"] = {"processes": cluster.pids(), "listening": cluster.listening()}
    return report


def goal(text: str, value: Any, passed: bool) -> dict[str, Any]:
    return {"goal": text, "value": value, "passed": bool(passed)}


def _seconds(step: dict[str, Any], name: str) -> float | None:
    return (step.get("seconds") or {}).get(name)


def goals_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goals, each judged on what this run measured (a step that broke misses its goals)."""
    goals = {
        "cluster_up": goal(
            f"2-node cluster up <= {UP_S:.0f} s", report["cluster"]["up_s"], report["cluster"]["up_s"] <= UP_S
        )
    }
    running = report["replicas"].get("running", [])
    nodes = {served.split("/")[0] for served in running}
    goals["replicas_on_nodes"] = goal(
        f"{REPLICAS} replicas on {REPLICAS} distinct node addresses ({sorted(nodes)})",
        len(nodes),
        len(running) == REPLICAS and len(nodes) == REPLICAS,
    )
    s = report["spread"]
    goals["spread"] = goal(
        f"{report['args']['requests']} requests at c={report['args']['concurrency']}: 0 errors "
        f"({s.get('errors')}), each replica >= {MIN_SHARE:.0%}",
        s.get("min_share", 0.0),
        s.get("errors") == 0 and s.get("min_share", 0.0) >= MIN_SHARE,
    )
    t = report["throughput"]
    goals["throughput"] = goal(
        f"output tok/s of {REPLICAS} replicas / 1 direct llama-server >= {THROUGHPUT_RATIO} "
        f"({t.get('ray_tok_s', 0):.1f} / {t.get('direct_tok_s', 0):.1f})",
        t.get("ratio", 0.0),
        t.get("ratio", 0.0) >= THROUGHPUT_RATIO and all(r["errors"] == 0 for r in t.get("runs", [])),
    )
    o = report["overhead"]
    goals["overhead"] = goal(
        f"Ray adds <= {OVERHEAD_MS:.0f} ms median per request ({o.get('pairs', 0)} interleaved pairs)",
        o.get("added_ms", float("nan")),
        "added_ms" in o and o["added_ms"] <= OVERHEAD_MS,
    )
    for step, what, seconds in (
        ("engine", "engine killed in one replica", "replaced"),
        ("node", "worker node killed", "restored"),
    ):
        d = report[step]
        goals[f"{step}_errors"] = goal(
            f"{what} under gateway load: 0 client errors ({d.get('deployments')} answered)",
            d.get("errors", -1),
            d.get("errors") == 0 and "error" not in d,
        )
        value = _seconds(d, seconds)
        goals[f"{step}_restored"] = goal(
            f"{what}: capacity back <= {RESTORED_S:.0f} s after the {'kill' if step == 'engine' else 'node returns'}",
            value if value is not None else float("nan"),
            value is not None and value <= RESTORED_S,
        )
    a = report["autoscale"]
    scaled = _seconds(a, "scaled")
    goals["autoscale"] = goal(
        f"autoscaling 1 -> {REPLICAS} within {SCALED_S:.0f} s of load at c={report['args']['concurrency']}",
        scaled if scaled is not None else float("nan"),
        scaled is not None and scaled <= SCALED_S,
    )
    share = a.get("new_share")
    goals["autoscale_share"] = goal(
        f"the new replica serves >= {MIN_SHARE:.0%} of the {a.get('rest', 0)} requests sent once it ran",
        share if share is not None else float("nan"),
        share is not None and share >= MIN_SHARE,
    )
    left = report["teardown"]
    goals["teardown"] = goal(
        f"nothing left after stop ({len(left['processes'])} processes, {len(left['listening'])} ports)",
        len(left["processes"]) + len(left["listening"]),
        not left["processes"] and not left["listening"],
    )
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-ip", default="127.0.0.8", help="loopback address of the head node (worker: the next)")
    parser.add_argument("--requests", type=int, default=32, help="spread: requests straight to Ray's proxy")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight in every step")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: closed-loop runs on each side")
    parser.add_argument("--output-len", type=int, default=32, help="throughput: tokens per request")
    parser.add_argument("--pairs", type=int, default=20, help="overhead: one-request pairs (Ray, direct)")
    parser.add_argument("--rest", type=int, default=24, help="autoscale: requests sent after the new replica runs")
    parser.add_argument("--drill-requests", type=int, default=48, help="engine and node: requests of the load")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/scale_out.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    counts = (args.requests, args.concurrency, args.rounds, args.output_len, args.pairs, args.rest, args.drill_requests)
    if min(counts) < 1:
        parser.error(
            "--requests, --concurrency, --rounds, --output-len, --pairs, --rest, --drill-requests must be >= 1"
        )
    if not args.head_ip.startswith("127.") or args.head_ip == "127.0.0.1":
        parser.error(
            f"--head-ip must be a loopback address other than 127.0.0.1 (Ray rewrites that), got {args.head_ip}"
        )
    report = run(args)
    goals = goals_of(report)
    for g in goals.values():
        value = g["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else value
        print(f"{'PASS' if g['passed'] else 'MISS'}  {g['goal']} (measured {shown})")
    write_report(args.json, "scale_out", report | {"goals": goals})
    return 0


if __name__ == "__main__":
    sys.exit(main())
