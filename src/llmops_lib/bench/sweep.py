"""A concurrency sweep: one running server, the same seeded workload at each level, closed loop.

At concurrency c, c requests are in flight and a new one leaves as soon as one finishes
(`run_load`). Around each level the server's Prometheus counters can be read, a second account of
the same tokens that does not go through the client. The batching chapter, `benchmarks/serving.py`
and `bench.engine_compare` all measure serving this way, so it lives here once.

Explained in: book/chapters/02_optimization/batching.ipynb
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmops_lib.bench.latency import ServingMetrics
from llmops_lib.bench.load import LoadResult, run_load
from llmops_lib.bench.prometheus import GENERATION_SECONDS, OUTPUT_TOKENS, scrape
from llmops_lib.bench.traffic import LoadPlan, Workload
from llmops_lib.errors import EngineError, SpecError
from llmops_lib.facts import percentile

if TYPE_CHECKING:
    from llmops_lib.engines.server import ServerEngine


@dataclass(frozen=True)
class Level:
    """One concurrency level: what the client measured and, if read, how the server's counters grew."""

    concurrency: int
    load: LoadResult
    counters: dict[str, float] | None = None
    """Increase of each counter (common names) over the level; None when they were not read."""
    window_s: float | None = None
    """Seconds between the two readings of the counters."""

    @property
    def metrics(self) -> ServingMetrics:
        return self.load.metrics

    @property
    def requests(self) -> int:
        """Requests sent at this level (completed and failed): the sample behind every percentile."""
        return self.metrics.completed + self.metrics.failed

    def percentile_ms(self, metric: str, q: float) -> float:
        """The q-th percentile of `ttft`, `tpot` or `e2el` over this level's completed requests, in ms
        (`bench.stats.tail_percentile` says which q their number supports)."""
        completions = self.load.completions
        values = {
            "ttft": [c.ttft_s for c in completions],
            "tpot": [c.tpot_s for c in completions if c.completion_tokens > 1],
            "e2el": [c.latency_s for c in completions],
        }
        if metric not in values:
            raise SpecError(f"unknown metric {metric!r}; use one of {', '.join(values)}")
        return percentile(values[metric], q) * 1000

    def increase(self, name: str) -> float:
        """How much the server's counter `name` grew over the level (EngineError if it was not read)."""
        if self.counters is None or name not in self.counters:
            raise EngineError(
                f"no server counter {name} was read at concurrency {self.concurrency}: sweep with counters=True"
            )
        return self.counters[name]

    @property
    def client_generation_s(self) -> float:
        """Time spent generating after the first token, summed over the client's streams (E2EL − TTFT)."""
        return sum(c.latency_s - c.ttft_s for c in self.load.completions)

    def as_dict(self) -> dict[str, object]:
        """`ServingMetrics.as_dict()` plus the level, its errors and, when read, the server's account."""
        row = self.metrics.as_dict() | {"concurrency": self.concurrency, "errors": dict(self.load.errors)}
        if self.counters is not None and self.window_s:
            row |= {
                "server_output_tokens": self.counters.get(OUTPUT_TOKENS),
                "server_output_throughput": self.counters[OUTPUT_TOKENS] / self.window_s
                if OUTPUT_TOKENS in self.counters
                else None,
                "client_generation_s": self.client_generation_s,
                "server_generation_s": self.counters.get(GENERATION_SECONDS),
            }
        return row


def requests_at(concurrency: int, *, rounds: int, min_requests: int = 0) -> int:
    """Requests sent at a level: `rounds` per slot, and at least `min_requests` (for its percentiles)."""
    return max(rounds * concurrency, min_requests)


def sweep_concurrency(
    server: ServerEngine,
    workload: Workload,
    levels: Sequence[int],
    *,
    rounds: int = 2,
    min_requests: int = 0,
    counters: bool = True,
    warm_up: bool = True,
    progress: bool = False,
) -> list[Level]:
    """Load a running server at each concurrency in `levels` (ascending), one level after another.

    Args:
        server: a started server (`LlamaServer`, `VLLMEngine`, any `ServerEngine`) with at least
            `max(levels)` slots, or requests queue and the level measures the queue.
        workload: what to send (the same seeded requests at every level).
        rounds, min_requests: each level sends `requests_at(c, rounds=…, min_requests=…)` requests.
        counters: read the server's `/metrics` around each level (`Level.counters`).
        warm_up: send one short request first: a fresh server's first request pays for page faults.
        progress: a progress bar per level.
    """
    if not levels or min(levels) < 1 or rounds < 1 or min_requests < 0:
        raise SpecError(
            f"levels and rounds must be at least 1 and min_requests >= 0, got {levels}, {rounds}, {min_requests}"
        )
    if warm_up:
        server.complete("Warm up.", max_tokens=4)
    measured = []
    for concurrency in sorted(levels):
        plan = LoadPlan(
            concurrency=concurrency, num_requests=requests_at(concurrency, rounds=rounds, min_requests=min_requests)
        )
        before = scrape(server.client) if counters else None
        load = run_load(server.client, workload, plan, progress=progress)
        if before is None:
            measured.append(Level(concurrency, load))
            continue
        after = scrape(server.client)
        grown = {name: after.samples[name] - value for name, value in before.samples.items() if name in after.samples}
        measured.append(Level(concurrency, load, grown, after.at_s - before.at_s))
    return measured
