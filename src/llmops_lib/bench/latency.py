"""Latency summaries of completed requests, named as vLLM's `bench serve` names them.

Explained in: book/chapters/01_mlops_to_llmops (measuring TTFT and tokens/s).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from llmops_lib.engines.base import Completion, Engine


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation, as numpy's default does."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles in milliseconds and token throughput over a set of completions."""

    completed: int
    duration_s: float
    mean_ttft_ms: float
    p50_ttft_ms: float
    p95_ttft_ms: float
    mean_tpot_ms: float
    p50_e2el_ms: float
    p95_e2el_ms: float
    p99_e2el_ms: float
    output_tokens: int
    output_throughput: float
    """Output tokens per second of wall-clock time over the whole run."""

    @classmethod
    def of(cls, completions: Sequence[Completion], duration_s: float) -> LatencySummary:
        if not completions:
            raise ValueError("no completed requests to summarize")
        ttft = [c.ttft_s * 1000 for c in completions]
        e2el = [c.latency_s * 1000 for c in completions]
        tpot = [c.tpot_s * 1000 for c in completions if c.completion_tokens > 1]
        tokens = sum(c.completion_tokens for c in completions)
        return cls(
            completed=len(completions),
            duration_s=duration_s,
            mean_ttft_ms=sum(ttft) / len(ttft),
            p50_ttft_ms=percentile(ttft, 50),
            p95_ttft_ms=percentile(ttft, 95),
            mean_tpot_ms=sum(tpot) / len(tpot) if tpot else 0.0,
            p50_e2el_ms=percentile(e2el, 50),
            p95_e2el_ms=percentile(e2el, 95),
            p99_e2el_ms=percentile(e2el, 99),
            output_tokens=tokens,
            output_throughput=tokens / duration_s if duration_s > 0 else 0.0,
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def run_sequential(
    engine: Engine,
    prompts: Sequence[str],
    *,
    requests: int,
    max_tokens: int,
    ignore_eos: bool = False,
    progress: bool = True,
) -> tuple[list[Completion], LatencySummary]:
    """Send `requests` greedy completions one after another, cycling through `prompts`."""
    if requests < 1:
        raise ValueError(f"requests must be at least 1, got {requests}")
    completions = []
    start = time.perf_counter()
    for i in tqdm(range(requests), desc=f"{engine.name} requests", disable=not progress):
        completions.append(engine.complete(prompts[i % len(prompts)], max_tokens=max_tokens, ignore_eos=ignore_eos))
    return completions, LatencySummary.of(completions, time.perf_counter() - start)
