"""Serving: continuous batching on llama-server, and a check of the load generator itself.

Starts one llama-server with as many slots (`--parallel`) as the highest concurrency, then, for
each concurrency (default 1, 2, 4, 8, 16), runs a closed loop of `--rounds` × concurrency requests
of exactly `--output-len` tokens with `llmops_lib.bench.sweep_concurrency`, and reports vLLM `bench serve`'s
metrics: aggregate output throughput (and its ratio to a single stream), TTFT, TPOT, ITL, E2EL.

Then it measures the engine alone (`llama-batched-bench`: same model, threads and attention
kernel, no server) decoding batches of the same sizes. Its ratio at 8 says whether a shortfall is
the server's (HTTP, scheduling, sampling) or the engine's batched arithmetic on these cores; the
table shows both ratios.

All of that runs on the default model (Q4_K_M) and again on the same model in each `--also`
format (default BF16, made once from its F16 reference): 4-bit weights make one stream fast
(less to read per step), while a batched step is arithmetic, which a CPU with bf16 dot products
does faster on bf16 weights. Both ratios to one stream and the formats' throughput against the
default's at every level are reported, so the choice of weights for batch traffic is measured.

Around each level it reads the server's Prometheus counters, a second measurement independent of
the client: the increase of `llamacpp:tokens_predicted_total` over the same window gives the
server's count of output tokens and its throughput. The claims, ratios from one run:

- batching: aggregate output throughput at concurrency 8 >= 3x a single stream, per format;
- agreement: the load generator's and the server's throughput agree within 5% at every level
  (and their token counts exactly); also checked, on independent clocks: the time spent
  generating, Σ(E2EL − TTFT) over the client's streams vs the server's slot timers.

Prints a table and writes JSON (default benchmarks/results/serving.json). Exits 0 whatever the
claims say: a claim that fails on this machine is a result, reported as FAIL in the table.

Threads: the server uses all cores by default, which is what serving on this machine means; on a
busy machine llama.cpp's spinning threads collapse, so pass --threads 1 there and say so.

    .venv/bin/python benchmarks/serving.py --help
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from llmops_lib.bench import Workload, engine_generation_speed, sweep_concurrency
from llmops_lib.bench.prometheus import GENERATION_SECONDS, OUTPUT_TOKENS
from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.models import default_model
from llmops_lib.optimize.quantize import model_as

BATCHING_CLAIM = (8, 3.0)  # concurrency, minimum throughput ratio to a single stream
AGREEMENT_TOLERANCE = 0.05


def measure_weights(spec: EngineSpec, levels: list[int], args: argparse.Namespace) -> list[dict[str, float]]:
    """Every concurrency level through one server, then the engine alone: one row per level."""
    print(f"{spec.model.name}: concurrency {', '.join(map(str, levels))} …", file=sys.stderr)
    with LlamaServer(spec) as server:
        swept = sweep_concurrency(server, Workload.random(args.output_len, seed=args.seed), levels, rounds=args.rounds)
    results = []
    for level in swept:
        server_tokens = level.increase(OUTPUT_TOKENS)
        results.append(
            level.as_dict()
            | {
                "server_output_tokens": server_tokens,
                "server_output_throughput": server_tokens / level.window_s,
                # Time spent generating after the first token, summed over requests, on two clocks: the
                # client's streams (E2EL − TTFT) and the server's slots (its own C++ timers).
                "server_generation_s": level.increase(GENERATION_SECONDS),
            }
        )
    print(f"{spec.model.name}: the engine alone (llama-batched-bench) …", file=sys.stderr)
    engine = engine_generation_speed(spec, levels, output_len=args.output_len)
    single = results[0]["output_throughput"]
    for row in results:
        row["throughput_vs_single"] = row["output_throughput"] / single
        row["engine_output_throughput"] = engine[row["concurrency"]]
        row["engine_vs_single"] = engine[row["concurrency"]] / engine[1]
        row["throughput_disagreement"] = abs(row["output_throughput"] / row["server_output_throughput"] - 1)
        row["generation_time_disagreement"] = abs(row["client_generation_s"] / row["server_generation_s"] - 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="server threads (default: all cores; run on a quiet machine)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        help="concurrency levels; 1 is the single-stream baseline",
    )
    parser.add_argument("--rounds", type=int, default=3, help="requests per level = rounds x concurrency")
    parser.add_argument("--output-len", type=int, default=64, help="tokens generated per request (ignore_eos)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload")
    parser.add_argument(
        "--flash-attn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="flash attention in server and engine (llama-server's own default, auto, picks it on CPU)",
    )
    parser.add_argument(
        "--also",
        nargs="*",
        default=["BF16"],
        metavar="TYPE",
        help="other weight formats of the default model to measure the same way (default BF16; none: --also)",
    )
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/serving.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    if min(args.concurrency) < 1 or args.rounds < 1 or args.output_len < 2 or args.threads < 1:
        parser.error("--concurrency, --rounds and --threads must be at least 1, --output-len at least 2")
    levels = sorted(set(args.concurrency) | {1})

    spec = EngineSpec(
        model=default_model(), n_ctx=512, threads=args.threads, parallel=max(levels), flash_attn=args.flash_attn
    )
    models = {"Q4_K_M": spec.model} | {name.upper(): model_as(spec.model, name) for name in args.also}
    measured = {name: measure_weights(replace(spec, model=model), levels, args) for name, model in models.items()}
    default = {r["concurrency"]: r for r in measured["Q4_K_M"]}
    for rows in measured.values():
        for row in rows:
            row["throughput_vs_default"] = row["output_throughput"] / default[row["concurrency"]]["output_throughput"]

    header = (
        f"{'weights':<8}{'conc':>5}{'ok':>5}{'fail':>5}{'out tok/s':>11}{'× 1':>6}{'× Q4':>6}{'engine':>8}{'× 1':>6}"
        f"{'server tok/s':>14}{'Δ':>7}{'Δ gen s':>9}{'TTFT p50':>10}{'p99':>8}{'TPOT p50':>10}{'ITL p99':>9}"
        f"{'E2EL p50':>10}{'p99':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for name, rows in measured.items():
        for r in rows:
            print(
                f"{name:<8}{r['concurrency']:>5}{r['completed']:>5}{r['failed']:>5}{r['output_throughput']:>11.1f}"
                f"{r['throughput_vs_single']:>6.2f}{r['throughput_vs_default']:>6.2f}{r['engine_output_throughput']:>8.1f}"
                f"{r['engine_vs_single']:>6.2f}{r['server_output_throughput']:>14.1f}{r['throughput_disagreement']:>7.1%}"
                f"{r['generation_time_disagreement']:>9.1%}{r['median_ttft_ms']:>10.0f}{r['p99_ttft_ms']:>8.0f}"
                f"{r['median_tpot_ms']:>10.1f}{r['p99_itl_ms']:>9.1f}{r['median_e2el_ms']:>10.0f}{r['p99_e2el_ms']:>8.0f}"
            )
    print(
        "(× 1: to one stream of the same weights; × Q4: to the default Q4_K_M model at the same concurrency; "
        "engine: llama-batched-bench, output tok/s of a batch of that many sequences, no server; times in ms; "
        "Δ = |load generator / server counters − 1| for output tok/s; Δ gen s: the same for time spent generating, "
        "Σ(E2EL − TTFT) vs llamacpp:tokens_predicted_seconds_total)"
    )

    claims = {}
    level, minimum = BATCHING_CLAIM
    for name, rows in measured.items():
        by_level = {r["concurrency"]: r for r in rows}
        if level not in by_level:
            continue
        ratio, alone = by_level[level]["throughput_vs_single"], by_level[level]["engine_vs_single"]
        claims[f"batching {name}"] = {
            "claim": f"{name}: throughput at concurrency {level} >= {minimum}x one stream "
            f"(engine alone: {alone:.2f}x; {by_level[level]['throughput_vs_default']:.2f}x the default's throughput)",
            "value": ratio,
            "passed": ratio >= minimum,
        }
    every = [r for rows in measured.values() for r in rows]
    worst = max(r["throughput_disagreement"] for r in every)
    claims["agreement"] = {
        "claim": f"load generator and server counters agree on throughput within {AGREEMENT_TOLERANCE:.0%} "
        "(and on every token)",
        "value": worst,
        "passed": worst <= AGREEMENT_TOLERANCE
        and all(r["total_output_tokens"] == r["server_output_tokens"] for r in every),
    }
    worst = max(r["generation_time_disagreement"] for r in every)
    claims["timing_agreement"] = {
        "claim": f"client streams and server slot timers agree on generation time within {AGREEMENT_TOLERANCE:.0%}",
        "value": worst,
        "passed": worst <= AGREEMENT_TOLERANCE,
    }
    for name, claim in claims.items():
        print(f"{'PASS' if claim['passed'] else 'FAIL'}  {name}: {claim['claim']} (measured {claim['value']:.3g})")

    report = {
        "spec": spec.as_dict(),
        "weights": {name: str(path) for name, path in models.items()},
        "rounds": args.rounds,
        "output_len": args.output_len,
        "seed": args.seed,
    }
    write_report(
        args.json, "serving", report | {"claims": claims, "results": measured["Q4_K_M"], "by_weights": measured}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
