"""A rollout is data: steps that move traffic, metrics that judge the canary, hooks that ask first.

The shape follows Argo Rollouts (`setWeight`, `pause`, background analysis with `interval`,
`count`, `successCondition`, `failureCondition`, `failureLimit`) and Flagger's webhooks
(`confirm-rollout`, `confirm-promotion`, `rollback`, `post-rollout`, `event`), so an operator
who knows those reads ours at a glance. The spec is a set of pydantic models: everything is
checked when it is built, before any traffic moves, and a bad value is a SpecError whose message
gives its path as written (`analysis.metrics.0.interval: Input should be greater than 0`); an
unknown key is refused with the keys accepted there, so a typo never passes silently.

YAML keys are camelCase as in Argo (snake_case works too). Queries and conditions are checked
against `release.conditions` (the grammar the analysis evaluates), never against the analysis
itself. See deploy/rollouts/*.yaml.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from llmops_lib.errors import SpecError
from llmops_lib.gateway.config import Weight
from llmops_lib.release.conditions import check_condition, check_query

Provider = Literal["request_log", "prometheus", "evaluation"]
OnMissing = Literal["inconclusive", "failed", "successful", "skip"]
OnRestart = Literal["resume", "abort"]
HookKind = Literal["confirm-rollout", "confirm-promotion", "rollback", "post-rollout", "event"]
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: float | int | str) -> float:
    """Seconds from `30`, `"30s"`, `"500ms"`, `"2m"` or `"1h"`."""
    if isinstance(value, bool):
        raise SpecError(f"must be a duration like 30s or 2m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise SpecError(f"must be a duration like 30s, 500ms or 2m, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise SpecError(f"must not be negative, got {value!r}")
    return seconds


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be lower-case letters, digits, '.', '_' or '-' (at most 63)")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value


def _condition(text: str) -> str:
    check_condition(text)
    return text


def _version(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads `version: 3` as a number
    if isinstance(value, str) and not value.strip():
        raise ValueError("the candidate is missing: give the registry version (e.g. '3') or alias to roll out")
    return value.strip() if isinstance(value, str) else value


#: Seconds, written as a number or as `30s`, `500ms`, `2m`, `1h`; written back as `<seconds>s`.
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s:g}s")]
Count = Annotated[int, Field(ge=0, strict=True)]
Name = Annotated[str, AfterValidator(_name)]
Url = Annotated[str, AfterValidator(_http_url)]
Condition = Annotated[str, AfterValidator(_condition)]


class _Spec(BaseModel):
    """Argo's camelCase keys (snake_case accepted), unknown keys refused, immutable; a bad value
    raises SpecError with its path, also when the model is built from Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
    _what: ClassVar[str] = "rollout spec"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(f"{self._what}: {_describe(exc, type(self))}") from None

    # pydantic builds nested models without calling an __init__ so marked (as its own): a nested
    # error keeps its full path and is converted once, by the outermost model.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class SetWeight(_Spec):
    """Send `weight` percent of the route's traffic to the canary (the rest to stable). YAML: `setWeight: 20`."""

    _what = "setWeight step"
    weight: Weight = Field(alias="setWeight")

    def __init__(self, weight: int | None = None, /, **data: Any) -> None:
        super().__init__(**({"weight": weight} if weight is not None else {}), **data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_serializer
    def _argo(self) -> dict[str, Any]:
        return {"setWeight": self.weight}


def _pause_body(value: object) -> object:
    """`pause: {duration: 30s}` (or `pause: {}`) in YAML; a duration or None from Python."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"duration"})
        if unknown:
            raise ValueError(f"a pause takes only a duration, got {unknown}")
        return value.get("duration")
    return value


class Pause(_Spec):
    """Wait `duration_s` seconds, or until an operator promotes (`duration_s=None`). YAML: `pause: {duration: 30s}`."""

    _what = "pause step"
    duration_s: Annotated[Duration | None, BeforeValidator(_pause_body)] = Field(None, alias="pause")

    def __init__(self, duration: float | str | None = None, /, **data: Any) -> None:
        super().__init__(**({"duration_s": duration} if duration is not None else {}), **data)

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_serializer
    def _argo(self) -> dict[str, Any]:
        return {"pause": {} if self.duration_s is None else {"duration": f"{self.duration_s:g}s"}}


def _step_kind(value: object) -> str | None:
    if isinstance(value, (SetWeight, Pause)):
        return "setWeight" if isinstance(value, SetWeight) else "pause"
    if isinstance(value, Mapping) and len(value) == 1:
        return {"setWeight": "setWeight", "set_weight": "setWeight", "pause": "pause"}.get(next(iter(value)))
    return None


Step = Annotated[
    Annotated[SetWeight, Tag("setWeight")] | Annotated[Pause, Tag("pause")],
    Discriminator(
        _step_kind,
        custom_error_type="step",
        custom_error_message="each step has one key: setWeight (a percentage) or pause (with an optional duration)",
    ),
]


class MetricSpec(_Spec):
    """One metric of the analysis, measured every `interval_s` on the canary (and the stable baseline).

    Attributes:
        name: unique within the rollout; names the measurement in the audit trail and the plots.
        provider: `request_log` (the gateway's per-request log), `prometheus` (the gateway's
            /metrics) or `evaluation` (a function: held-out perplexity of the model file, or
            `task_score:<task>`, each side's accuracy on a task).
        query: what to compute: one of `release.conditions.REQUEST_LOG_QUERIES` (or
            `FEEDBACK_QUERY`), `PROMETHEUS_QUERIES`, or an evaluation's name (`BUILTIN_EVALUATIONS`
            and whatever the controller is given; the controller checks those).
        interval_s: seconds between measurements (YAML `interval`); each measures the window since the last one.
        count: measurements to take; None keeps measuring until the rollout ends (background).
        success_condition, failure_condition: expressions over `result` (the canary's value) and
            `baseline` (the stable deployment's value over the same window), e.g.
            `result <= baseline * 1.05`. Argo's rules: failure is checked first; a success condition
            that does not hold without a failure condition is a failure; neither holding is inconclusive.
        failure_limit: failed measurements tolerated; one more fails the analysis (Argo's failureLimit).
        inconclusive_limit: inconclusive measurements tolerated before the rollout pauses for a human.
        consecutive_error_limit: measurements that could not be taken in a row before the analysis fails.
        min_samples: requests the canary must have served in the window for the measurement to count.
        on_missing: what too few samples mean: `inconclusive`, `failed`, `successful` or `skip`
            (take no measurement now, try again next interval).
    """

    _what = "analysis metric"
    name: Name
    provider: Provider
    query: Annotated[str, Field(min_length=1)]
    interval_s: Annotated[Duration, Field(gt=0)] = Field(10.0, alias="interval")
    count: Annotated[int, Field(ge=1, strict=True)] | None = None
    success_condition: Condition | None = None
    failure_condition: Condition | None = None
    failure_limit: Count = 0
    inconclusive_limit: Count = 0
    consecutive_error_limit: Count = 4
    min_samples: Count = 1
    on_missing: OnMissing = "inconclusive"

    @field_validator("query")
    @classmethod
    def _known_query(cls, query: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")
        # evaluation names are checked by the controller, which may add its own
        if provider in ("request_log", "prometheus"):
            check_query(provider, query)
        return query

    @model_validator(mode="after")
    def _some_condition(self) -> MetricSpec:
        if self.success_condition is None and self.failure_condition is None:
            raise ValueError(f"metric {self.name!r}: give a successCondition, a failureCondition or both")
        return self

    @property
    def needs_baseline(self) -> bool:
        return any("baseline" in (c or "") for c in (self.success_condition, self.failure_condition))


class HookSpec(_Spec):
    """A Flagger-style webhook: POST the rollout's status as JSON to `url`; 2xx means yes.
    YAML: `{type: confirm-promotion, url: http://…, timeout: 10s}`."""

    _what = "hook"
    kind: HookKind = Field(alias="type")
    url: Url
    timeout_s: Duration = Field(10.0, alias="timeout")


class StableSide(_Spec):
    """`stable:` the gateway deployment serving the version the registry alias `stable` points at."""

    deployment: Name = "stable"


class CanarySide(_Spec):
    """`canary:` the candidate version, its deployment, and where its engine listens (added to the
    route with weight 0 at start if the route lacks it)."""

    version: Annotated[str, BeforeValidator(_version)] = Field("", validate_default=True)
    deployment: Name = "canary"
    url: Url | None = None


class Analysis(_Spec):
    """`analysis:` the background analysis, measured from the first step until the end."""

    metrics: tuple[MetricSpec, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Analysis:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        return self


#: Python's flat keyword names → where they live in the YAML document.
_FLAT = {
    "candidate": ("canary", "version"),
    "canary_deployment": ("canary", "deployment"),
    "canary_url": ("canary", "url"),
    "stable_deployment": ("stable", "deployment"),
    "metrics": ("analysis", "metrics"),
}


class RolloutSpec(_Spec):
    """A canary release of one registered model version behind one gateway route.

    Built from YAML (`load_rollout`) or from Python with flat names:
    `RolloutSpec(name=, model=, candidate=, stable_deployment=, canary_deployment=, steps=, metrics=)`.

    Attributes:
        name: the rollout's name (its state and audit trail live under LLMOPS_HOME/rollouts/<name>/).
        model: the registered model name, which is also the gateway route's model name.
        stable, canary: the two sides (see `StableSide`, `CanarySide`); `candidate`,
            `stable_deployment`, `canary_deployment` and `canary_url` read them.
        steps: what to do, in order (SetWeight, Pause). After the last step the canary is promoted.
        analysis: the metrics (`metrics` reads them).
        hooks: webhooks (Python callables are given to the controller instead).
        on_restart: what a controller that finds this rollout mid-way does: `resume` or `abort`.
    """

    name: Name
    model: Name
    stable: StableSide = StableSide()
    canary: CanarySide
    steps: tuple[Step, ...]
    analysis: Analysis = Analysis()
    hooks: tuple[HookSpec, ...] = ()
    on_restart: OnRestart = "resume"

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for flat, (side, key) in _FLAT.items():
            if flat in data:
                data[side] = {**(data.get(side) or {}), key: data.pop(flat)}
        data.setdefault("canary", {})  # so a missing candidate is named as such
        return data

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, steps: tuple[SetWeight | Pause, ...]) -> tuple[SetWeight | Pause, ...]:
        if not steps:
            raise ValueError("no steps: give at least one setWeight")
        return steps

    @model_validator(mode="after")
    def _two_deployments(self) -> RolloutSpec:
        if self.stable.deployment == self.canary.deployment:
            raise ValueError(f"stable and canary must be different deployments, both are {self.canary.deployment!r}")
        return self

    @property
    def candidate(self) -> str:
        return self.canary.version

    @property
    def stable_deployment(self) -> str:
        return self.stable.deployment

    @property
    def canary_deployment(self) -> str:
        return self.canary.deployment

    @property
    def canary_url(self) -> str | None:
        return self.canary.url

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return self.analysis.metrics

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutSpec:
        """Build from Argo-like data (YAML/JSON). Raises SpecError naming the path of each bad value."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"rollout spec: {_describe(exc, cls)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The spec as Argo-style data (camelCase keys, what was given); `from_dict(to_dict())`
        round-trips, and the state file keeps it in this form."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def weight_after(self, step_index: int) -> int:
        """The canary weight once steps[0..step_index] have run (0 before any setWeight)."""
        weights = [s.weight for s in self.steps[: step_index + 1] if isinstance(s, SetWeight)]
        return weights[-1] if weights else 0


def _describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """pydantic's errors as one line: each bad value's path as written, and what is wrong with it."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        path = ".".join(part for i, part in enumerate(loc) if i == 0 or part != loc[i - 1])  # a step's tag, once
        if error["type"] == "extra_forbidden":
            message = f"unknown key; accepted here: {', '.join(_keys_at(model, error['loc'][:-1]))}"
        elif error["type"] == "missing":
            message = "is required"
        else:
            message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {message}" if path else message)
    return "; ".join(problems)


def _keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model found by following `loc` from `model` accepts (as written in YAML)."""
    models = [model]
    for part in loc:
        inner = [
            found
            for m in models
            for name, info in m.model_fields.items()
            if part in (name, info.alias)
            for found in _models_in(info.annotation)
        ]
        models = inner or models  # a list index or a step's tag: same model
    return sorted({info.alias or name for m in models for name, info in m.model_fields.items()})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [found for arg in get_args(annotation) for found in _models_in(arg)]


def load_rollout(source: str | Path | Mapping[str, Any]) -> RolloutSpec:
    """A rollout from a YAML file, or from data already loaded.

    Raises:
        SpecError: no such file, not YAML, or any value outside what is accepted.
    """
    if isinstance(source, Mapping):
        return RolloutSpec.from_dict(source)
    import yaml

    path = Path(source)
    if not path.is_file():
        raise SpecError(f"no rollout spec at {path}: give a YAML file like deploy/rollouts/canary.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{path} must hold a mapping (name, model, canary, steps, analysis)")
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{path}: {_describe(exc, RolloutSpec)}") from None


def steps_from_text(text: str) -> tuple[SetWeight | Pause, ...]:
    """Steps from a compact string for runbook parameters: `"20,pause:10s,50,pause:10s,pause"`."""
    steps: list[SetWeight | Pause] = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item == "pause":
            steps.append(Pause())
        elif item.startswith("pause:"):
            steps.append(Pause(item.removeprefix("pause:")))
        else:
            try:
                steps.append(SetWeight(int(item)))
            except ValueError:
                raise SpecError(f"step {item!r} is not a weight (0..100), 'pause' or 'pause:<duration>'") from None
    return tuple(steps)


def standard_canary(
    name: str,
    model: str,
    candidate: str,
    *,
    steps: str = "20,pause:15s,50,pause:15s",
    interval_s: float = 5.0,
    max_error_rate: float = 0.05,
    max_latency_ratio: float = 2.0,
    max_perplexity_ratio: float = 1.02,
    failure_limit: int = 1,
) -> RolloutSpec:
    """The release the book and the `canary_release` runbook run: error rate, p95 latency against
    stable, and held-out perplexity against stable (once), on deployments `stable` and `canary`."""
    metrics = (
        MetricSpec(
            name="error-rate",
            provider="request_log",
            query="error_rate",
            interval_s=interval_s,
            on_missing="skip",
            success_condition=f"result <= {max_error_rate}",
            failure_limit=failure_limit,
        ),
        MetricSpec(
            name="p95-latency",
            provider="request_log",
            query="p95_latency_s",
            interval_s=interval_s,
            on_missing="skip",
            min_samples=3,
            success_condition=f"result <= baseline * {max_latency_ratio}",
            failure_limit=failure_limit,
        ),
        MetricSpec(
            name="perplexity",
            provider="evaluation",
            query="perplexity",
            count=1,
            interval_s=1.0,
            success_condition=f"result <= baseline * {max_perplexity_ratio}",
        ),
    )
    return RolloutSpec(
        name=name,
        model=model,
        candidate=candidate,
        stable_deployment="stable",
        canary_deployment="canary",
        steps=steps_from_text(steps),
        metrics=metrics,
    )
