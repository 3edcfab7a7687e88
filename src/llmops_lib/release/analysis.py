"""Analysis: measure the canary against the stable deployment and judge each measurement.

A measurement computes one metric over one window for the canary (`result`) and, on the same
window, for the stable deployment (`baseline`): both served the same mix of traffic at the same
time, so a difference is the candidate's. Its phase follows Argo Rollouts: Successful, Failed,
Inconclusive, or Error (it could not be taken). Too few samples is not silently a pass: the
metric's `on_missing` says what it means. An analysis is Failed once a metric has more failed
measurements than its `failure_limit`, Inconclusive once it has more inconclusive ones than its
`inconclusive_limit`, and Successful when every metric with a `count` has taken it.

Sources: the gateway's request log (per-request rows), the gateway's Prometheus /metrics
(counter increases between scrapes), and evaluation functions (e.g. the perplexity of the version's
model file on held-out text).

Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmops_lib.bench.latency import percentile
from llmops_lib.errors import LLMOpsError, SpecError

if TYPE_CHECKING:
    from llmops_lib.release.registry import ModelRecord
    from llmops_lib.release.rollout import MetricSpec

SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR, RUNNING = "Successful", "Failed", "Inconclusive", "Error", "Running"


# --- conditions --------------------------------------------------------------------------------

_NAMES = ("result", "baseline")
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node: ast.AST, names: Mapping[str, float]) -> Any:
    """A tiny, safe evaluator: numbers, `result`, `baseline`, + - * /, comparisons, and/or/not, abs()."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_evaluate(node.left, names), _evaluate(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        value = _evaluate(node.operand, names)
        return -value if isinstance(node.op, ast.USub) else not value
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, names) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _evaluate(node.left, names)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, names)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "abs"
        and len(node.args) == 1
        and not node.keywords
    ):
        return abs(_evaluate(node.args[0], names))
    raise SpecError(
        f"{ast.unparse(node)!r} is not allowed in a condition: use numbers, result, baseline, + - * /, comparisons, and/or/not, abs()"
    )


def check_condition(text: str, what: str) -> ast.Expression:
    """Parse and dry-run a condition so a typo fails when the spec is built, not mid-rollout."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{what} must be an expression such as 'result <= 0.01', got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise SpecError(f"{what} {text!r} is not a valid expression (example: 'result <= baseline * 1.05')") from None
    try:
        _evaluate(tree, {"result": 1.0, "baseline": 1.0})
    except SpecError as exc:
        raise SpecError(f"{what}: {exc}") from None
    return tree


def holds(text: str, result: float, baseline: float | None) -> bool:
    """Whether condition `text` holds for these values (`baseline` may be None if it is not used)."""
    return bool(
        _evaluate(
            check_condition(text, "condition"),
            {"result": result, "baseline": baseline if baseline is not None else math.nan},
        )
    )


def judge(metric: MetricSpec, result: float, baseline: float | None) -> str:
    """The phase of one measurement, by Argo's rules (failure is checked first)."""
    if metric.failure_condition and holds(metric.failure_condition, result, baseline):
        return FAILED
    if metric.success_condition:
        if holds(metric.success_condition, result, baseline):
            return SUCCESSFUL
        return INCONCLUSIVE if metric.failure_condition else FAILED
    return SUCCESSFUL


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


def _is_error(row: Mapping) -> bool:
    return int(row.get("http_status") or 0) >= 400 or bool(row.get("error_type"))


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
    return [r for r in rows if not _is_error(r)]


def _error_rate(rows: Sequence[Mapping]) -> Reading:
    return Reading(sum(map(_is_error, rows)) / len(rows) if rows else None, len(rows))


def _latency(column: str, q: float) -> Callable[[Sequence[Mapping]], Reading]:
    def read(rows: Sequence[Mapping]) -> Reading:
        values = [r[column] for r in _ok(rows) if r.get(column) is not None]
        return Reading(percentile(values, q) if values else None, len(values))

    return read


def _tpot(rows: Sequence[Mapping]) -> Reading:
    """Mean time per output token after the first (vLLM's TPOT) over requests with 2+ tokens."""
    values = [
        (r["latency_s"] - r["ttft_s"]) / (r["gen_ai_usage_output_tokens"] - 1)
        for r in _ok(rows)
        if r.get("ttft_s") is not None and (r.get("gen_ai_usage_output_tokens") or 0) > 1
    ]
    return Reading(sum(values) / len(values) if values else None, len(values))


#: request-log queries: a function of the deployment's rows in the window.
REQUEST_LOG_QUERIES: dict[str, Callable[[Sequence[Mapping]], Reading]] = {
    "error_rate": _error_rate,
    "request_count": lambda rows: Reading(float(len(rows)), len(rows)),
    "p50_latency_s": _latency("latency_s", 50),
    "p95_latency_s": _latency("latency_s", 95),
    "p95_ttft_s": _latency("ttft_s", 95),
    "mean_tpot_s": _tpot,
}
#: the one request-log query over feedback rows: the mean score users gave the deployment's answers.
FEEDBACK_QUERY = "feedback_score"
#: Prometheus queries over the gateway's own counters (increase between two scrapes).
PROMETHEUS_QUERIES = ("error_rate", "request_count", "mean_latency_s")


def _perplexity(target: Target) -> float:
    """Perplexity of the target version's model file on the shipped held-out text (lower is better)."""
    if target.version is None or target.version.format != "gguf":
        raise LLMOpsError(
            f"deployment {target.deployment!r} has no registered GGUF version to score: register it first"
        )
    return held_out_perplexity(target.version.path, target.version.sha256)


def held_out_perplexity(path: str, sha256: str, n_ctx: int = 256) -> float:
    """Perplexity on `data/eval_text.txt` with llama.cpp in-process, computed once per file and kept
    under `LLMOPS_HOME/cache/perplexity/` (keyed by the file's sha256, the text, the window and llama.cpp's version)."""
    import json
    from importlib.metadata import version

    from llmops_lib.config import settings
    from llmops_lib.engines import EngineSpec, InProcessEngine
    from llmops_lib.optimize.perplexity import eval_text, score_text
    from llmops_lib.optimize.quantize import cache_key

    text = eval_text()
    key = cache_key(model=sha256, text=text, n_ctx=n_ctx, llama_cpp=version("llama-cpp-python"))
    stored = settings().home / "cache" / "perplexity" / f"{key}.json"
    if stored.exists():
        return float(json.loads(stored.read_text())["perplexity"])
    with InProcessEngine(EngineSpec(model=path, n_ctx=n_ctx, threads=1, batch_size=n_ctx)) as engine:
        value = score_text(engine.llama, text, n_ctx=n_ctx).perplexity
    stored.parent.mkdir(parents=True, exist_ok=True)
    partial = stored.with_suffix(".partial")
    partial.write_text(json.dumps({"perplexity": value, "path": path}))
    partial.replace(stored)
    return value


#: evaluation functions a metric may name (`provider: evaluation`); controllers can add their own.
EVALUATIONS: dict[str, Callable[[Target], float]] = {"perplexity": _perplexity}


def check_query(provider: str, query: str, what: str, evaluations: Mapping[str, Callable] | None = None) -> None:
    """Refuse a query its provider does not know (the controller checks evaluation names: it may add its own)."""
    known = {
        "request_log": [*REQUEST_LOG_QUERIES, FEEDBACK_QUERY],
        "prometheus": list(PROMETHEUS_QUERIES),
        "evaluation": [*EVALUATIONS, *(evaluations or {})],
    }[provider]
    if query not in known:
        raise SpecError(f"{what}: unknown {provider} query {query!r}; use one of {', '.join(known)}")


# --- providers -------------------------------------------------------------------------------


class RequestLogProvider:
    """Reads the gateway's request log (SQLite, WAL: readable while the gateway writes)."""

    def __init__(self, url: str | None) -> None:
        from llmops_lib.observe.request_log import database_path

        self.path = database_path(url)

    def _rows(self, table: str, since: float, until: float) -> list[dict]:
        """Rows of requests that *finished* in [since, until) (a request counts once, when its outcome is known)."""
        import sqlite3

        if not self.path.exists():
            return []
        sql = {
            "requests": "SELECT * FROM requests WHERE finished_at >= ? AND finished_at < ?",
            "feedback": "SELECT f.score, r.deployment FROM feedback f JOIN requests r USING (request_id) WHERE f.created_at >= ? AND f.created_at < ?",
        }[table]
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, (since, until))]
        except sqlite3.OperationalError:  # the gateway has not created its tables yet
            return []
        finally:
            db.close()

    def read(self, query: str, targets: Sequence[Target], since: float, until: float) -> list[Reading]:
        if query == FEEDBACK_QUERY:
            rows = self._rows("feedback", since, until)
            readings = []
            for target in targets:
                scores = [r["score"] for r in rows if r["deployment"] == target.deployment]
                readings.append(Reading(sum(scores) / len(scores) if scores else None, len(scores)))
            return readings
        rows = self._rows("requests", since, until)
        return [REQUEST_LOG_QUERIES[query](_served(rows, t.deployment)) for t in targets]


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
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(self.url, timeout=10).text
        except httpx.HTTPError as exc:
            raise LLMOpsError(f"cannot scrape {self.url} ({type(exc).__name__}): is the gateway running?") from None
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                deployment = sample.labels.get("deployment", "")
                if sample.name == "llmops_gateway_requests_total":
                    totals[f"count/{deployment}"] = totals.get(f"count/{deployment}", 0) + sample.value
                    if int(sample.labels.get("status") or 0) >= 400:
                        totals[f"errors/{deployment}"] = totals.get(f"errors/{deployment}", 0) + sample.value
                elif sample.name in ("llmops_gateway_e2e_seconds_sum", "llmops_gateway_e2e_seconds_count"):
                    key = ("sum/" if sample.name.endswith("_sum") else "n/") + deployment
                    totals[key] = totals.get(key, 0) + sample.value
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
    phase: str
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
    import time

    try:
        readings = provider.read(metric.query, [canary, stable] if metric.needs_baseline else [canary], since, until)
    except Exception as exc:  # noqa: BLE001 - any failure to measure is an Error measurement, counted against its limit
        return Measurement(metric.name, ERROR, since, until, message=f"{type(exc).__name__}: {exc}"[:300])
    result = readings[0]
    baseline = readings[1] if len(readings) > 1 else Reading(None, 0)
    measurement = Measurement(
        metric.name, RUNNING, since, until, result.value, baseline.value, result.samples, baseline.samples
    )
    missing = (
        result.value is None
        or result.samples < metric.min_samples
        or (metric.needs_baseline and baseline.value is None)
    )
    if missing:
        if metric.on_missing == "skip":
            return None
        measurement.phase = {"inconclusive": INCONCLUSIVE, "failed": FAILED, "successful": SUCCESSFUL}[
            metric.on_missing
        ]
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
        field = {SUCCESSFUL: "successful", FAILED: "failed", INCONCLUSIVE: "inconclusive", ERROR: "errors"}[
            measurement.phase
        ]
        setattr(self, field, getattr(self, field) + 1)
        self.consecutive_errors = self.consecutive_errors + 1 if measurement.phase == ERROR else 0


def _taken(status: MetricStatus) -> int:
    return status.measured - status.errors


def outcome(metrics: Sequence[MetricSpec], status: Mapping[str, MetricStatus]) -> tuple[str, str]:
    """The analysis phase and why: Failed and Inconclusive win over Running; Successful once counts are done."""
    for metric in metrics:
        s = status.get(metric.name, MetricStatus())
        if s.failed > metric.failure_limit:
            return (
                FAILED,
                f"{metric.name}: {s.failed} failed measurements, more than failureLimit {metric.failure_limit}",
            )
        if s.consecutive_errors > metric.consecutive_error_limit:
            return FAILED, f"{metric.name}: {s.consecutive_errors} measurements in a row could not be taken"
    for metric in metrics:
        s = status.get(metric.name, MetricStatus())
        if s.inconclusive > metric.inconclusive_limit:
            return (
                INCONCLUSIVE,
                f"{metric.name}: {s.inconclusive} inconclusive measurements, more than inconclusiveLimit {metric.inconclusive_limit}",
            )
    # a metric with no count still needs one real measurement: no data is never a pass
    pending = [m.name for m in metrics if _taken(status.get(m.name, MetricStatus())) < (m.count or 1)]
    if pending:
        return RUNNING, f"waiting for {', '.join(pending)}"
    return SUCCESSFUL, "every metric within its limits"
