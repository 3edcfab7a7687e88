"""Where the time of one request goes: queue, prefill, decode and everything else, end to end.

The gateway's request log has the request's whole latency and its wait for an upstream slot
(`latency_s`, `queue_s`); llama-server's answer carries its own `timings` of prompt processing
(prefill) and generation (decode). What remains of the latency is spent outside the engine's timed
work: the gateway, the HTTP hops, tokenizing and building the answer (`other_ms`). The four
segments add up to the latency, so the longest one is where shortening a request must start.

Explained in: book/chapters/03_observability/common_challenges.ipynb
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import httpx

from llmops_lib.engines.llamacpp import ServerTimings
from llmops_lib.errors import LLMOpsError, SpecError

#: The segments in the order a request passes them (`other` is spread over its whole path).
SEGMENTS = ("queue", "prefill", "decode", "other")


@dataclass(frozen=True)
class CriticalPath:
    """One request's latency (or a mean of several), split into segments in milliseconds."""

    queue_ms: float
    prefill_ms: float
    decode_ms: float
    other_ms: float

    @property
    def total_ms(self) -> float:
        return self.queue_ms + self.prefill_ms + self.decode_ms + self.other_ms

    def segments(self) -> dict[str, float]:
        """Segment name (`SEGMENTS`) -> milliseconds."""
        return {name: getattr(self, f"{name}_ms") for name in SEGMENTS}

    @property
    def dominant(self) -> str:
        """The segment that took the longest."""
        segments = self.segments()
        return max(segments, key=segments.__getitem__)


def critical_path(row: Mapping[str, object], timings: ServerTimings) -> CriticalPath:
    """Split the request of a request-log `row` with the engine's `timings` of the same request.

    Raises:
        SpecError: the row is not of an answered request with a logged queue wait (a cache hit, a
            refusal, or a log written before the gateway recorded `queue_s`).
    """
    latency_s, queue_s = row.get("latency_s"), row.get("queue_s")
    if not isinstance(latency_s, int | float) or not isinstance(queue_s, int | float):
        raise SpecError(
            f"request {row.get('request_id')!r} has no latency_s and queue_s in the log: "
            "split only requests the gateway sent upstream and answered"
        )
    queue_ms = queue_s * 1000
    engine_ms = timings.prompt_ms + timings.predicted_ms
    return CriticalPath(queue_ms, timings.prompt_ms, timings.predicted_ms, latency_s * 1000 - queue_ms - engine_ms)


def mean_path(paths: Sequence[CriticalPath]) -> CriticalPath:
    """The mean of each segment: means add up, so the mean path's total is the mean latency."""
    if not paths:
        raise SpecError("no requests to average: send some through the gateway first")
    return CriticalPath(*(sum(getattr(p, f.name) for p in paths) / len(paths) for f in fields(CriticalPath)))


def send_timed(http: httpx.Client, body: Mapping[str, object]) -> tuple[str, ServerTimings]:
    """POST a non-streamed completion `body` to a gateway in front of llama-server; returns the
    request id the gateway logged it under and the engine's timings passed through in the answer.

    Raises:
        LLMOpsError: the request failed, or the answer has no `timings` (an engine other than
            llama-server, or a cache hit: send with the gateway's cache off).
    """
    response = http.post("/v1/completions", json=dict(body))
    if response.status_code != 200:
        raise LLMOpsError(f"the gateway answered {response.status_code}: {response.text[:300]}")
    timings = response.json().get("timings")
    if not timings:
        raise LLMOpsError(
            "the answer carries no engine timings: route to llama-server and turn the gateway's cache off"
        )
    return response.headers["x-request-id"], ServerTimings.of(timings)


def paths_of(rows: Iterable[Mapping[str, object]], timings: Mapping[str, ServerTimings]) -> list[CriticalPath]:
    """The critical path of each logged request that `timings` (request id -> engine timings) has."""
    return [critical_path(row, timings[str(row["request_id"])]) for row in rows if row["request_id"] in timings]
