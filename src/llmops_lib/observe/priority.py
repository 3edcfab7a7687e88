"""Request priority measured: mixed interactive and batch traffic, and what each class waited.

The gateway runs at most `concurrency` requests upstream; the others wait in its queue, interactive
ahead of batch (`gateway/queue.py`). What a user of each class feels is the time to the first token,
which includes that wait. `run_classes` sends several classes of traffic at once through the gateway,
each with its own priority; `latency_by_priority` reads the same from the gateway's side, the
request log, so the two accounts can be compared.

Explained in: book/chapters/03_observability/common_challenges.ipynb
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from llmops_lib.bench.load import LoadResult, run_load
from llmops_lib.bench.traffic import LoadPlan, Workload
from llmops_lib.engines.client import OpenAIClient
from llmops_lib.errors import SpecError
from llmops_lib.facts import PRIORITIES, PRIORITY_HEADER, Outcome, outcome, percentile


def _check_priority(priority: str) -> str:
    if priority not in PRIORITIES:
        raise SpecError(f"unknown priority {priority!r}: use one of {', '.join(PRIORITIES)}")
    return priority


def priority_client(base_url: str, priority: str, *, model: str = "default") -> OpenAIClient:
    """An `OpenAIClient` whose every request carries the gateway's priority header (`facts.PRIORITY_HEADER`)."""
    return OpenAIClient(base_url, model=model, headers={PRIORITY_HEADER: _check_priority(priority)})


@dataclass(frozen=True)
class TrafficClass:
    """One population of users: what they send, how often, and the priority they send it with."""

    name: str
    priority: str
    workload: Workload
    plan: LoadPlan

    def __post_init__(self) -> None:
        _check_priority(self.priority)


def run_classes(base_url: str, classes: Sequence[TrafficClass], *, model: str = "default") -> dict[str, LoadResult]:
    """Send every class's load at the same time to the gateway at `base_url`; results by class name.

    Raises:
        SpecError: two classes share a name, or a class has an unknown priority.
    """
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise SpecError(f"traffic class names must be unique, got {names}")
    clients = [priority_client(base_url, c.priority, model=model) for c in classes]
    try:
        with ThreadPoolExecutor(max_workers=len(classes), thread_name_prefix="class") as pool:
            futures = [
                pool.submit(run_load, client, c.workload, c.plan, progress=False)
                for client, c in zip(clients, classes, strict=True)
            ]
            return {c.name: future.result() for c, future in zip(classes, futures, strict=True)}
    finally:
        for client in clients:
            client.close()


@dataclass(frozen=True)
class ClassLatency:
    """Latency percentiles (ms) of one priority class's answered requests."""

    priority: str
    requests: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


def latency_by_priority(rows: Sequence[Mapping], column: str = "ttft_s") -> dict[str, ClassLatency]:
    """Percentiles of `column` (`ttft_s`: queue wait + prefill; `latency_s`: end to end) per priority,
    over the answered requests the engine served (cache hits never wait), in priority order.

    Raises:
        SpecError: no answered request with that column (nothing to measure).
    """
    groups: dict[str, list[float]] = {}
    for row in rows:
        if outcome(row) == Outcome.OK and not row.get("cache_hit") and row.get(column) is not None:
            groups.setdefault(str(row.get("priority") or "interactive"), []).append(float(row[column]) * 1000)
    if not groups:
        raise SpecError(f"no answered request with {column} in these rows: send traffic through the gateway first")
    order = sorted(groups, key=lambda p: (PRIORITIES.get(p, len(PRIORITIES)), p))
    return {
        p: ClassLatency(
            p, len(groups[p]), percentile(groups[p], 50), percentile(groups[p], 95), sum(groups[p]) / len(groups[p])
        )
        for p in order
    }
