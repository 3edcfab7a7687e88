"""Prometheus alert rules, checked against what the gateway really exposes.

An alert on a series nobody exports never fires, and Prometheus says nothing about it: a typo in a
metric name or a label value is a silent hole in the on-call's cover. So the rules in
`deploy/alerts.yml` are data that the library reads (`load_rules`), and each series an expression
selects is looked up in a real `/metrics` exposition (`unknown_series`). `histogram_quantile`
computes what Prometheus's function of that name computes from histogram buckets, so the book can
put a latency alert's estimate beside the exact percentile from the request log.

Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmops_lib.errors import SpecError

SEVERITIES = ("page", "ticket")
RULES_FILE = Path("deploy") / "alerts.yml"
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w:.])(?P<name>[A-Za-z_:][\w:]*)\s*(?P<labels>\{[^}]*\})?(?P<call>\s*\()?")
_MATCHER = re.compile(r'(?P<label>[A-Za-z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"')
_DURATION = re.compile(r"^\d+[smhdwy]$")


@dataclass(frozen=True)
class Selector:
    """One series selector of an expression: a metric name and its label matchers (label, op, value)."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of a rule file (Prometheus's `alert`, `expr`, `for`, labels, annotations)."""

    group: str
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def selectors(self) -> list[Selector]:
        return selectors(self.expr)


def selectors(expr: str) -> list[Selector]:
    """The series selectors of a PromQL expression (function names, keywords, grouping labels and
    durations are not series)."""
    found = []
    for match in _SELECTOR.finditer(_GROUPING.sub(" ", expr)):
        if match["call"] or match["name"].lower() in _KEYWORDS:
            continue
        matchers = tuple((m["label"], m["op"], m["value"]) for m in _MATCHER.finditer(match["labels"] or ""))
        found.append(Selector(match["name"], matchers))
    return found


def find_rules(start: str | Path = ".") -> Path:
    """The repository's `deploy/alerts.yml`, looked up from `start` upwards (a chapter runs in its
    own folder, a test or runbook at the root).

    Raises:
        SpecError: no `deploy/alerts.yml` in `start` or any folder above it.
    """
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / RULES_FILE).is_file():
            return folder / RULES_FILE
    raise SpecError(f"no {RULES_FILE} in {here} or above: run from the repository or give the rule file's path")


def load_rules(path: str | Path) -> list[AlertRule]:
    """The alerting rules of a Prometheus rule file, each checked for what an on-call needs.

    Raises:
        SpecError: no such file, not YAML, or a rule without alert/expr/for, a `severity` label in
            `SEVERITIES`, or `summary` and `description` annotations (the message names the rule).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no alert rules at {path}: give a Prometheus rule file like deploy/alerts.yml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list) or not groups:
        raise SpecError(f"{path} has no `groups` list: a rule file is `groups: [{{name, rules: [...]}}]`")
    rules = []
    for group in groups:
        if (
            not isinstance(group, dict)
            or not isinstance(group.get("name"), str)
            or not isinstance(group.get("rules"), list)
            or not group["rules"]
        ):
            raise SpecError(f"{path}: every group needs a name and a non-empty rules list, got {group!r:.80}")
        for rule in group["rules"]:
            rules.append(_rule(path, group["name"], rule))
    names = [r.alert for r in rules]
    if len(set(names)) != len(names):
        raise SpecError(
            f"{path}: alert names must be unique, {sorted({n for n in names if names.count(n) > 1})} repeat"
        )
    return rules


def _rule(path: Path, group: str, rule: object) -> AlertRule:
    name = rule.get("alert") if isinstance(rule, dict) else None
    where = f"{path}: group {group!r}, rule {name or rule!r:.60}"
    if not isinstance(name, str) or not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
        raise SpecError(f"{where}: needs `alert` (a name) and `expr` (PromQL)")
    if not _DURATION.match(str(rule.get("for", ""))):
        raise SpecError(f"{where}: needs `for` (e.g. 5m): without it one bad scrape pages someone")
    labels, annotations = rule.get("labels") or {}, rule.get("annotations") or {}
    if labels.get("severity") not in SEVERITIES:
        raise SpecError(f"{where}: labels.severity must be one of {SEVERITIES}, got {labels.get('severity')!r}")
    if not annotations.get("summary") or not annotations.get("description"):
        raise SpecError(f"{where}: needs annotations summary and description (what is wrong, what to do)")
    if not selectors(rule["expr"]):
        raise SpecError(f"{where}: its expression selects no series")
    return AlertRule(
        group,
        name,
        rule["expr"],
        str(rule["for"]),
        labels["severity"],
        annotations["summary"],
        annotations["description"],
    )


def exposed_samples(exposition: str) -> dict[str, list[dict[str, str]]]:
    """The label sets of every sample in a Prometheus text exposition, by sample name
    (`x_total`, `h_bucket`, `h_sum`, … as a query names them)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def unknown_series(rule: AlertRule, samples: Mapping[str, list[dict[str, str]]]) -> list[str]:
    """What `rule` selects that the exposition lacks: a metric, a label, or an exact label value."""
    problems = []
    for selector in rule.selectors:
        label_sets = samples.get(selector.metric)
        if not label_sets:
            problems.append(f"{rule.alert}: no series {selector.metric}")
            continue
        for label, op, value in selector.matchers:
            values = {labels[label] for labels in label_sets if label in labels}
            if not values:
                problems.append(f"{rule.alert}: {selector.metric} has no label {label!r}")
            elif op == "=" and value not in values:
                problems.append(
                    f"{rule.alert}: {selector.metric}{{{label}={value!r}}} is not exposed (values: {sorted(values)})"
                )
    return problems


def histogram_buckets(samples: Mapping[str, float], metric: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram `metric` by upper bound, summed over its other labels,
    from `engine_metrics.parse_metrics` samples (`name{labels}` -> value)."""
    buckets: dict[float, float] = {}
    for sample, value in samples.items():
        name, _, labels = sample.partition("{")
        if name != metric + "_bucket":
            continue
        bound = {m["label"]: m["value"] for m in _MATCHER.finditer(labels)}.get("le")
        if bound is not None:
            upper = math.inf if bound == "+Inf" else float(bound)
            buckets[upper] = buckets.get(upper, 0.0) + value
    return dict(sorted(buckets.items()))


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """The `q` quantile (0..1) from cumulative buckets, as Prometheus's `histogram_quantile` computes
    it: linear interpolation inside the bucket it falls in, so it is only as exact as the buckets.
    NaN when the histogram is empty; the highest finite bound when it falls in the +Inf bucket.

    Raises:
        SpecError: `q` outside 0..1, or no +Inf bucket (not a Prometheus histogram).
    """
    if not 0 <= q <= 1:
        raise SpecError(f"a quantile is within 0..1, got {q}")
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        raise SpecError("a Prometheus histogram ends with a +Inf bucket: give every `le` bucket of the series")
    total = buckets[math.inf]
    if total == 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if upper == math.inf:
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = upper, count
    return lower
