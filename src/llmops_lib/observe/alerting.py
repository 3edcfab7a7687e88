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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
_DURATION = r"^\d+[smhdwy]$"


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


class _Labels(BaseModel):
    model_config = ConfigDict(extra="allow")

    severity: Literal[SEVERITIES] = Field(description="page: users are affected now; ticket: look in working hours")


class _Annotations(BaseModel):
    model_config = ConfigDict(extra="allow")

    summary: str = Field(min_length=1, description="what is wrong, in one line")
    description: str = Field(min_length=1, description="what to look at and what to do")


class _Rule(BaseModel):
    """A Prometheus alerting rule, with what an on-call needs made compulsory."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    alert: str = Field(min_length=1)
    expr: str = Field(min_length=1, description="PromQL")
    for_: str = Field(alias="for", pattern=_DURATION, description="e.g. 5m: without it one bad scrape pages someone")
    keep_firing_for: str | None = Field(None, pattern=_DURATION)
    labels: _Labels
    annotations: _Annotations

    @model_validator(mode="after")
    def _selects_series(self) -> _Rule:
        if not selectors(self.expr):
            raise ValueError(f"rule {self.alert!r}: its expression selects no series")
        return self


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    interval: str | None = Field(None, pattern=_DURATION)
    rules: list[_Rule] = Field(min_length=1)


class _RuleFile(BaseModel):
    """Prometheus's rule file: `groups: [{name, rules: [...]}]`, alert names unique."""

    model_config = ConfigDict(extra="forbid")

    groups: list[_Group] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> _RuleFile:
        names = [rule.alert for group in self.groups for rule in group.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"alert names must be unique, {repeated} repeat")
        return self


def load_rules(path: str | Path) -> list[AlertRule]:
    """The alerting rules of a Prometheus rule file, each checked for what an on-call needs.

    Raises:
        SpecError: no such file, not YAML, or a rule without alert/expr/for, a `severity` label in
            `SEVERITIES`, or `summary` and `description` annotations (the message names the field,
            e.g. `groups.0.rules.2.for`).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no alert rules at {path}: give a Prometheus rule file like deploy/alerts.yml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        rule_file = _RuleFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the file"
        raise SpecError(
            f"{path}: {where}: {first['msg'].removeprefix('Value error, ')} "
            "(a rule file is groups: [{name, rules: [{alert, expr, for, labels: {severity}, "
            "annotations: {summary, description}}]}])"
        ) from None
    return [
        AlertRule(
            group.name,
            rule.alert,
            rule.expr,
            rule.for_,
            rule.labels.severity,
            rule.annotations.summary,
            rule.annotations.description,
        )
        for group in rule_file.groups
        for rule in group.rules
    ]


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


def histogram_buckets(exposition: str, metric: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram `metric` by upper bound, summed over its other labels,
    from a Prometheus text exposition (a /metrics page)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == metric + "_bucket" and "le" in sample.labels:
                upper = float(sample.labels["le"])  # "+Inf" reads as math.inf
                buckets[upper] = buckets.get(upper, 0.0) + sample.value
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
