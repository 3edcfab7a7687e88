"""The grammar of an analysis metric: which queries each provider answers, and the conditions over them.

A rollout spec (`release.rollout`) checks its metrics against this grammar when it is built, and
the analysis (`release.analysis`) evaluates the same conditions on measured values; neither
imports the other, as Argo Rollouts keeps its types apart from `utils/evaluate`.

A condition is an expression over `result` (the canary's value) and `baseline` (the stable
deployment's value on the same window), e.g. `result <= baseline * 1.05`. It is evaluated by a
small interpreter of Python's syntax tree that accepts numbers, those two names, `+ - * /`,
comparisons, `and`/`or`/`not` and `abs()`, and refuses everything else (no `eval`).

Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Iterable, Mapping
from typing import Any

from llmops_lib.errors import SpecError
from llmops_lib.evals.tasks import TASKS

#: request-log queries (a function of the deployment's requests in the window) and what each means.
REQUEST_LOG_QUERIES: dict[str, str] = {
    "error_rate": "requests that count against the deployment (status 400 or more, or an error) / all",
    "request_count": "requests the deployment served",
    "p50_latency_s": "median end-to-end latency of its successful requests",
    "p95_latency_s": "95th percentile end-to-end latency of its successful requests",
    "p95_ttft_s": "95th percentile time to first token of its successful requests",
    "mean_tpot_s": "mean time per output token after the first, over successful requests with 2+ tokens",
}
#: the one request-log query over feedback rows: the mean score users gave the deployment's answers.
FEEDBACK_QUERY = "feedback_score"
#: Prometheus queries over the gateway's own counters (increase between two scrapes).
PROMETHEUS_QUERIES = ("error_rate", "request_count", "mean_latency_s")
#: an evaluation named `task_score:<task>` scores the deployment's engine on that task's test split (the eval gate).
TASK_SCORE = "task_score:"
#: the evaluation functions that ship with the library (`provider: evaluation`); controllers may add their own.
BUILTIN_EVALUATIONS = ("perplexity", *(TASK_SCORE + task for task in TASKS))

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
        for op, right_node in zip(node.ops, node.comparators, strict=True):
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
        f"{ast.unparse(node)!r} is not allowed in a condition: "
        "use numbers, result, baseline, + - * /, comparisons, and/or/not, abs()"
    )


def check_condition(text: str, what: str | None = None) -> ast.Expression:
    """Parse and dry-run a condition so a typo fails when the spec is built, not mid-rollout.
    `what` (e.g. the metric's name) starts the error message."""
    prefix = f"{what}: " if what else ""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{prefix}a condition is an expression such as 'result <= 0.01', got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise SpecError(f"{prefix}{text!r} is not a valid expression (example: 'result <= baseline * 1.05')") from None
    try:
        _evaluate(tree, {"result": 1.0, "baseline": 1.0})
    except SpecError as exc:
        raise SpecError(f"{prefix}{exc}") from None
    return tree


def holds(text: str, result: float, baseline: float | None) -> bool:
    """Whether condition `text` holds for these values (`baseline` may be None if it is not used)."""
    values = {"result": result, "baseline": baseline if baseline is not None else math.nan}
    return bool(_evaluate(check_condition(text), values))


def check_query(provider: str, query: str, what: str | None = None, evaluations: Iterable[str] = ()) -> None:
    """Refuse a query its provider does not know. Evaluation names are the built-in ones plus
    `evaluations` (a controller may add its own, so a spec alone does not check them)."""
    known = {
        "request_log": [*REQUEST_LOG_QUERIES, FEEDBACK_QUERY],
        "prometheus": list(PROMETHEUS_QUERIES),
        "evaluation": list(dict.fromkeys([*BUILTIN_EVALUATIONS, *evaluations])),
    }[provider]
    if query not in known:
        prefix = f"{what}: " if what else ""
        raise SpecError(f"{prefix}unknown {provider} query {query!r}; use one of {', '.join(known)}")
