"""Prefix caching and KV-cache memory on llama-server, measured in one run.

Target: the time to first token (TTFT) of a question after a repeated 1,000+-token prefix is at
least 5x lower when llama-server serves the prefix from its prompt cache than when it computes it.

1. Prefix caching: the same ~1,100-token operations log, then several questions. Cold requests
   start with a distinct line (nothing cached matches); warm requests repeat the plain prefix.
   Reports median TTFT cold and warm, their ratio, and the prompt tokens the server took from
   its cache (its own `timings.cache_n`).
2. KV-cache memory: for each context size and cache type, the bytes `kv_cache_size` calculates
   from the GGUF metadata (sliding-window layers keep only their window), the full-context bound
   (`kv_cache_bytes`), and the KV buffer llama.cpp reports allocating (its log).
Prints tables and writes JSON (default benchmarks/results/prefix_cache.json).

    .venv/bin/python benchmarks/prefix_cache.py --help
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.models import default_model, inspect_gguf
from llmops_lib.optimize import kv_cache_bytes
from llmops_lib.optimize.kv_cache import PREFIX_QUESTIONS, kv_cache_for, logged_kv_cache_bytes, measure_prefix_cache

TTFT_TARGET = 5.0
MIB = 2**20


def kv_rows(model: Path, contexts: list[int], cache_types: list[str], threads: int) -> list[dict[str, object]]:
    """Calculated vs llama.cpp-reported KV bytes, one server start per (context, type)."""
    info = inspect_gguf(model)
    rows = []
    for cache_type in cache_types:
        for n_ctx in contexts:
            spec = EngineSpec(
                model=model,
                n_ctx=n_ctx,
                threads=threads,
                cache_type_k=cache_type,
                cache_type_v=cache_type,
                flash_attn=cache_type != "f16",
                extra_args=("--log-verbosity", "4"),
            )
            with LlamaServer(spec) as server:
                logged = logged_kv_cache_bytes(server.log_path.read_text())
            rows.append(
                {
                    "n_ctx": n_ctx,
                    "cache_type": cache_type,
                    "calculated_bytes": kv_cache_for(spec).total_bytes,
                    "full_bound_bytes": kv_cache_bytes(info, n_ctx, cache_type_k=cache_type, cache_type_v=cache_type),
                    "llama_cpp_bytes": logged,
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="engine threads")
    parser.add_argument(
        "--questions",
        type=int,
        default=len(PREFIX_QUESTIONS),
        choices=range(1, len(PREFIX_QUESTIONS) + 1),
        help="questions asked after the shared prefix",
    )
    parser.add_argument(
        "--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 32768], help="context sizes for the KV table"
    )
    parser.add_argument("--cache-types", nargs="+", default=["f16", "q8_0"], help="KV-cache types for the KV table")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/prefix_cache.json"), help="where to write JSON"
    )
    args = parser.parse_args()

    model = default_model()
    print("measuring prefix caching …", file=sys.stderr)
    with LlamaServer(EngineSpec(model=model, n_ctx=2048, threads=args.threads)) as server:
        server.complete("Warm up.", max_tokens=4)
        runs = measure_prefix_cache(server, PREFIX_QUESTIONS[: args.questions])
    cold = statistics.median(r.cold_ttft_s for r in runs)
    warm = statistics.median(r.warm_ttft_s for r in runs)
    print(f"{'question':<58}{'prompt tok':>11}{'cached':>8}{'cold ms':>9}{'warm ms':>9}{'ratio':>8}")
    for r in runs:
        print(
            f"{r.question.splitlines()[0][:56]:<58}{r.prompt_tokens:>11}{r.warm_cached_tokens:>8}"
            f"{r.cold_ttft_s * 1000:>9.0f}{r.warm_ttft_s * 1000:>9.0f}{r.ttft_ratio:>7.1f}x"
        )
    print(
        f"median TTFT cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms: {cold / warm:.1f}x lower "
        f"({'met' if cold / warm >= TTFT_TARGET else 'NOT met'}: >= {TTFT_TARGET}x)"
    )

    print("measuring KV-cache allocations …", file=sys.stderr)
    kv = kv_rows(model, args.contexts, args.cache_types, args.threads)
    print(f"\n{'n_ctx':>7}{'type':>6}{'calculated MiB':>16}{'llama.cpp MiB':>15}{'full bound MiB':>16}")
    for row in kv:
        print(
            f"{row['n_ctx']:>7}{row['cache_type']:>6}{row['calculated_bytes'] / MIB:>16.2f}"
            f"{row['llama_cpp_bytes'] / MIB:>15.2f}{row['full_bound_bytes'] / MIB:>16.2f}"
        )

    write_report(
        args.json,
        "prefix_cache",
        {
            "prefix_cache": {
                "runs": [asdict(r) | {"ttft_ratio": r.ttft_ratio} for r in runs],
                "median_cold_ttft_s": cold,
                "median_warm_ttft_s": warm,
                "ratio": cold / warm,
                "target_met": cold / warm >= TTFT_TARGET,
            },
            "kv_cache": kv,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
