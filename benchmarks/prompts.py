"""Prompts as artifacts, measured: few-shot vs zero-shot, the A/A control, optimization, alias overhead.

Four parts, on the real models (Gemma 3 270M, a base model, on /v1/completions; SmolLM2-135M-Instruct,
a chat model, on /v1/chat/completions), each on llama-server with one thread:

(a) few-shot vs zero-shot on the capital-city test split through the gateway: two registered versions
    of one prompt, every case sent to both by reference (`"prompt": {"id": "capital/1", ...}`), paired
    exact McNemar on the outputs (and the paired-bootstrap interval of the difference). Claim: p < 0.01
    with >= 50 real outputs per arm.
(b) the A/A control on (a)'s outputs: one version's outcomes split at random into two arms `--aa-runs`
    times, each tested as a live split is (Fisher, alpha 0.05): the false-positive rate, which should be
    about alpha (claim: at most 10 %, the upper end of what 100 runs at 5 % give).
(c) optimization (`prompts.optimize`): instructions × bootstrapped demos chosen on dev, reported once on
    test against the plain question, on both models. Claim: p < 0.05 (McNemar) on each.
(d) what resolving a prompt by reference costs the gateway: `--pairs` one-token requests sent one at a
    time, by reference then as the same rendered raw prompt (order alternating), through the same gateway:
    the median of the per-pair differences (claim <= 0.5 ms); and `--rounds` interleaved closed-loop runs
    at `--concurrency` with and without references: the throughput ratio (claim >= 0.97). Wall-clock
    differences of a shared machine are tens of ms wide, so the gateway's own CPU time per request on
    each path (psutil, alternating blocks) is reported beside them: the resolution's cost itself. The gateway's
    prompt cache is on, as in production (an alias is resolved once, then served from memory until it moves).

Outputs of (a) and (c) go through the evaluation cache (`LLMOPS_HOME/evals/`), so a rerun is fast; the
prompt registry is a temporary one. Prints a table per part and writes JSON (default
benchmarks/results/prompts.json). Exits 0 whatever the claims say: a claim that fails here is a result.

    .venv/bin/python benchmarks/prompts.py --help
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from tqdm.auto import tqdm

from llmops_lib.bench.results import write_report
from llmops_lib.bench.stats import bootstrap
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.evals.run import Endpoint, run_cases
from llmops_lib.evals.tasks import load_task
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.models import model_path
from llmops_lib.prompts.ab import aa_false_positive_rate, compare_paired
from llmops_lib.prompts.optimize import Candidate, Demo, optimize, shown_answer
from llmops_lib.prompts.registry import PromptRegistry

FEW_SHOT_P = 0.01  # (a) few-shot vs zero-shot, paired McNemar, at most
MIN_OUTPUTS = 50  # (a) real outputs per arm, at least
AA_RATE = 0.10  # (b) A/A false-positive rate at alpha 0.05, at most
OPTIMIZED_P = 0.05  # (c) optimized vs baseline on test, at most
ALIAS_MS = 0.5  # (d) median added latency of a request by reference, at most
THROUGHPUT_RATIO = 0.97  # (d) throughput with / without references, at least

ZERO_SHOT = "Q: What is the capital of {{country}}?\nA:"  # the base model's question (text)
CHAT_QUESTION = "What is the capital of {{country}}?"  # the chat model's question
GEMMA_CONFIG = {"model": "gemma", "temperature": 0.0, "max_tokens": 16, "stop": ["\n"]}
SMOL_MAX_TOKENS = 24


def few_shot(shots: int) -> str:
    """The zero-shot question after the first `shots` train cases with their right answers."""
    train = load_task("capitals").split("train")[:shots]
    demos = tuple(Demo(case.id, case.inputs, shown_answer(case)) for case in train)
    return Candidate("", demos).template(ZERO_SHOT, chat=False)


def part_a(gateway_url: str, shots: int) -> dict[str, Any]:
    """(a): both versions by reference through the gateway on the test split; no cache (a reference
    resolves on the server), so every output is a real answer of this run."""
    task = load_task("capitals")
    cases = task.split("test")
    runs = {}
    with Endpoint(gateway_url, model="gemma", max_tokens=16, stop=["\n"]) as gateway:
        for arm, version in (("zero-shot", 1), (f"{shots}-shot", 2)):
            runs[arm] = run_cases(
                task,
                cases,
                lambda case, v=version: {"id": f"capital/{v}", "variables": case.inputs},
                gateway.complete,
                cache=False,
            )
    zero, few = runs.values()
    comparison = compare_paired(zero, few)
    return {"runs": runs, "comparison": comparison}


def part_d(
    gateway_url: str, gateway_pid: int, pairs: int, rounds: int, concurrency: int, output_len: int
) -> dict[str, Any]:
    """(d): by reference vs the same rendered raw prompt, through one gateway, interleaved.

    Besides wall-clock (noisy on a shared machine: the engine's time varies by tens of ms), the
    gateway's own CPU time per request on each path, in alternating blocks of sequential requests:
    the resolution's cost without the engine's noise."""
    variables = {"country": "France"}
    raw = ZERO_SHOT.replace("{{country}}", variables["country"])
    reference = {"id": "overhead@production", "variables": variables}

    def body(by_reference: bool, max_tokens: int) -> dict[str, Any]:
        prompt = reference if by_reference else raw
        return {"model": "gemma", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}

    with httpx.Client(base_url=gateway_url, timeout=120) as client:

        def timed(by_reference: bool) -> float:
            start = time.perf_counter()
            response = client.post("/v1/completions", json=body(by_reference, 1))
            response.raise_for_status()
            return time.perf_counter() - start

        for _ in range(5):  # warm: connections, the engine's prompt cache, the gateway's prompt cache
            timed(True), timed(False)
        differences = []
        for i in tqdm(range(pairs), desc="(d) latency pairs", unit="pair"):
            if i % 2 == 0:
                ref, plain = timed(True), timed(False)
            else:
                plain, ref = timed(False), timed(True)
            differences.append((ref - plain) * 1000)
        cpu = {True: 0.0, False: 0.0}
        block = max(1, pairs // 5)
        for i in tqdm(range(10), desc="(d) CPU blocks", unit="block"):
            by_reference = i % 2 == 0
            before = cpu_seconds(gateway_pid)
            for _ in range(block):
                timed(by_reference)
            cpu[by_reference] += cpu_seconds(gateway_pid) - before
        cpu_ms = {name: cpu[flag] / (5 * block) * 1000 for name, flag in (("reference", True), ("raw", False))}

    def closed_loop(by_reference: bool, requests: int) -> tuple[int, float, int]:
        """`requests` requests, `concurrency` in flight: completion tokens, seconds, failures."""
        counts = {"tokens": 0, "failed": 0}
        lock, todo = threading.Lock(), iter(range(requests))

        def worker() -> None:
            with httpx.Client(base_url=gateway_url, timeout=120) as client:
                while True:
                    with lock:
                        if next(todo, None) is None:
                            return
                    response = client.post(
                        "/v1/completions", json=body(by_reference, output_len) | {"ignore_eos": True}
                    )
                    with lock:
                        if response.status_code == 200:
                            counts["tokens"] += response.json()["usage"]["completion_tokens"]
                        else:
                            counts["failed"] += 1

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return counts["tokens"], time.perf_counter() - start, counts["failed"]

    totals = {name: {"tokens": 0, "seconds": 0.0, "failed": 0, "runs": []} for name in ("reference", "raw")}
    for i in tqdm(range(rounds), desc="(d) throughput rounds", unit="round"):
        order = (True, False) if i % 2 == 0 else (False, True)
        for by_reference in order:
            tokens, seconds, failed = closed_loop(by_reference, 4 * concurrency)
            total = totals["reference" if by_reference else "raw"]
            total["tokens"] += tokens
            total["seconds"] += seconds
            total["failed"] += failed
            total["runs"].append(tokens / seconds)
    throughput = {name: t["tokens"] / t["seconds"] for name, t in totals.items()}
    interval = bootstrap(np.asarray(differences), np.median)
    return {
        "added_ms": statistics.median(differences),
        "quartiles_ms": statistics.quantiles(differences, n=4),
        "pairs": len(differences),
        "interval_ms": [interval.low, interval.high],
        "gateway_cpu_ms": cpu_ms,
        "added_cpu_ms": cpu_ms["reference"] - cpu_ms["raw"],
        "throughput_tok_s": throughput,
        "throughput_ratio": throughput["reference"] / throughput["raw"],
        "runs": {name: t["runs"] for name, t in totals.items()},
        "failed": sum(t["failed"] for t in totals.values()),
    }


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def part_c(gemma_url: str, smol_url: str, smol_task: str, max_candidates: int) -> dict[str, Any]:
    """(c): the optimizer on both models; the chat model's task is `smol_task` (see --smol-task)."""
    results = {}
    with Endpoint(gemma_url, max_tokens=16, stop=["\n"]) as gemma:
        results["gemma3-270m"] = optimize(
            load_task("capitals"),
            gemma,
            question=ZERO_SHOT,
            chat=False,
            instructions=("", "Answer with the name of the city only."),
            shots=(0, 3),
            max_candidates=max_candidates,
        )
    question, max_tokens = SMOL_TASKS[smol_task]
    with Endpoint(smol_url, max_tokens=max_tokens) as smol:
        results["smollm2"] = optimize(
            load_task(smol_task), smol, question=question, chat=True, max_candidates=max_candidates
        )
    return results


#: The chat model's question per task, and the tokens its answer needs.
SMOL_TASKS: dict[str, tuple[str, int]] = {
    "capitals": (CHAT_QUESTION, SMOL_MAX_TOKENS),
    "extraction": ("Text: {{text}}\nGive the person's name, age and city as JSON.", 48),
    "sentiment": ("Review: {{review}}\nIs this review positive or negative?", SMOL_MAX_TOKENS),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'ab' (default: abcd)")
    parser.add_argument("--threads", type=int, default=1, help="threads per engine (default 1)")
    parser.add_argument("--shots", type=int, default=3, help="(a) demonstrations in the few-shot version")
    parser.add_argument("--aa-runs", type=int, default=100, help="(b) A/A splits (at least 20)")
    parser.add_argument("--candidates", type=int, default=8, help="(c) candidates per model (the search budget)")
    parser.add_argument(
        "--smol-task", choices=sorted(SMOL_TASKS), default="extraction", help="(c) the chat model's task"
    )
    parser.add_argument("--pairs", type=int, default=300, help="(d) latency pairs (one-token requests)")
    parser.add_argument("--rounds", type=int, default=6, help="(d) throughput runs per path")
    parser.add_argument("--concurrency", type=int, default=4, help="(d) requests in flight in the throughput runs")
    parser.add_argument("--output-len", type=int, default=16, help="(d) tokens per request in the throughput runs")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/prompts.json"), help="where to write JSON"
    )
    args = parser.parse_args()
    if not args.parts or set(args.parts) - set("abcd"):
        parser.error(f"--parts takes letters of 'abcd', got {args.parts!r}")
    if "b" in args.parts and "a" not in args.parts:
        parser.error("part b (the A/A control) runs on part a's outputs: add 'a' to --parts")
    if min(args.threads, args.shots, args.candidates, args.pairs, args.rounds, args.concurrency) < 1:
        parser.error("--threads, --shots, --candidates, --pairs, --rounds and --concurrency must be at least 1")
    if args.aa_runs < 20 or args.output_len < 1:
        parser.error("--aa-runs must be at least 20 and --output-len at least 1")

    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    claims: dict[str, dict[str, Any]] = {}
    gemma_spec = EngineSpec(model=model_path(), n_ctx=1024, threads=args.threads, parallel=args.concurrency)
    smol_spec = EngineSpec(model=model_path("smollm2"), n_ctx=2048, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp, LlamaServer(gemma_spec) as gemma:
        os.environ["LLMOPS_REGISTRY_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"  # the gateway's too
        registry = PromptRegistry()
        registry.register("capital", ZERO_SHOT, commit_message="zero-shot question", model_config=GEMMA_CONFIG)
        registry.register(
            "capital",
            few_shot(args.shots),
            commit_message=f"{args.shots} train examples first",
            model_config=GEMMA_CONFIG,
        )
        registry.set_alias("capital", "production", 1, why="benchmark")
        # (d)'s prompt gives no sampling defaults: a request by reference is the raw one, field for field
        registry.register(
            "overhead", ZERO_SHOT, commit_message="zero-shot, no defaults", model_config={"model": "gemma"}
        )
        registry.set_alias("overhead", "production", 1, why="benchmark")
        route = Route(model="gemma", deployments=[Deployment(name="gemma", url=gemma.base_url)])
        config = GatewayConfig(
            routes=[route],
            request_log=str(Path(tmp) / "requests.sqlite"),
            cache_size=0,
            concurrency=max(16, args.concurrency),
            context_window=1024,
        )
        with GatewayServer(config) as gateway:
            if "a" in args.parts:
                a = part_a(gateway.base_url, args.shots)
                report["a"] = a_report(a)
                claims["few_shot"] = claim(
                    f"few-shot vs zero-shot: McNemar p < {FEW_SHOT_P}, >= {MIN_OUTPUTS} outputs per arm",
                    a["comparison"].p_value,
                    a["comparison"].p_value < FEW_SHOT_P and a["comparison"].a.n >= MIN_OUTPUTS,
                )
            if "b" in args.parts:
                aa = {arm: aa_false_positive_rate(run.scores, runs=args.aa_runs) for arm, run in a["runs"].items()}
                report["b"] = {
                    arm: {
                        "runs": r.runs,
                        "significant": r.significant,
                        "rate": r.rate,
                        "interval": [r.interval.low, r.interval.high],
                    }
                    for arm, r in aa.items()
                }
                worst = max(r.rate for r in aa.values())
                claims["aa"] = claim(f"A/A false-positive rate <= {AA_RATE} (alpha 0.05)", worst, worst <= AA_RATE)
            if "d" in args.parts:
                d = part_d(gateway.base_url, gateway.pid, args.pairs, args.rounds, args.concurrency, args.output_len)
                report["d"] = d
                claims["alias_latency"] = claim(
                    f"median added latency by reference <= {ALIAS_MS} ms", d["added_ms"], d["added_ms"] <= ALIAS_MS
                )
                claims["alias_throughput"] = claim(
                    f"throughput with / without references >= {THROUGHPUT_RATIO}",
                    d["throughput_ratio"],
                    d["throughput_ratio"] >= THROUGHPUT_RATIO,
                )
        if "c" in args.parts:
            with LlamaServer(smol_spec) as smol:
                results = part_c(gemma.base_url, smol.base_url, args.smol_task, args.candidates)
            report["c"] = {}
            for model, result in results.items():
                report["c"][model] = {
                    "summary": result.summary(),
                    "table": result.table(),
                    "winner": result.winner.template,
                }
                p = result.test.p_value
                better = result.test.b_only > result.test.a_only
                claims[f"optimized_{model}"] = claim(
                    f"{model}: optimized beats baseline on test, McNemar p < {OPTIMIZED_P}",
                    p,
                    better and p < OPTIMIZED_P,
                )

    print_report(report)
    for name, c in claims.items():
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {name}: {c['claim']} (measured {c['value']:.3g})")
    write_report(args.json, "prompts", report | {"claims": claims})
    return 0


def claim(text: str, value: float, passed: bool) -> dict[str, Any]:
    return {"claim": text, "value": value, "passed": bool(passed)}


def a_report(a: dict[str, Any]) -> dict[str, Any]:
    comparison = a["comparison"]
    return {
        "arms": [arm.row() for arm in (comparison.a, comparison.b)],
        "names": list(a["runs"]),
        "zero_only": comparison.a_only,
        "few_only": comparison.b_only,
        "mcnemar_p": comparison.p_value,
        "difference": [comparison.difference.estimate, comparison.difference.low, comparison.difference.high],
    }


def print_report(report: dict[str, Any]) -> None:
    if "a" in report:
        a = report["a"]
        print("(a) few-shot vs zero-shot, capitals test split, by reference through the gateway (Gemma)")
        print(f"{'arm':<12}{'n':>5}{'passed':>8}{'accuracy':>28}{'prompt tok':>12}{'median ms':>11}")
        for name, arm in zip(a["names"], a["arms"], strict=True):
            print(
                f"{name:<12}{arm['n']:>5}{arm['passed']:>8}{arm['accuracy']:>28}{arm['prompt tokens']:>12}"
                f"{arm['median latency (ms)']:>11}"
            )
        low, high = a["difference"][1:]
        print(
            f"discordant: {a['zero_only']} zero-shot only, {a['few_only']} few-shot only; McNemar p = "
            f"{a['mcnemar_p']:.2g}; difference {a['difference'][0]:+.2f} [{low:+.2f}, {high:+.2f}]"
        )
    if "b" in report:
        for arm, b in report["b"].items():
            print(
                f"(b) A/A on the {arm} outputs: {b['significant']}/{b['runs']} significant at 0.05 "
                f"(rate {b['rate']:.3f} [{b['interval'][0]:.3f}, {b['interval'][1]:.3f}])"
            )
    if "c" in report:
        for model, c in report["c"].items():
            s = c["summary"]
            print(f"(c) {model} on {s['task']}: {s['candidates']} candidates, {s['demo_pool']} bootstrapped demos")
            print(f"    {'prompt':<52}{'dev acc':>9}{'prompt tok':>12}")
            for row in c["table"]:
                print(
                    f"    {row['prompt']:<52}{row['dev accuracy']:>9.3f}{row['prompt tokens']:>12.1f} {row['chosen']}"
                )
            print(
                f"    test (n={s['test_n']}): optimized {s['winner_test']:.3f} vs baseline {s['baseline_test']:.3f}; "
                f"discordant {s['winner_only']} vs {s['baseline_only']}; McNemar p = {s['mcnemar_p']:.2g}; "
                f"prompt tokens {s['winner_prompt_tokens']:.0f} vs {s['baseline_prompt_tokens']:.0f}"
            )
    if "d" in report:
        d = report["d"]
        q1, _, q3 = d["quartiles_ms"]
        print(
            f"(d) added latency by reference: median {d['added_ms']:.3f} ms (quartiles {q1:.3f} / {q3:.3f}, "
            f"{d['pairs']} pairs, 95 % interval of the median {d['interval_ms'][0]:.2f} / {d['interval_ms'][1]:.2f}); "
            f"gateway CPU per request {d['gateway_cpu_ms']['reference']:.3f} vs {d['gateway_cpu_ms']['raw']:.3f} ms "
            f"(added {d['added_cpu_ms']:.3f} ms); throughput {d['throughput_tok_s']['reference']:.1f} vs "
            f"{d['throughput_tok_s']['raw']:.1f} tok/s, ratio {d['throughput_ratio']:.3f}; failed {d['failed']}"
        )


if __name__ == "__main__":
    sys.exit(main())
