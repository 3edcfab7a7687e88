"""Engine baseline: llama.cpp in-process vs over HTTP, against this machine's roofline.

Runs the default model through three paths in one run, on the same prompts:

- `in-process`: llama-cpp-python inside this process (the bare engine);
- `llama-server`: llama.cpp's own server over HTTP (our serving default);
- `llama-cpp-python-server`: llama-cpp-python's server over HTTP (measured to justify the choice).

For each: prompt-processing and generation tokens/s (medians over repeats, streamed and timed by
the client in the same way), their ratio to the in-process engine, and generation as a fraction
of the memory-bandwidth roofline (read bandwidth measured now / weight bytes read per token).
Prints a table and writes JSON (default benchmarks/results/engine_baseline.json).

    .venv/bin/python benchmarks/engine_baseline.py --help
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from llmops_lib.bench import bytes_read_per_token, measure_read_bandwidth, roofline_tokens_per_s
from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec, InProcessEngine, LlamaCppPythonServer, LlamaServer
from llmops_lib.models import default_model, inspect_gguf

PATHS = {"in-process": InProcessEngine, "llama-server": LlamaServer, "llama-cpp-python-server": LlamaCppPythonServer}
# A prompt long enough (~250 tokens) that prompt processing is measured, not the request overhead.
PROMPT = (
    "Operating a language model in production means watching latency, memory, quality and cost at the "
    "same time, because a change that improves one of them often degrades another. "
) * 8 + "In summary,"


def measure(path: str, spec: EngineSpec, repeats: int, max_tokens: int, prompt_tokens: int) -> dict[str, float]:
    """Medians over `repeats` cold requests (a distinct first token defeats prefix caching)."""
    with PATHS[path](spec) as engine:
        engine.complete("Warm up.", max_tokens=4)
        runs = [engine.complete(f"[{i}] {PROMPT}", max_tokens=max_tokens, ignore_eos=True) for i in range(repeats)]
    return {
        "prompt_tokens": prompt_tokens,
        # llama-cpp-python's server reports no usage when streaming: count with the model's tokenizer.
        "prompt_tokens_per_s": statistics.median(prompt_tokens / r.ttft_s for r in runs),
        "generation_tokens_per_s": statistics.median(r.generation_tokens_per_s for r in runs),
        "ttft_ms": statistics.median(r.ttft_s * 1000 for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="engine threads (default: all cores; run on a quiet machine)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="requests per path; medians are reported")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="which paths to measure")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/engine_baseline.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.max_tokens < 2:
        parser.error("--repeats must be at least 1 and --max-tokens at least 2")

    info = inspect_gguf(default_model())
    spec = EngineSpec(model=info.path, n_ctx=1024, threads=args.threads)
    bandwidth = measure_read_bandwidth(threads=args.threads)
    roofline = roofline_tokens_per_s(info, bandwidth)
    with InProcessEngine(spec) as tokenizer:
        prompt_tokens = len(tokenizer.tokenize(f"[0] {PROMPT}"))
    results = {}
    for path in args.paths:
        print(f"measuring {path} …", file=sys.stderr)
        results[path] = measure(path, spec, args.repeats, args.max_tokens, prompt_tokens)
    base = results.get("in-process")
    for row in results.values():
        row["generation_vs_in_process"] = (
            row["generation_tokens_per_s"] / base["generation_tokens_per_s"] if base else None
        )
        row["prompt_vs_in_process"] = row["prompt_tokens_per_s"] / base["prompt_tokens_per_s"] if base else None
        row["generation_vs_roofline"] = row["generation_tokens_per_s"] / roofline

    header = (
        f"{'path':<25}{'prompt tok/s':>13}{'gen tok/s':>11}{'TTFT ms':>9}{'prompt ×':>10}{'gen ×':>8}{'% roofline':>12}"
    )
    print(header)
    print("-" * len(header))
    for path, row in results.items():

        def ratio(key: str, row: dict = row) -> str:
            return f"{row[key]:.2f}" if row[key] is not None else "-"

        print(
            f"{path:<25}{row['prompt_tokens_per_s']:>13.0f}{row['generation_tokens_per_s']:>11.1f}{row['ttft_ms']:>9.0f}"
            f"{ratio('prompt_vs_in_process'):>10}{ratio('generation_vs_in_process'):>8}{row['generation_vs_roofline']:>11.0%}"
        )
    print(
        f"roofline: {bandwidth / 1e9:.1f} GB/s read bandwidth ({args.threads} thread(s)) / "
        f"{bytes_read_per_token(info) / 1e6:.0f} MB per token = {roofline:.0f} tokens/s"
    )
    write_report(
        args.json,
        "engine_baseline",
        {
            "model": info.summary(),
            "spec": spec.as_dict(),
            "repeats": args.repeats,
            "max_tokens": args.max_tokens,
            "read_bandwidth_bytes_per_s": bandwidth,
            "bytes_read_per_token": bytes_read_per_token(info),
            "roofline_tokens_per_s": roofline,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
