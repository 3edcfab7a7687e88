"""Analysis: measure the canary against the stable deployment and judge each measurement.

A measurement computes one metric over one window for the canary (`result`) and, on the same
window, for the stable deployment (`baseline`): both served the same mix of traffic at the same
time, so a difference is the candidate's. Its phase follows Argo Rollouts: Successful, Failed,
Inconclusive, or Error (it could not be taken). Too few samples is not silently a pass: the
metric's `on_missing` says what it means. An analysis is Failed once a metric has more failed
measurements than its `failure_limit`, Inconclusive once it has more inconclusive ones than its
`inconclusive_limit`, and Successful when every metric with a `count` has taken it.

Sources: the gateway's request log (per-request rows), the gateway's Prometheus /metrics
(counter increases between scrapes), and evaluation functions (the perplexity of the version's
model file on held-out text; `task_score:<task>`, the accuracy of the deployment's engine on a
task, the eval gate of `evals.gate` as a metric). The queries and conditions themselves (their names, the safe
evaluator) are `release.conditions`, shared with the spec that names them.

Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmops_lib.engines.metrics import COMMON_NAMES
from llmops_lib.errors import LLMOpsError
from llmops_lib.evals.gate import score_endpoint
from llmops_lib.facts import fails_canary, percentile, tpot_s
from llmops_lib.observe.request_log import RequestLogReader
from llmops_lib.optimize.perplexity import held_out_perplexity
from llmops_lib.release.conditions import BUILTIN_EVALUATIONS, FEEDBACK_QUERY, TASK_SCORE, holds
from llmops_lib.release.phases import AnalysisPhase

if TYPE_CHECKING:
    from llmops_lib.release.registry import ModelRecord
    from llmops_lib.release.rollout import MetricSpec


def judge(metric: MetricSpec, result: float, baseline: float | None) -> AnalysisPhase:
    """The phase of one measurement, by Argo's rules (failure is checked first)."""
    if metric.failure_condition and holds(metric.failure_condition, result, baseline):
        return AnalysisPhase.FAILED
    if metric.success_condition:
        if holds(metric.success_condition, result, baseline):
            return AnalysisPhase.SUCCESSFUL
        return AnalysisPhase.INCONCLUSIVE if metric.failure_condition else AnalysisPhase.FAILED
    return AnalysisPhase.SUCCESSFUL


# --- what a measurement reads ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One side of the comparison: a gateway deployment and the registry version it serves."""

    deployment: str
    url: str | None
    version: ModelRecord | None


@dataclass(frozen=True)
class Reading:
    """A value and how many samples it rests on (None: no data)."""

    value: float | None
    samples: int


def _served(rows: Sequence[Mapping], deployment: str) -> list[Mapping]:
    """The deployment's requests: those it answered, and those it failed that a fallback answered
    (counted as its failures, not the fallback's)."""
    served = []
    for row in rows:
        if row.get("fallback_from") == deployment and row.get("deployment") != deployment:
            served.append({**row, "error_type": row.get("error_type") or "fell_back"})
        elif row.get("deployment") == deployment:
            served.append(row)
    return served


def _ok(rows: Sequence[Mapping]) -> list[Mapping]:
    return [r for r in rows if not fails_canary(r)]


def _error_rate(rows: Sequence[Mapping]) -> Reading:
    """The canary's notion of failure (`facts.fails_canary`): any status of 400 or more counts."""
    return Reading(sum(map(fails_canary, rows)) / len(rows) if rows else None, len(rows))


def _latency(column: str, q: float) -> Callable[[Sequence[Mapping]], Reading]:
    def read(rows: Sequence[Mapping]) -> Reading:
        values = [r[column] for r in _ok(rows) if r.get(column) is not None]
        return Reading(percentile(values, q) if values else None, len(values))

    return read


def _tpot(rows: Sequence[Mapping]) -> Reading:
    """Mean TPOT (`facts.tpot_s`) over successful requests with 2+ output tokens."""
    values = [
        tpot_s(r["latency_s"], r["ttft_s"], r["gen_ai_usage_output_tokens"])
        for r in _ok(rows)
        if r.get("ttft_s") is not None and (r.get("gen_ai_usage_output_tokens") or 0) > 1
    ]
    return Reading(sum(values) / len(values) if values else None, len(values))


#: how each request-log query of `release.conditions.REQUEST_LOG_QUERIES` is read from the deployment's rows.
READERS: dict[str, Callable[[Sequence[Mapping]], Reading]] = {
    "error_rate": _error_rate,
    "request_count": lambda rows: Reading(float(len(rows)), len(rows)),
    "p50_latency_s": _latency("latency_s", 50),
    "p95_latency_s": _latency("latency_s", 95),
    "p95_ttft_s": _latency("ttft_s", 95),
    "mean_tpot_s": _tpot,
}


def _perplexity(target: Target) -> float:
    """Perplexity of the target version's model file on the shipped held-out text (lower is better)."""
    if target.version is None or target.version.format != "gguf":
        raise LLMOpsError(
            f"deployment {target.deployment!r} has no registered GGUF version to score: register it first"
        )
    return held_out_perplexity(target.version.path, target.version.sha256)


def task_score(task: str) -> Callable[[Target], float]:
    """The accuracy of the target's engine (`Target.url`) on the task's test split with its reference
    prompt (`evals.gate.score_endpoint`; outputs cached by the model file the engine serves)."""

    def evaluate(target: Target) -> float:
        if target.url is None:
            raise LLMOpsError(f"deployment {target.deployment!r} has no engine URL to score on {task!r}")
        return score_endpoint(target.url, task).accuracy

    return evaluate


#: evaluation functions a metric may name (`provider: evaluation`, `release.conditions.BUILTIN_EVALUATIONS`);
#: controllers can add their own.
EVALUATIONS: dict[str, Callable[[Target], float]] = {
    "perplexity": _perplexity,
    **{name: task_score(name.removeprefix(TASK_SCORE)) for name in BUILTIN_EVALUATIONS if name.startswith(TASK_SCORE)},
}


# --- providers -------------------------------------------------------------------------------


class RequestLogProvider:
    """Reads the gateway's request log through its read-only reader (the gateway keeps writing)."""

    def __init__(self, url: str | None) -> None:
        self.reader = RequestLogReader(url)

    def read(self, query: str, targets: Sequence[Target], since: float, until: float) -> list[Reading]:
        """Requests that *finished* in [since, until): a request counts once, when its outcome is known."""
        if query == FEEDBACK_QUERY:
            rows = self.reader.feedback_rows(since, until) if self.reader.exists() else []
            readings = []
            for target in targets:
                scores = [r["score"] for r in rows if r["deployment"] == target.deployment]
                readings.append(Reading(sum(scores) / len(scores) if scores else None, len(scores)))
            return readings
        rows = self.reader.rows(since, until, by="finished_at") if self.reader.exists() else []
        return [READERS[query](_served(rows, t.deployment)) for t in targets]


def _gateway_series(common: str) -> str:
    """The gateway's own series behind a common name of `engines.metrics.COMMON_NAMES`."""
    return next(series for series in COMMON_NAMES[common] if series.startswith("llmops_gateway_"))


_REQUESTS, _E2E_SUM, _E2E_COUNT = map(
    _gateway_series, ("requests_finished_total", "e2e_seconds_sum", "e2e_seconds_count")
)


class PrometheusProvider:
    """Reads the gateway's /metrics and takes counter increases since the previous scrape."""

    def __init__(self, gateway_url: str) -> None:
        self.url = gateway_url.rstrip("/") + "/metrics"
        self._previous: dict[str, float] | None = None

    @property
    def started(self) -> bool:
        """Whether a first scrape opened a window (after a controller restart it has not)."""
        return self._previous is not None

    def _scrape(self) -> dict[str, float]:
        """Per deployment (labels kept, unlike the common names' sums): requests, the canary's
        failures among them (`facts.fails_canary` of the status label), and the e2e histogram's sum and count."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(self.url, timeout=10).text
        except httpx.HTTPError as exc:
            raise LLMOpsError(f"cannot scrape {self.url} ({type(exc).__name__}): is the gateway running?") from None
        keys = {_REQUESTS: "count", _E2E_SUM: "sum", _E2E_COUNT: "n"}
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name not in keys:
                    continue
                deployment = sample.labels.get("deployment", "")
                kinds = [keys[sample.name]]
                if sample.name == _REQUESTS and fails_canary({"http_status": sample.labels.get("status")}):
                    kinds.append("errors")
                for kind in kinds:
                    totals[f"{kind}/{deployment}"] = totals.get(f"{kind}/{deployment}", 0.0) + sample.value
        return totals

    def start(self) -> None:
        self._previous = self._scrape()

    def read(self, query: str, targets: Sequence[Target], since: float, until: float) -> list[Reading]:
        now = self._scrape()
        before, self._previous = self._previous, now
        if before is None:  # first scrape of this process (e.g. after a controller restart): no window yet
            return [Reading(None, 0) for _ in targets]

        def increase(key: str) -> float:
            return now.get(key, 0.0) - before.get(key, 0.0)

        readings = []
        for target in targets:
            count = increase(f"count/{target.deployment}")
            if query == "request_count":
                readings.append(Reading(count, int(count)))
            elif query == "error_rate":
                readings.append(Reading(increase(f"errors/{target.deployment}") / count if count else None, int(count)))
            else:  # mean_latency_s: the e2e histogram's sum over its count (successful requests)
                timed = increase(f"n/{target.deployment}")
                readings.append(Reading(increase(f"sum/{target.deployment}") / timed if timed else None, int(timed)))
        return readings


class EvaluationProvider:
    """Runs an evaluation function on each target (its own samples: 1 when it returned a number)."""

    def __init__(self, evaluations: Mapping[str, Callable[[Target], float]]) -> None:
        self.evaluations = dict(evaluations)

    def read(self, query: str, targets: Sequence[Target], since: float, until: float) -> list[Reading]:
        readings = []
        for target in targets:
            value = self.evaluations[query](target)
            readings.append(Reading(None if value is None else float(value), 0 if value is None else 1))
        return readings


# --- measurements and the analysis outcome ---------------------------------------------------


@dataclass
class Measurement:
    """One measurement as the audit trail keeps it."""

    metric: str
    phase: AnalysisPhase
    started_at: float
    finished_at: float
    value: float | None = None
    baseline: float | None = None
    samples: int = 0
    baseline_samples: int = 0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    metric: MetricSpec, provider: Any, canary: Target, stable: Target, since: float, until: float
) -> Measurement | None:
    """Take one measurement of `metric` over [since, until); None when `on_missing` is `skip` and data is missing."""
    try:
        readings = provider.read(metric.query, [canary, stable] if metric.needs_baseline else [canary], since, until)
    except Exception as exc:  # noqa: BLE001 - any failure to measure is an Error measurement, counted against its limit
        return Measurement(metric.name, AnalysisPhase.ERROR, since, until, message=f"{type(exc).__name__}: {exc}"[:300])
    result = readings[0]
    baseline = readings[1] if len(readings) > 1 else Reading(None, 0)
    measurement = Measurement(
        metric.name, AnalysisPhase.RUNNING, since, until, result.value, baseline.value, result.samples, baseline.samples
    )
    missing = (
        result.value is None
        or result.samples < metric.min_samples
        or (metric.needs_baseline and baseline.value is None)
    )
    if missing:
        if metric.on_missing == "skip":
            return None
        measurement.phase = AnalysisPhase(metric.on_missing.capitalize())  # onMissing names the phase
        measurement.message = f"missing data: {result.samples} canary samples (need {metric.min_samples})" + (
            ", no baseline" if metric.needs_baseline and baseline.value is None else ""
        )
    else:
        measurement.phase = judge(metric, result.value, baseline.value)
    measurement.finished_at = time.time()  # an evaluation can take a while: when the verdict was known
    return measurement


@dataclass
class MetricStatus:
    """Counts per metric, as Argo's AnalysisRun keeps them."""

    measured: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    last_at: float | None = None

    def add(self, measurement: Measurement) -> None:
        self.measured += 1
        self.last_at = measurement.finished_at
        field = {
            AnalysisPhase.SUCCESSFUL: "successful",
            AnalysisPhase.FAILED: "failed",
            AnalysisPhase.INCONCLUSIVE: "inconclusive",
            AnalysisPhase.ERROR: "errors",
        }[measurement.phase]
        setattr(self, field, getattr(self, field) + 1)
        self.consecutive_errors = self.consecutive_errors + 1 if measurement.phase == AnalysisPhase.ERROR else 0


def _taken(status: MetricStatus) -> int:
    return status.measured - status.errors


def outcome(metrics: Sequence[MetricSpec], status: Mapping[str, MetricStatus]) -> tuple[AnalysisPhase, str]:
    """The analysis phase and why: Failed and Inconclusive win over Running; Successful once counts are done."""
    for metric in metrics:
        s = status.get(metric.name, MetricStatus())
        if s.failed > metric.failure_limit:
            return (
                AnalysisPhase.FAILED,
                f"{metric.name}: {s.failed} failed measurements, more than failureLimit {metric.failure_limit}",
            )
        if s.consecutive_errors > metric.consecutive_error_limit:
            return (
                AnalysisPhase.FAILED,
                f"{metric.name}: {s.consecutive_errors} measurements in a row could not be taken",
            )
    for metric in metrics:
        s = status.get(metric.name, MetricStatus())
        if s.inconclusive > metric.inconclusive_limit:
            return (
                AnalysisPhase.INCONCLUSIVE,
                f"{metric.name}: {s.inconclusive} inconclusive measurements, "
                f"more than inconclusiveLimit {metric.inconclusive_limit}",
            )
    # a metric with no count still needs one real measurement: no data is never a pass
    pending = [m.name for m in metrics if _taken(status.get(m.name, MetricStatus())) < (m.count or 1)]
    if pending:
        return AnalysisPhase.RUNNING, f"waiting for {', '.join(pending)}"
    return AnalysisPhase.SUCCESSFUL, "every metric within its limits"
