"""A rollout is data: steps that move traffic, metrics that judge the canary, hooks that ask first.

The shape follows Argo Rollouts (`setWeight`, `pause`, background analysis with `interval`,
`count`, `successCondition`, `failureCondition`, `failureLimit`) and Flagger's webhooks
(`confirm-rollout`, `confirm-promotion`, `rollback`, `post-rollout`, `event`), so an operator
who knows those reads ours at a glance. Everything is checked when the spec is built, before any
traffic moves: a weight outside 0–100, an unknown metric query, a condition naming something
other than `result` and `baseline` are refused with a SpecError naming the field.

YAML keys may be written camelCase (as in Argo) or snake_case. See deploy/rollouts/*.yaml.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llmops_lib.errors import SpecError

PROVIDERS = ("request_log", "prometheus", "evaluation")
ON_MISSING = ("inconclusive", "failed", "successful", "skip")
ON_RESTART = ("resume", "abort")
HOOK_KINDS = ("confirm-rollout", "confirm-promotion", "rollback", "post-rollout", "event")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: float | int | str, what: str) -> float:
    """Seconds from `30`, `"30s"`, `"500ms"`, `"2m"` or `"1h"`."""
    if isinstance(value, bool):
        raise SpecError(f"{what} must be a duration like 30s or 2m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise SpecError(f"{what} must be a duration like 30s, 500ms or 2m, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise SpecError(f"{what} must not be negative, got {value!r}")
    return seconds


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower().replace("-", "_")


def _snake_keys(data: Any) -> Any:
    """camelCase keys (Argo's YAML) → snake_case, recursively; values are left alone."""
    if isinstance(data, Mapping):
        return {_snake(str(k)): _snake_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_snake_keys(v) for v in data]
    return data


def _int(value: object, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}"
        raise SpecError(f"{what} must be an integer {bounds}, got {value!r}")
    return value


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of the route's traffic to the canary (the rest to stable)."""

    weight: int

    def __post_init__(self) -> None:
        _int(self.weight, "setWeight", 0, 100)


@dataclass(frozen=True)
class Pause:
    """Wait `duration_s` seconds, or until an operator promotes (`duration_s=None`)."""

    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.duration_s is not None:
            object.__setattr__(self, "duration_s", parse_duration(self.duration_s, "pause.duration"))


Step = SetWeight | Pause


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the analysis, measured every `interval_s` on the canary (and the stable baseline).

    Attributes:
        name: unique within the rollout; names the measurement in the audit trail and the plots.
        provider: `request_log` (the gateway's per-request log), `prometheus` (the gateway's
            /metrics) or `evaluation` (a function, e.g. held-out perplexity of the model file).
        query: what to compute (see `llmops_lib.release.analysis.QUERIES` and `evaluations`).
        interval_s: seconds between measurements; each measures the window since the last one.
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

    name: str
    provider: str
    query: str
    interval_s: float = 10.0
    count: int | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    min_samples: int = 1
    on_missing: str = "inconclusive"

    def __post_init__(self) -> None:
        from llmops_lib.release.analysis import check_condition, check_query

        what = f"metric {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(f"metric name {self.name!r} must be lower-case letters, digits, '.', '_' or '-'")
        if self.provider not in PROVIDERS:
            raise SpecError(f"{what}: provider {self.provider!r} is unknown; use one of {', '.join(PROVIDERS)}")
        if self.provider != "evaluation":  # evaluation names are checked by the controller, which may add its own
            check_query(self.provider, self.query, what)
        elif not isinstance(self.query, str) or not self.query:
            raise SpecError(f"{what}: an evaluation metric names its evaluation function in query")
        object.__setattr__(self, "interval_s", parse_duration(self.interval_s, f"{what}: interval"))
        if self.interval_s <= 0:
            raise SpecError(f"{what}: interval must be more than 0 s")
        if self.count is not None:
            _int(self.count, f"{what}: count", 1)
        for limit in ("failure_limit", "inconclusive_limit", "consecutive_error_limit", "min_samples"):
            _int(getattr(self, limit), f"{what}: {limit}", 0)
        if self.success_condition is None and self.failure_condition is None:
            raise SpecError(f"{what}: give a successCondition, a failureCondition or both")
        for kind in ("success_condition", "failure_condition"):
            if getattr(self, kind) is not None:
                check_condition(getattr(self, kind), f"{what}: {kind}")
        if self.on_missing not in ON_MISSING:
            raise SpecError(f"{what}: onMissing {self.on_missing!r} is unknown; use one of {', '.join(ON_MISSING)}")

    @property
    def needs_baseline(self) -> bool:
        return any("baseline" in (c or "") for c in (self.success_condition, self.failure_condition))


@dataclass(frozen=True)
class HookSpec:
    """A Flagger-style webhook: POST the rollout's status as JSON to `url`; 2xx means yes."""

    kind: str
    url: str
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in HOOK_KINDS:
            raise SpecError(f"hook type {self.kind!r} is unknown; use one of {', '.join(HOOK_KINDS)}")
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise SpecError(f"{self.kind} hook: url must start with http:// or https://, got {self.url!r}")
        object.__setattr__(self, "timeout_s", parse_duration(self.timeout_s, f"{self.kind} hook: timeout"))


@dataclass(frozen=True)
class RolloutSpec:
    """A canary release of one registered model version behind one gateway route.

    Attributes:
        name: the rollout's name (its state and audit trail live under LLMOPS_HOME/rollouts/<name>/).
        model: the registered model name, which is also the gateway route's model name.
        candidate: the registry version (`"3"`) or alias to roll out.
        stable_deployment, canary_deployment: deployment names in the gateway route.
        canary_url: where the canary engine listens; if the route lacks the canary deployment,
            it is added with weight 0 at start.
        steps: what to do, in order (SetWeight, Pause). After the last step the canary is promoted.
        metrics: the background analysis, measured from the first step until the end.
        hooks: webhooks (Python callables are given to the controller instead).
        on_restart: what a controller that finds this rollout mid-way does: `resume` or `abort`.
    """

    name: str
    model: str
    candidate: str
    stable_deployment: str
    canary_deployment: str
    steps: tuple[Step, ...]
    metrics: tuple[MetricSpec, ...] = ()
    canary_url: str | None = None
    hooks: tuple[HookSpec, ...] = ()
    on_restart: str = "resume"

    def __post_init__(self) -> None:
        for attribute in ("name", "model", "stable_deployment", "canary_deployment"):
            value = getattr(self, attribute)
            if not isinstance(value, str) or not _NAME.match(value):
                raise SpecError(f"rollout {attribute} {value!r} must be lower-case letters, digits, '.', '_' or '-'")
        object.__setattr__(self, "candidate", str(self.candidate or "").strip())
        if not self.candidate:
            raise SpecError(
                f"rollout {self.name!r}: candidate is missing: give the registry version (e.g. '3') to roll out"
            )
        if self.stable_deployment == self.canary_deployment:
            raise SpecError(f"rollout {self.name!r}: stable and canary must be different deployments")
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if not self.steps:
            raise SpecError(f"rollout {self.name!r} has no steps: give at least one setWeight")
        for step in self.steps:
            if not isinstance(step, (SetWeight, Pause)):
                raise SpecError(f"rollout {self.name!r}: step {step!r} is neither setWeight nor pause")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise SpecError(f"rollout {self.name!r}: metric names must be unique, got {names}")
        if self.on_restart not in ON_RESTART:
            raise SpecError(
                f"rollout {self.name!r}: onRestart {self.on_restart!r} is unknown; use one of {', '.join(ON_RESTART)}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutSpec:
        """Build from Argo-like data (YAML/JSON); unknown keys are refused so typos do not pass silently."""
        data = _snake_keys(dict(data))
        allowed = {"name", "model", "candidate", "stable", "canary", "steps", "analysis", "hooks", "on_restart"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpecError(f"rollout has unknown keys {unknown}; accepted: {', '.join(sorted(allowed))}")
        stable, canary = data.get("stable") or {}, data.get("canary") or {}
        try:
            return cls(
                name=data.get("name", ""),
                model=data.get("model", ""),
                candidate=canary.get("version", data.get("candidate", "")),
                stable_deployment=stable.get("deployment", "stable"),
                canary_deployment=canary.get("deployment", "canary"),
                canary_url=canary.get("url"),
                steps=tuple(_step(step, i) for i, step in enumerate(data.get("steps") or [])),
                metrics=tuple(_metric(m) for m in (data.get("analysis") or {}).get("metrics") or []),
                hooks=tuple(_hook(h) for h in data.get("hooks") or []),
                on_restart=data.get("on_restart", "resume"),
            )
        except TypeError as exc:  # an unknown field of a metric or hook
            raise SpecError(f"rollout spec: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The spec as Argo-style data (camelCase keys, metric fields left at their defaults omitted);
        `from_dict(to_dict())` round-trips, and the state file keeps it in this form."""
        defaults = {f.name: f.default for f in fields(MetricSpec)}
        metrics = [
            {
                _camel(k): v
                for k, v in asdict(m).items()
                if k in ("name", "provider", "query", "interval_s") or v != defaults[k]
            }
            for m in self.metrics
        ]
        steps = [
            {"setWeight": s.weight}
            if isinstance(s, SetWeight)
            else {"pause": {} if s.duration_s is None else {"duration": f"{s.duration_s:g}s"}}
            for s in self.steps
        ]
        return {
            "name": self.name,
            "model": self.model,
            "stable": {"deployment": self.stable_deployment},
            "canary": {
                "version": self.candidate,
                "deployment": self.canary_deployment,
                **({"url": self.canary_url} if self.canary_url else {}),
            },
            "steps": steps,
            "analysis": {
                "metrics": [
                    {k: v for k, v in m.items() if k != "intervalS"} | {"interval": f"{m['intervalS']:g}s"}
                    for m in metrics
                ]
            },
            **(
                {"hooks": [{"type": h.kind, "url": h.url, "timeout": f"{h.timeout_s:g}s"} for h in self.hooks]}
                if self.hooks
                else {}
            ),
            **({"onRestart": self.on_restart} if self.on_restart != "resume" else {}),
        }

    def weight_after(self, step_index: int) -> int:
        """The canary weight once steps[0..step_index] have run (0 before any setWeight)."""
        weights = [s.weight for s in self.steps[: step_index + 1] if isinstance(s, SetWeight)]
        return weights[-1] if weights else 0


def _step(step: object, index: int) -> Step:
    if not isinstance(step, Mapping) or len(step) != 1:
        raise SpecError(
            f"step {index}: each step is one of {{setWeight: N}} or {{pause: {{duration: 30s}}}}, got {step!r}"
        )
    ((kind, value),) = step.items()
    if kind == "set_weight":
        return SetWeight(value)
    if kind == "pause":
        value = value or {}
        if not isinstance(value, Mapping) or set(value) - {"duration"}:
            raise SpecError(f"step {index}: pause takes only a duration, got {value!r}")
        return Pause(value.get("duration"))
    raise SpecError(f"step {index}: unknown step {kind!r}; use setWeight or pause")


def _metric(data: object) -> MetricSpec:
    if not isinstance(data, Mapping):
        raise SpecError(f"each analysis metric is a mapping, got {data!r}")
    data = dict(data)
    if "interval" in data:
        data["interval_s"] = data.pop("interval")
    return MetricSpec(**data)


def _hook(data: object) -> HookSpec:
    if not isinstance(data, Mapping):
        raise SpecError(f"each hook is a mapping {{type, url}}, got {data!r}")
    data = dict(data)
    return HookSpec(
        kind=data.pop("type", data.pop("kind", "")),
        **({"timeout_s": data.pop("timeout")} if "timeout" in data else {}),
        **data,
    )


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
    return RolloutSpec.from_dict(data)


def steps_from_text(text: str) -> tuple[Step, ...]:
    """Steps from a compact string for runbook parameters: `"20,pause:10s,50,pause:10s,pause"`."""
    steps: list[Step] = []
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
