"""Our canary analysis as Argo Rollouts' own: each metric of a rollout spec becomes an AnalysisTemplate
metric whose Prometheus query reads the gateway's series (`llmops_gateway_*`).

A metric's query is computed over its `interval` (the window our analysis measures), on the rollout's
route (label `model`) and the canary's gateway deployment (label `deployment`). Conditions keep their
meaning: one over `result` alone is written in Argo's expression language on `result[0]`; one that
compares with `baseline` (the stable deployment, same window) has no counterpart there, so the whole
condition is written in PromQL over both sides and the query answers 1 (success holds), -1 (failure
holds) or 0 (neither). Too few samples (`minSamples`, counted as requests) leave the query empty, and
`onMissing` decides what an empty result is, as in our analysis; `skip` becomes an Argo measurement
error, which Argo tolerates up to `consecutiveErrorLimit`. Evaluation metrics (perplexity, task scores)
and feedback scores have no Prometheus series: they are listed, never dropped silently.

Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from llmops_lib.observe.gateway_metrics import GatewayMetrics
from llmops_lib.release.conditions import check_condition
from llmops_lib.release.rollout import MetricSpec, RolloutSpec

#: Where Argo's controller finds Prometheus (the address kube-prometheus-stack's operator serves).
PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
#: The annotation that lists the rollout's metrics with no Prometheus series, and why.
NOT_RENDERED = "llmops/not-rendered"


def _series() -> dict[str, str]:
    """The gateway's series names, read from its registry (observe/gateway_metrics.py is their one place)."""
    metrics = GatewayMetrics()
    name = {attr: getattr(metrics, attr).describe()[0].name for attr in ("requests", "latency", "ttft", "tpot")}
    return {
        "requests": f"{name['requests']}_total",
        "e2e_bucket": f"{name['latency']}_bucket",
        "e2e_sum": f"{name['latency']}_sum",
        "e2e_count": f"{name['latency']}_count",
        "ttft_bucket": f"{name['ttft']}_bucket",
        "tpot_sum": f"{name['tpot']}_sum",
        "tpot_count": f"{name['tpot']}_count",
    }


def _queries(series: dict[str, str]) -> dict[tuple[str, str], Callable[[str, str], str]]:
    """(provider, query) → PromQL of that value for a selector and a window."""

    def increase(name: str, selector: str, window: str, extra: str = "") -> str:
        return f"sum(increase({series[name]}{{{selector}{extra}}}[{window}]))"

    def quantile(q: float, name: str) -> Callable[[str, str], str]:
        return lambda sel, w: f"histogram_quantile({q}, sum by (le) (increase({series[name]}{{{sel}}}[{w}])))"

    def ratio(num: str, den: str) -> Callable[[str, str], str]:
        return lambda sel, w: f"{increase(num, sel, w)} / {increase(den, sel, w)}"

    # a status of 400 or more counts against the deployment (facts.fails_canary); `or vector(0)`: no error is 0
    def error_rate(sel: str, w: str) -> str:
        failed = increase("requests", sel, w, ',status=~"[4-5].."')
        return f"({failed} or vector(0)) / {increase('requests', sel, w)}"

    def request_count(sel: str, w: str) -> str:
        return increase("requests", sel, w)

    mean_latency = ratio("e2e_sum", "e2e_count")
    return {
        ("request_log", "error_rate"): error_rate,
        ("request_log", "request_count"): request_count,
        ("request_log", "p50_latency_s"): quantile(0.5, "e2e_bucket"),
        ("request_log", "p95_latency_s"): quantile(0.95, "e2e_bucket"),
        ("request_log", "p95_ttft_s"): quantile(0.95, "ttft_bucket"),
        ("request_log", "mean_tpot_s"): ratio("tpot_sum", "tpot_count"),
        ("prometheus", "error_rate"): error_rate,
        ("prometheus", "request_count"): request_count,
        ("prometheus", "mean_latency_s"): mean_latency,
    }


_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


def _argo_expr(node: ast.AST) -> str:
    """A condition over `result` in Argo's expression language (expr-lang), on the query's first value."""
    if isinstance(node, ast.Expression):
        return _argo_expr(node.body)
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.Name):  # check_condition allowed only result and baseline; baseline goes to PromQL
        return "result[0]"
    if isinstance(node, ast.BinOp):
        return f"({_argo_expr(node.left)} {_ARITHMETIC[type(node.op)]} {_argo_expr(node.right)})"
    if isinstance(node, ast.UnaryOp):
        return f"{'-' if isinstance(node.op, ast.USub) else '!'}({_argo_expr(node.operand)})"
    if isinstance(node, ast.BoolOp):
        return "(" + (" && " if isinstance(node.op, ast.And) else " || ").join(map(_argo_expr, node.values)) + ")"
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        parts = [
            f"{_argo_expr(a)} {_COMPARE[type(op)]} {_argo_expr(b)}"
            for a, op, b in zip(sides, node.ops, sides[1:], strict=False)
        ]
        return "(" + " && ".join(parts) + ")"
    return f"abs({_argo_expr(node.args[0])})"  # the one call the grammar allows


def _promql_bool(node: ast.AST, names: dict[str, str]) -> str:
    """A condition over `result` and `baseline` as PromQL answering 1 (holds) or 0."""
    if isinstance(node, ast.Expression):
        return _promql_bool(node.body, names)
    if isinstance(node, ast.Constant):
        return repr(float(node.value))
    if isinstance(node, ast.Name):
        return f"({names[node.id]})"
    if isinstance(node, ast.BinOp):
        op = _ARITHMETIC[type(node.op)]
        return f"({_promql_bool(node.left, names)} {op} {_promql_bool(node.right, names)})"
    if isinstance(node, ast.UnaryOp):
        inner = _promql_bool(node.operand, names)
        return f"(-{inner})" if isinstance(node.op, ast.USub) else f"(1 - {inner})"
    if isinstance(node, ast.BoolOp):
        values = [_promql_bool(v, names) for v in node.values]
        joined = " * ".join(values)
        return f"({joined})" if isinstance(node.op, ast.And) else f"clamp_max({' + '.join(values)}, 1)"
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        parts = [
            f"({_promql_bool(a, names)} {_COMPARE[type(op)]} bool {_promql_bool(b, names)})"
            for a, op, b in zip(sides, node.ops, sides[1:], strict=False)
        ]
        return "(" + " * ".join(parts) + ")"
    return f"abs({_promql_bool(node.args[0], names)})"


def _guarded(condition: str | None, on_missing: str, role: str) -> str | None:
    """Argo's condition with our `onMissing`: what an empty result (too few samples) means."""
    if condition is None:
        return None
    if on_missing == "skip":
        return condition  # result[0] of nothing is an Argo measurement error, retried next interval
    empty_means = {"inconclusive": None, "failed": "failure", "successful": "success"}[on_missing]
    if empty_means == role:
        return f"len(result) == 0 || {condition}"
    return f"len(result) > 0 && {condition}"


def prometheus_metric(metric: MetricSpec, *, model: str, canary: str, stable: str) -> dict | None:
    """One Argo metric for ours; None when its provider or query has no Prometheus series."""
    series = _series()
    query_of = _queries(series).get((metric.provider, metric.query))
    if query_of is None:
        return None
    window = f"{metric.interval_s:g}s"

    def value(deployment: str) -> str:
        return query_of(f'model="{model}",deployment="{deployment}"', window)

    enough = ""
    if metric.min_samples > 0:  # fewer requests than minSamples: an empty result
        requests = f'sum(increase({series["requests"]}{{model="{model}",deployment="{canary}"}}[{window}]))'
        enough = f" and on() ({requests} >= {metric.min_samples})"
    success = metric.success_condition and check_condition(metric.success_condition)
    failure = metric.failure_condition and check_condition(metric.failure_condition)
    if metric.needs_baseline:
        names = {"result": value(canary), "baseline": value(stable)}
        holds = _promql_bool(success, names) if success else None
        fails = _promql_bool(failure, names) if failure else None
        # failure is judged first, by our analysis and by Argo: -1 failure, 1 success, 0 neither
        query = f"{holds} * (1 - {fails}) - {fails}" if holds and fails else holds or f"-{fails}"
        success_expr = "result[0] == 1" if success else None
        failure_expr = "result[0] == -1" if failure else None
    else:
        query = value(canary)
        success_expr = _argo_expr(success) if success else None
        failure_expr = _argo_expr(failure) if failure else None
    if metric.on_missing == "inconclusive" and failure_expr is None and success_expr is not None:
        failure_expr = f"!({success_expr})"  # so that neither holds on an empty result
    argo: dict = {
        "name": metric.name,
        "interval": window,
        **({"count": metric.count} if metric.count is not None else {}),
        **({"successCondition": s} if (s := _guarded(success_expr, metric.on_missing, "success")) else {}),
        **({"failureCondition": f} if (f := _guarded(failure_expr, metric.on_missing, "failure")) else {}),
        "failureLimit": metric.failure_limit,
        "inconclusiveLimit": metric.inconclusive_limit,
        "consecutiveErrorLimit": metric.consecutive_error_limit,
        "provider": {"prometheus": {"address": PROMETHEUS_ADDRESS, "query": f"({query}){enough}"}},
    }
    return argo


def analysis_template(rollout: RolloutSpec, *, name: str, namespace: str, model: str) -> dict | None:
    """The AnalysisTemplate of the rollout's metrics (None when it has none that Prometheus can answer)."""
    metrics, skipped = [], []
    for metric in rollout.metrics:
        argo = prometheus_metric(
            metric, model=model, canary=rollout.canary_deployment, stable=rollout.stable_deployment
        )
        if argo is None:
            skipped.append(f"{metric.name} ({metric.provider} {metric.query}: no Prometheus series)")
        else:
            metrics.append(argo)
    if not metrics:
        return None
    metadata: dict = {"name": name, "namespace": namespace}
    if skipped:
        metadata["annotations"] = {NOT_RENDERED: "; ".join(skipped)}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": metadata,
        "spec": {"metrics": metrics},
    }
