"""What every layer agrees on about one request, defined once.

The gateway writes these facts, the load generator measures them, the dashboards and the release
analysis read them; each defines nothing of its own. This module imports nothing from the library,
so any layer may use it.

- Priority: the header a client sets and the classes the gateway's queue orders by.
- TPOT: vLLM `bench serve`'s time per output token, (E2EL − TTFT) / (output tokens − 1).
- Outcome: what became of a request as an operator alerts on it (ok, client error, rejected, server
  error). The canary analysis has a different, stricter notion, `fails_canary`: any status of 400 or
  more counts against a candidate, because a candidate that provokes 429s or upstream 4xx is worse
  than stable even when the caller's request was at fault.
- Percentiles: numpy's linear interpolation, the one definition behind every p50/p95/p99 printed.

Explained in: book/chapters/02_optimization/batching (serving metrics) and
book/chapters/03_observability/monitoring (outcomes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

import numpy as np

#: The header the gateway reads a request's priority from (the body field "priority" works too).
PRIORITY_HEADER = "x-llmops-priority"
#: Priority classes, lower runs first.
PRIORITIES = {"interactive": 0, "batch": 1}


class Outcome(StrEnum):
    """What became of a request, as alerting cares."""

    OK = "ok"
    CLIENT_ERROR = "client_error"  # 4xx other than 429: the caller's request was wrong
    REJECTED = "rejected"  # 429: the queue was full
    SERVER_ERROR = "server_error"  # 5xx, or an error after the response had started


def outcome(row: Mapping) -> Outcome:
    """The outcome of a request-log row (`http_status`, `error_type`)."""
    status = int(row.get("http_status") or 0)
    if status == 429:
        return Outcome.REJECTED
    if 400 <= status < 500:
        return Outcome.CLIENT_ERROR
    if status >= 500 or row.get("error_type"):
        return Outcome.SERVER_ERROR
    return Outcome.OK


def fails_canary(row: Mapping) -> bool:
    """Whether a request counts against the deployment that served it in a canary analysis: any
    status of 400 or more, or an error recorded after the response started."""
    return int(row.get("http_status") or 0) >= 400 or bool(row.get("error_type"))


def tpot_s(latency_s: float, ttft_s: float, output_tokens: int) -> float:
    """Mean time per output token after the first; 0 when fewer than two tokens came (as vLLM)."""
    if output_tokens < 2:
        return 0.0
    return (latency_s - ttft_s) / (output_tokens - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation (numpy's default)."""
    if len(values) == 0:
        raise ValueError("percentile of no values: measure at least one request first")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    return float(np.percentile(np.asarray(values, dtype=float), q))
