"""How far a deployment has come on the road "start small": one measurable check per level.

The order is the one operators learn the hard way: first see what happens (monitoring and
logging), then make the prompt a versioned artifact (prompt version control), then judge answers
and gate releases on that judgement (quality evaluation), and only then make it cheaper or faster
(advanced optimization). Each level is one check on the *running* system, made of the parts of
this library that implement it, and a level counts only when every level below it holds too:

1. **Monitoring and logging**: the gateway answers `/health`; every metric the alert rules
   (`deploy/alerts.yml`, `observe.alerting`) select is exposed on its `/metrics`; its request log
   holds requests with latency and cost.
2. **Prompt version control**: a prompt in the prompt registry has a `production` alias, and the
   gateway has served requests by reference (the log names the version).
3. **Quality evaluation**: users' feedback reaches the request log, and releases are gated on
   quality: a rollout spec with an `evaluation` or `feedback_score` metric, or evaluations logged
   in the tracking store.
4. **Advanced optimization**: the model registry's `stable` version of a route's model is served
   with a serving optimization in its engine spec (speculative decoding, a quantized KV cache, a
   vLLM weight quantization).

`check()` only reads: the gateway over HTTP, the request log read-only, the registries (a SQLite
store that does not exist yet is an empty one, not created).

Explained in: book/chapters/08_roadmap/start_small.ipynb
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmops_lib.errors import LLMOpsError
from llmops_lib.gateway.config import GatewayConfig, load_config
from llmops_lib.mlflow_store import mlflow_client, registry_uri
from llmops_lib.observe import alerting
from llmops_lib.observe.request_log import RequestLogReader
from llmops_lib.prompts.template import DEFAULT_ALIAS
from llmops_lib.release.conditions import FEEDBACK_QUERY
from llmops_lib.release.rollout import load_rollout

#: the sample-name suffixes a family's samples carry (a rule may select `x_bucket` of histogram `x`)
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
#: the registry alias of the version in production (the release controller moves it)
STABLE = "stable"


@dataclass(frozen=True)
class Level:
    """One rung of the roadmap: its name, its one check in words, and who owns it."""

    number: int
    name: str
    check: str
    owner: str


LEVELS: tuple[Level, ...] = (
    Level(
        1,
        "monitoring and logging",
        "the gateway is healthy, exposes every series the alert rules select, and logs requests with latency and cost",
        "platform / SRE",
    ),
    Level(
        2,
        "prompt version control",
        f"a registered prompt has a `{DEFAULT_ALIAS}` alias and the gateway serves prompts by reference",
        "application developers with product",
    ),
    Level(
        3,
        "quality evaluation",
        "user feedback reaches the request log and releases are gated on quality",
        "ML engineers with domain experts",
    ),
    Level(
        4,
        "advanced optimization",
        f"the `{STABLE}` model version is served optimized (speculative decoding, KV-cache or weight quantization)",
        "inference engineers",
    ),
)


@dataclass(frozen=True)
class Requirement:
    """One part of a level's check: passed or not, and what was found (or what to do)."""

    name: str
    passed: bool
    evidence: str


@dataclass(frozen=True)
class LevelCheck:
    """A level and the requirements its check is made of; it passes when all of them do."""

    level: Level
    requirements: tuple[Requirement, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.requirements)


@dataclass(frozen=True)
class MaturityReport:
    """The level reached (0: not even level 1), every check with its evidence, and what the next level lacks."""

    level: int
    checks: tuple[LevelCheck, ...]
    sources: dict[str, str] = field(default_factory=dict)  # what was inspected: gateway, log, registry…

    @property
    def missing(self) -> list[str]:
        """What the next level lacks (empty at the top)."""
        nxt = next((c for c in self.checks if c.level.number == self.level + 1), None)
        return [f"{r.name}: {r.evidence}" for r in nxt.requirements if not r.passed] if nxt else []

    def rows(self) -> list[dict[str, object]]:
        """One row per requirement, for a table."""
        return [
            {
                "level": f"{c.level.number} {c.level.name}",
                "requirement": r.name,
                "passed": r.passed,
                "evidence": r.evidence,
            }
            for c in self.checks
            for r in c.requirements
        ]

    def as_dict(self) -> dict[str, object]:
        return {"level": self.level, "missing": self.missing, "sources": self.sources, "checks": self.rows()}


# --- level 1 ----------------------------------------------------------------------------------


def _families(exposition: str) -> set[str]:
    """Every metric family a Prometheus exposition declares, even one with no sample yet (a labelled
    counter nothing has incremented still has its HELP and TYPE lines)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name for family in text_string_to_metric_families(exposition)}


def _exposed(metric: str, families: set[str]) -> bool:
    return metric in families or any(metric.endswith(s) and metric[: -len(s)] in families for s in _SUFFIXES)


def _gateway(
    url: str | None, rules: tuple[Path, list[alerting.AlertRule]] | None, timeout_s: float
) -> list[Requirement]:
    import httpx

    if url is None:
        return [Requirement("gateway", False, "no gateway URL given: pass the running gateway's URL (--url)")]
    try:
        health = httpx.get(url.rstrip("/") + "/health", timeout=timeout_s)
        exposition = httpx.get(url.rstrip("/") + "/metrics", timeout=timeout_s).text
    except httpx.HTTPError as exc:
        return [Requirement("gateway", False, f"{url} does not answer ({type(exc).__name__}): start `llmops gateway`")]
    found = [Requirement("gateway", health.status_code == 200, f"{url}/health answered {health.status_code}")]
    if rules is None:
        return [*found, Requirement("alert rules", False, "no deploy/alerts.yml found: give the rule file (--alerts)")]
    rules_path, rules = rules
    families = _families(exposition)
    unknown = sorted({s.metric for r in rules for s in r.selectors if not _exposed(s.metric, families)})
    evidence = (
        f"{len(rules)} rules in {rules_path.name}, every metric they select is on /metrics"
        if not unknown
        else f"rules select metrics /metrics lacks: {', '.join(unknown)} (an alert on them never fires)"
    )
    return [*found, Requirement("alert rules", not unknown, evidence)]


def _request_log(reader: RequestLogReader) -> list[Requirement]:
    if not reader.exists():
        return [Requirement("request log", False, f"no request log at {reader.path}: send traffic through the gateway")]
    rows = reader.rows()
    timed = sum(r["latency_s"] is not None for r in rows)
    costed = sum(r["cost_usd"] is not None for r in rows)
    return [
        Requirement(
            "requests logged with latency", timed > 0, f"{timed} of {len(rows)} logged requests have a latency"
        ),
        Requirement(
            "requests logged with cost",
            costed > 0,
            f"{costed} of {len(rows)} logged requests have a cost"
            + ("" if costed else " (give the gateway `prices` per deployment)"),
        ),
    ]


# --- level 2 ----------------------------------------------------------------------------------


def _store_exists(uri: str) -> bool:
    """A SQLite store that does not exist is empty: opening it would create it, and a check writes nothing."""
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).is_file()


def _prompts(uri: str, reader: RequestLogReader) -> list[Requirement]:
    from llmops_lib.prompts.registry import PromptRegistry

    aliased: list[str] = []
    if _store_exists(uri):
        registry = PromptRegistry(uri)
        aliased = [
            f"{n}@{DEFAULT_ALIAS} = v{a[DEFAULT_ALIAS]}"
            for n in registry.list()
            if DEFAULT_ALIAS in (a := registry.aliases(n))
        ]
    served = [r for r in reader.rows() if r["prompt_name"] is not None] if reader.exists() else []
    names = sorted({f"{r['prompt_name']} v{r['prompt_version']}" for r in served})
    return [
        Requirement(
            "prompt in production",
            bool(aliased),
            ", ".join(aliased) if aliased else f"no prompt with a `{DEFAULT_ALIAS}` alias: `llmops prompt register`",
        ),
        Requirement(
            "served by reference",
            bool(served),
            f"{len(served)} requests named a prompt ({', '.join(names)})"
            if served
            else "no logged request named a registered prompt: send {prompt: {id, variables}}",
        ),
    ]


# --- level 3 ----------------------------------------------------------------------------------


def _quality(uri: str, reader: RequestLogReader, rollouts: Sequence[str | Path]) -> list[Requirement]:
    feedback = reader.feedback_rows() if reader.exists() else []
    gates = [
        f"{Path(path).name}: {m.name} ({m.query})"
        for path in rollouts
        for m in load_rollout(path).metrics
        if m.provider == "evaluation" or m.query == FEEDBACK_QUERY
    ]
    if _store_exists(uri):
        from llmops_lib.evals.tracking import EXPERIMENT

        client = mlflow_client(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None and (runs := client.search_runs([experiment.experiment_id], max_results=1000)):
            gates.append(f"{len(runs)} evaluation runs in experiment {EXPERIMENT!r}")
    return [
        Requirement(
            "feedback recorded",
            bool(feedback),
            f"{len(feedback)} feedback rows in the request log"
            if feedback
            else "no feedback in the request log: POST /v1/feedback {request_id, score}",
        ),
        Requirement(
            "release gated on quality",
            bool(gates),
            "; ".join(gates)
            if gates
            else "no rollout spec with an evaluation metric (see deploy/rollouts/eval_gated.yaml, --rollout) "
            "and no evaluation logged",
        ),
    ]


# --- level 4 ----------------------------------------------------------------------------------


def optimizations(engine_spec: dict) -> list[str]:
    """The Part 2 optimizations an engine spec (as the model registry keeps it) turns on."""
    found = []
    if engine_spec.get("spec_type") or engine_spec.get("draft_model"):
        found.append(f"speculative decoding ({engine_spec.get('spec_type') or 'draft model'})")
    kv = {engine_spec.get("cache_type_k", "f16"), engine_spec.get("cache_type_v", "f16")} - {"f16"}
    if kv or engine_spec.get("kv_cache_dtype", "auto") != "auto":
        found.append(f"quantized KV cache ({', '.join(sorted(kv)) or engine_spec['kv_cache_dtype']})")
    if engine_spec.get("quantization"):
        found.append(f"weight quantization ({engine_spec['quantization']})")
    return found


def _optimized(uri: str, config: GatewayConfig) -> list[Requirement]:
    from llmops_lib.release.registry import Registry

    stable: list[str] = []
    if _store_exists(uri):
        registry = Registry(uri)
        for model in sorted({route.model for route in config.routes}):
            if STABLE in registry.aliases(model):
                record = registry.get(model, STABLE)
                stable.append(f"{model} v{record.version}: " + (", ".join(optimizations(record.engine_spec)) or "none"))
    passed = any(not text.endswith(": none") for text in stable)
    evidence = "; ".join(stable) if stable else f"no route's model has a `{STABLE}` version in the model registry"
    return [Requirement("optimized stable version", passed, evidence)]


# --- the report -------------------------------------------------------------------------------


def check(
    gateway_config: str | Path | GatewayConfig,
    *,
    url: str | None = None,
    rollouts: Sequence[str | Path] = (),
    alert_rules: str | Path | None = None,
    tracking_uri: str | None = None,
    timeout_s: float = 5.0,
) -> MaturityReport:
    """Inspect a running deployment and report the level it has reached.

    Args:
        gateway_config: the gateway's configuration (a YAML path or the object): its request log and routes.
        url: where that gateway listens (without /v1); None fails level 1 (nothing to ask).
        rollouts: the deployment's rollout specs (YAML), read for a quality gate.
        alert_rules: the Prometheus rule file; default `deploy/alerts.yml` found from the working folder.
        tracking_uri: the MLflow store of both registries and evaluations (default `registry_uri()`).

    Raises:
        SpecError: a configuration, rollout spec or rule file that does not load (the message names it).
    """
    config = gateway_config if isinstance(gateway_config, GatewayConfig) else load_config(gateway_config)
    for path in rollouts:
        load_rollout(path)  # a bad spec is an error of the caller, never a silently failed level
    try:
        rules_path: Path | None = Path(alert_rules) if alert_rules is not None else alerting.find_rules()
    except LLMOpsError:
        rules_path = None  # no rule file where the default looks: level 1 says so
    rules = (rules_path, alerting.load_rules(rules_path)) if rules_path is not None else None
    uri = tracking_uri or registry_uri()
    reader = RequestLogReader(config.request_log)
    parts: dict[int, Callable[[], list[Requirement]]] = {
        1: lambda: _gateway(url, rules, timeout_s) + _request_log(reader),
        2: lambda: _prompts(uri, reader),
        3: lambda: _quality(uri, reader, rollouts),
        4: lambda: _optimized(uri, config),
    }
    checks = tuple(LevelCheck(level, tuple(parts[level.number]())) for level in LEVELS)
    reached = 0
    for c in checks:
        if not c.passed:
            break
        reached = c.level.number
    sources = {"gateway": url or "—", "request log": str(reader.path), "registry": uri, "alert rules": str(rules_path)}
    return MaturityReport(reached, checks, sources)
