"""Choosing an engine: llama-server vs vLLM on the same model, the same prompts, the same load.

Runs each engine in turn (never both at once) from one `EngineSpec` on the default model: llama.cpp's
`llama-server` on the GGUF, vLLM (CPU build from .venv-vllm, `make vllm`) on the same GGUF exported
to Hugging Face format. For each concurrency (default 1, 4, 8) it sends `--rounds` × concurrency
requests of exactly `--output-len` tokens from the same seeded workload with
`llmops_lib.bench.run_load`, and reports aggregate output tokens/s and TTFT per engine, the ratios
vLLM / llama.cpp, the start time (launch to healthy) and the resident memory of each server's
process tree. One run, no claim: the table is the result.

Threads: both engines get `--threads` (default: all cores; on a busy machine pass --threads 1 and
say so).

    .venv/bin/python benchmarks/engines.py --help
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llmops_lib.bench.engine_compare import measure_engine, ratios
from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec
from llmops_lib.engines.vllm import installed_vllm
from llmops_lib.models import default_model

ENGINES = ("llamacpp", "vllm")
GiB = 1 << 30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="threads of each engine (default: all cores; run on a quiet machine)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=2, help="requests per level = rounds x concurrency")
    parser.add_argument("--output-len", type=int, default=64, help="tokens generated per request (ignore_eos)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/engines.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    if min(args.concurrency) < 1 or args.rounds < 1 or args.output_len < 2 or args.threads < 1:
        parser.error("--concurrency, --rounds and --threads must be at least 1, --output-len at least 2")
    levels = sorted(set(args.concurrency))

    spec = EngineSpec(model=default_model(), n_ctx=512, threads=args.threads, parallel=max(levels))
    measured = {}
    for name in ENGINES:
        print(f"{name} …", file=sys.stderr)
        measured[name] = measure_engine(
            name, spec, levels, rounds=args.rounds, output_len=args.output_len, seed=args.seed
        )
    by_level = {row["concurrency"]: row for row in ratios(measured["vllm"], measured["llamacpp"])}

    header = (
        f"{'conc':>4}{'llama.cpp tok/s':>17}{'vLLM tok/s':>12}{'vLLM/llama':>12}"
        f"{'llama.cpp TTFT p50':>20}{'vLLM TTFT p50':>15}{'vLLM/llama':>12}{'failed':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for level in levels:
        llama, vllm = measured["llamacpp"].level(level), measured["vllm"].level(level)
        print(
            f"{level:>4}{llama['output_throughput']:>17.1f}{vllm['output_throughput']:>12.1f}"
            f"{by_level[level]['output_throughput_ratio']:>12.2f}{llama['median_ttft_ms']:>20.0f}"
            f"{vllm['median_ttft_ms']:>15.0f}{by_level[level]['median_ttft_ratio']:>12.2f}"
            f"{llama['failed'] + vllm['failed']:>8}"
        )
    print("(TTFT in ms)")
    for name, engine in measured.items():
        print(
            f"{name:>9}: start {engine.start_s:.1f} s, RSS {engine.rss_idle_bytes / GiB:.2f} GiB idle, "
            f"{engine.rss_loaded_bytes / GiB:.2f} GiB after load"
        )

    package, version = installed_vllm()
    report = {
        "spec": spec.as_dict(),
        "rounds": args.rounds,
        "output_len": args.output_len,
        "seed": args.seed,
        "vllm": f"{package}=={version}",
    }
    write_report(
        args.json,
        "engines",
        report
        | {
            "engines": {name: engine.as_dict() for name, engine in measured.items()},
            "ratios_vllm_over_llamacpp": list(by_level.values()),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
