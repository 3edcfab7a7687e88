"""Speculative decoding on llama-server and in process: speedup, acceptance and identical output per workload.

Targets: on the copy-heavy workloads (editing given code or text), n-gram speculation is at least
2.0x faster with identical greedy output; on free text, the adaptive policy (speculate only where
measured faster) is at least 0.95x plain decoding once it has measured both ways, whatever the
speculation method. Its one speculative try per workload is reported separately (`ratio`): that
cost is bounded, one request per workload and then one in `probe_every`.

Starts four llama-server processes on the default model, one at a time in use:
- plain decoding (the baseline);
- n-gram prompt lookup (`--spec-type`, default ngram-simple): drafts copied from the text so far,
  once with llama.cpp's default lookup and draft lengths (12 and 48 tokens for ngram-simple) and
  once with `--ngram-lookup` and `--draft-max` (default 6 and 64: a sweep on this machine found
  them fastest on both copy-heavy workloads, see the speculative decoding chapter). The targets
  are checked on the second;
- a draft model (`draft-simple`): the model quantized to Q4_0, made once in LLMOPS_HOME/models.
Then the same lookup in this process: llama-cpp-python with and without `LlamaPromptLookupDecoding`
(`--num-pred-tokens` drafted per step), reported beside the server rows (the targets are the server's).

For every workload: decode tokens/s with and without speculation (as the server measures it, up
to --max-tokens tokens or the workload's stop; the median of --repeats alternating runs each, as
the load of a shared machine moves more between two runs than speculation does), their ratio,
the acceptance rate (accepted / drafted tokens) and whether the greedy text is identical in
every run. Then, per method, --requests free-text
requests served plainly and through `AdaptiveSpeculation`, interleaved: their throughput ratio.
Prints a table and writes JSON (default benchmarks/results/speculative.json).

    .venv/bin/python benchmarks/speculative.py --help
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from llmops_lib.bench.results import write_report
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.engines.spec import NGRAM_LOOKUP_TYPES
from llmops_lib.models import default_model
from llmops_lib.optimize.prompt_lookup import PromptLookupEngine
from llmops_lib.optimize.speculative import (
    WORKLOADS,
    AdaptiveServer,
    AdaptiveSpeculation,
    Generation,
    TimedEngine,
    compare,
    draft_model,
    generate,
)

COPY_TARGET, FREE_TARGET = 2.0, 0.95


def throughput(runs: list[Generation]) -> float:
    """Tokens per second of decoding over a set of requests (server-measured)."""
    return sum(r.timings.predicted_n for r in runs) / sum(r.timings.predicted_ms / 1000 for r in runs)


def adaptive_ratio(plain: TimedEngine, speculative: TimedEngine, requests: int, max_tokens: int) -> dict[str, float]:
    """Free-text requests served plainly and through the adaptive policy, interleaved (same load).

    `ratio` counts every request, the policy's first try of speculation included; `steady_ratio`
    the requests after each workload's first two (one plain, one speculative measurement).
    """
    free = [w for w in WORKLOADS.values() if w.kind == "free text"]
    chosen = [free[i % len(free)] for i in range(requests)]
    adaptive = AdaptiveServer(plain, speculative, AdaptiveSpeculation())
    pairs = [(generate(plain, w, max_tokens), adaptive.generate(w, max_tokens)) for w in chosen]
    settled = pairs[2 * len(free) :]
    return {
        "ratio": throughput([a for _, a in pairs]) / throughput([p for p, _ in pairs]),
        "steady_ratio": throughput([a for _, a in settled]) / throughput([p for p, _ in settled]) if settled else None,
        "speculated_requests": sum(a.speculative for _, a in pairs),
        "requests": requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="engine threads")
    parser.add_argument("--max-tokens", type=int, default=160, help="tokens generated per request")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per workload and side (median kept)")
    parser.add_argument(
        "--requests", type=int, default=8, help="free-text requests for the adaptive comparison (at least 5)"
    )
    parser.add_argument(
        "--spec-type",
        default="ngram-simple",
        choices=NGRAM_LOOKUP_TYPES,
        help="n-gram speculation type of llama-server",
    )
    parser.add_argument("--ngram-lookup", type=int, default=6, help="tokens the n-gram drafter matches before drafting")
    parser.add_argument("--draft-max", type=int, default=64, help="most tokens the n-gram drafter drafts per step")
    parser.add_argument("--no-draft-model", action="store_true", help="skip draft-model speculation")
    parser.add_argument(
        "--num-pred-tokens", type=int, default=10, help="tokens drafted per step by in-process prompt lookup"
    )
    parser.add_argument("--no-in-process", action="store_true", help="skip in-process prompt lookup (llama-cpp-python)")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/speculative.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    if (
        args.max_tokens < 8
        or args.requests < 5
        or min(args.repeats, args.num_pred_tokens, args.ngram_lookup, args.draft_max) < 1
    ):
        parser.error(
            "--max-tokens must be at least 8, --requests at least 5, --repeats, --num-pred-tokens, "
            "--ngram-lookup and --draft-max at least 1"
        )

    base = EngineSpec(model=default_model(), n_ctx=1024, threads=args.threads)
    tuned = f"{args.spec_type} {args.ngram_lookup}/{args.draft_max}"
    methods = {
        f"{args.spec_type} defaults": {"spec_type": args.spec_type},
        tuned: {"spec_type": args.spec_type, "ngram_lookup": args.ngram_lookup, "draft_max": args.draft_max},
    }
    if not args.no_draft_model:
        methods["draft-simple (Q4_0)"] = {"draft_model": draft_model("Q4_0"), "draft_max": 8}
    rows, adaptive = [], {}

    def measure(method: str, plain: TimedEngine, speculative: TimedEngine) -> None:
        print(f"measuring {method} …", file=sys.stderr)
        compared = compare(
            plain, speculative, list(WORKLOADS.values()), max_tokens=args.max_tokens, repeats=args.repeats
        )
        rows.extend({"method": method} | r.as_dict() for r in compared)
        adaptive[method] = adaptive_ratio(plain, speculative, args.requests, args.max_tokens)

    with LlamaServer(base) as plain:
        for method, options in methods.items():
            with LlamaServer(replace(base, **options)) as speculative:
                measure(method, plain, speculative)
    if not args.no_in_process:
        with (
            PromptLookupEngine(base, num_pred_tokens=0) as plain,
            PromptLookupEngine(base, num_pred_tokens=args.num_pred_tokens) as lookup,
        ):
            measure("in-process lookup", plain, lookup)

    header = (
        f"{'method':<24}{'workload':<11}{'kind':<12}{'plain tok/s':>12}"
        f"{'spec tok/s':>11}{'speedup':>9}{'accept':>8}{'same text':>10}"
    )
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(
            f"{r['method']:<24}{r['workload']:<11}{r['kind']:<12}{r['plain_tokens_per_s']:>12.1f}{r['speculative_tokens_per_s']:>11.1f}"
            f"{r['speedup']:>8.2f}x{r['acceptance_rate']:>8.0%}{'yes' if r['identical'] else 'NO':>10}"
        )
    print("(n-gram methods: type, then lookup/draft tokens; 'defaults': llama.cpp's)")
    print("\nadaptive policy on free text (throughput vs plain decoding):")
    for method, a in adaptive.items():
        print(
            f"  {method:<24}{a['steady_ratio']:.2f}x after measuring both ways, {a['ratio']:.2f}x counting its tries "
            f"({a['speculated_requests']} of {a['requests']} requests speculated)"
        )

    copy = [r for r in rows if r["method"] == tuned and r["kind"] == "copy-heavy"]
    verdict = {
        f"copy-heavy speedup >= {COPY_TARGET}x ({tuned})": min(r["speedup"] for r in copy) >= COPY_TARGET,
        "copy-heavy greedy output identical": all(r["identical"] for r in rows if r["kind"] == "copy-heavy"),
        f"free text >= {FREE_TARGET}x with the adaptive policy": all(
            a["steady_ratio"] >= FREE_TARGET for a in adaptive.values()
        ),
    }
    print("\n" + "\n".join(f"{'met' if ok else 'NOT met'}: {claim}" for claim, ok in verdict.items()))
    write_report(
        args.json,
        "speculative",
        {
            "spec": base.as_dict(),
            "max_tokens": args.max_tokens,
            "repeats": args.repeats,
            "ngram": {"spec_type": args.spec_type, "lookup": args.ngram_lookup, "draft_max": args.draft_max},
            "num_pred_tokens": None if args.no_in_process else args.num_pred_tokens,
            "results": rows,
            "adaptive": adaptive,
            "targets": verdict,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
