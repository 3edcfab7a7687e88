"""Evaluation results in MLflow: each run logged on the model or prompt version it evaluated, MLflow's own
evaluator (`mlflow.genai.evaluate`) driven by our scorers, and traces of calls made to the gateway.

- `log_evaluation` writes one MLflow run (params, score with its interval, the per-sample table as a
  JSON artifact) in the experiment `evaluations` of the project's store (`mlflow_store.registry_uri()`),
  and tags the registered model version or prompt version it evaluated with `llmops.eval.<task>` (the
  score) and `llmops.eval.<task>.run` (the run id), so the registry itself shows what a version scored.
  The subject is checked before anything is written; a run that fails half-way is deleted and the
  version's tags are restored, so no half-written evaluation survives.
- `genai_evaluate` runs MLflow's evaluator with our scorer wrapped as an MLflow `@scorer`: the same
  outputs give the same score as `run_cases`, so MLflow's evaluation UI can stand beside ours.
- `traced` switches on MLflow's tracing of the official OpenAI client (`mlflow.openai.autolog`) for a
  block of code and hands back its traces: one per call, with token usage on chat calls.

MLflow is imported on first use (`mlflow_store.mlflow_client` switches its telemetry off first).
Explained in: book/chapters/05_quality/evaluation
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmops_lib.bench.stats import Interval
from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.evals.run import EvalRun
from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import Case, Task, load_task
from llmops_lib.mlflow_store import mlflow_client, registry_uri

if TYPE_CHECKING:
    from mlflow.entities import Trace

EXPERIMENT = "evaluations"
#: Prefix of the tags an evaluation leaves on the model or prompt version it evaluated.
TAG = "llmops.eval."
#: The subjects a run can be about: the name key and the key of its version (a number or an alias).
SUBJECTS = {"model": "model_version", "prompt": "prompt_version"}
#: What MLflow accepts as a param name (the subject's keys become params of the run).
LABEL = re.compile(r"[\w.\-/ ]{1,250}")


class Sampled(Protocol):
    """What `log_evaluation` reads from a harness result (`evals.harness.HarnessResult`)."""

    harness: str
    task: str
    score: float
    n: int
    interval: Interval
    samples: Sequence[Any]  # each with id, output, score


@dataclass(frozen=True)
class Subject:
    """The registered version an evaluation is about, its version resolved to a number."""

    kind: str  # "model" or "prompt"
    name: str
    version: str


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where an experiment's artifacts go: beside a SQLite store (MLflow's default is `./mlruns` in
    whatever folder Python runs in), a server's own default otherwise (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / experiment).resolve().as_uri()


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name` in the client's store, created (artifacts beside the store) if new."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name))


def resolve_subject(client: Any, subject: Mapping[str, str]) -> Subject | None:
    """The model or prompt version `subject` names, checked to exist (None when it names neither).

    Raises:
        SpecError: a version without its name or the reverse, both a model and a prompt, or a version
            the registry does not have (the message names it and lists the versions there are).
    """
    from mlflow.exceptions import MlflowException

    for key in subject:
        if not LABEL.fullmatch(key):
            raise SpecError(f"bad subject key {key!r}: use letters, digits, '_', '-', '.', '/' and spaces")
    named = [kind for kind in SUBJECTS if kind in subject]
    for kind, version_key in SUBJECTS.items():
        if (kind in subject) != (version_key in subject):
            raise SpecError(f"the subject names {kind!r} and {version_key!r} together: got {dict(subject)}")
    if not named:
        return None
    if len(named) > 1:
        raise SpecError(f"an evaluation is about one model version or one prompt version, not both: {dict(subject)}")
    kind = named[0]
    name, version = str(subject[kind]), str(subject[SUBJECTS[kind]])
    try:
        if kind == "model":
            found = (
                client.get_model_version(name, version)
                if version.isdigit()
                else client.get_model_version_by_alias(name, version)
            )
        else:
            found = (
                client.get_prompt_version(name, int(version))
                if version.isdigit()
                else client.get_prompt_version_by_alias(name, version)
            )
    except MlflowException:
        found = None
    if found is None:
        raise SpecError(
            f"{kind} {name!r} has no version or alias {version!r} in the registry at {client.tracking_uri} "
            f"(versions: {_versions(client, kind, name)}): evaluate a registered version, or register it first"
        )
    return Subject(kind, name, str(found.version))


def _versions(client: Any, kind: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        found = (
            client.search_model_versions(f"name = '{name}'")
            if kind == "model"
            else client.search_prompt_versions(name, max_results=1000)
        )
    except MlflowException:
        found = []
    return ", ".join(f"v{v}" for v in sorted(int(v.version) for v in found)) or "none"


def _summary(result: EvalRun | Sampled) -> tuple[str, str, float, int, Interval, list[dict[str, Any]]]:
    """(harness, task, score, n, interval, samples) of either kind of result."""
    if isinstance(result, EvalRun):
        samples = [
            {"id": r.case_id, "output": r.output, "score": r.score, "latency_s": r.latency_s} for r in result.rows
        ]
        return "builtin", result.task, result.accuracy, len(result.rows), result.interval(), samples
    samples = [{"id": s.id, "output": s.output, "score": s.score} for s in result.samples]
    return result.harness, result.task, result.score, result.n, result.interval, samples


def log_evaluation(
    result: EvalRun | Sampled,
    *,
    subject: Mapping[str, str],
    experiment: str = EXPERIMENT,
    split: str = "test",
    endpoint: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log one evaluation as an MLflow run and tag the version it evaluated; returns the run id.

    Args:
        result: an `EvalRun` (`run_cases`) or a harness result (`evals.harness.HarnessResult`).
        subject: `{"model": name, "model_version": "3"}` or `{"prompt": name, "prompt_version": "2"}`
            (a version may be an alias: the number it points at is logged); other keys are labels
            logged as params (e.g. `{"serving": "Q8_0"}`).
        split, endpoint: what was evaluated where (params of the run).
        tracking_uri: the MLflow store (default: the project's, `mlflow_store.registry_uri()`).

    Raises:
        SpecError: a subject that names no registered version (nothing is logged).
        LLMOpsError: MLflow refused part of the run (the run is deleted, the version's tags restored).
    """
    harness, task, value, n, interval, samples = _summary(result)
    client = mlflow_client(tracking_uri or registry_uri())
    target = resolve_subject(client, subject)
    params = {"task": task, "split": split, "harness": harness, **{k: str(v) for k, v in subject.items()}}
    if target is not None:
        params[f"{target.kind}_version"] = target.version
    if endpoint:
        params["endpoint"] = endpoint
    metrics = {"score": value, "ci_low": interval.low, "ci_high": interval.high, "n": float(n)}
    from mlflow.entities import Metric, Param, RunStatus

    run_name = f"{task} · {harness}" + (f" · {target.name} v{target.version}" if target else "")
    run_id = client.create_run(experiment_id(client, experiment), run_name=run_name).info.run_id
    restore: dict[str, str | None] = {}
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.log_text(run_id, json.dumps(samples, ensure_ascii=False, indent=1), "samples.json")
        if target is not None:
            tags = {f"{TAG}{task}.run": run_id, f"{TAG}{task}": repr(float(value))}
            current = _version_tags(client, target)
            restore = {key: current.get(key) for key in tags}
            _set_version_tags(client, target, tags)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except BaseException as exc:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        client.delete_run(run_id)
        if target is not None:
            _set_version_tags(client, target, restore)
        if isinstance(exc, Exception) and not isinstance(exc, LLMOpsError):
            raise LLMOpsError(
                f"MLflow at {client.tracking_uri} refused the evaluation run ({getattr(exc, 'message', exc)}); "
                "nothing was kept"
            ) from exc
        raise
    return run_id


def _version_tags(client: Any, target: Subject) -> dict[str, str]:
    if target.kind == "model":
        return client.get_model_version(target.name, target.version).tags or {}
    return client.get_prompt_version(target.name, int(target.version)).tags or {}


def _set_version_tags(client: Any, target: Subject, tags: Mapping[str, str | None]) -> None:
    """Set each tag on the version (None: delete it)."""
    model = target.kind == "model"
    version = target.version if model else int(target.version)
    for key, value in tags.items():
        if value is None:
            delete = client.delete_model_version_tag if model else client.delete_prompt_version_tag
            delete(target.name, version, key)
        else:
            put = client.set_model_version_tag if model else client.set_prompt_version_tag
            put(target.name, version, key, value)


@dataclass(frozen=True)
class GenaiResult:
    """MLflow's evaluation of one task: its mean score, each case's score (case order), its run and wall time."""

    score: float
    scores: tuple[float, ...]
    run_id: str
    seconds: float


def _fluent(tracking_uri: str | None, experiment: str) -> str:
    """Point MLflow's module-level API (which `genai.evaluate` and tracing use) at the store and the
    experiment, as `mlflow.set_tracking_uri` and `mlflow.set_experiment` do; returns the experiment id."""
    client = mlflow_client(tracking_uri or registry_uri())
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    found = experiment_id(client, experiment)
    mlflow.set_experiment(experiment_id=found)
    return found


#: rows `genai.evaluate` runs at once. MLflow's default (10, plus 10 scorer threads) exhausts the SQLite
#: store's connection pool on ~60 rows (measured: "QueuePool limit of size 5 overflow 10 reached", the
#: traces of those rows dropped, so their scores missing from the result).
GENAI_WORKERS = 2


@contextmanager
def _workers(count: int) -> Iterator[None]:
    """MLflow's evaluation thread counts (read from the environment when it runs) set for one call."""
    names = ("MLFLOW_GENAI_EVAL_MAX_WORKERS", "MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(count) for name in names})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def genai_evaluate(
    task: str | Task,
    cases: Sequence[Case],
    predict: Callable[[str], str],
    *,
    experiment: str = EXPERIMENT,
    tracking_uri: str | None = None,
) -> GenaiResult:
    """Score `predict` on `cases` with `mlflow.genai.evaluate`, our scorer as its `@scorer`.

    `predict` gets each case's reference prompt (`Task.render`) and returns the model's output;
    MLflow calls it from its own thread pool and traces each call (its per-row table is read from
    those traces: with tracing off, measured here, the run is barely faster and the table is empty).
    """
    loaded = load_task(task) if isinstance(task, str) else task
    if not cases:
        raise SpecError(f"no cases to evaluate for task {loaded.name!r}: pass at least one case")
    by_id = {case.id: case for case in cases}
    if len(by_id) != len(cases):
        raise SpecError(f"case ids repeat in the cases given for {loaded.name!r}: each case once")
    _fluent(tracking_uri, experiment)
    import mlflow
    from mlflow.genai.scorers import scorer

    @scorer(name=loaded.name)
    def task_score(outputs: str, expectations: dict[str, Any]) -> float:
        return score(loaded, by_id[expectations["case_id"]], outputs)

    @mlflow.trace(name=loaded.name, span_type="LLM")
    def answer(prompt: str) -> str:
        return predict(prompt)

    data = [
        {"inputs": {"prompt": loaded.render(c)}, "expectations": {"case_id": c.id, "expected": c.expected}}
        for c in cases
    ]
    start = time.perf_counter()
    with _workers(GENAI_WORKERS):
        found = mlflow.genai.evaluate(data=data, predict_fn=answer, scorers=[task_score])
    seconds = time.perf_counter() - start
    table = found.result_df
    by_case = dict(zip(table["case_id/value"], table[f"{loaded.name}/value"], strict=True))
    missing = [case.id for case in cases if case.id not in by_case]
    if missing:
        raise LLMOpsError(
            f"MLflow's evaluation kept {len(by_case)} of {len(cases)} rows (first missing: {missing[0]}): "
            "its store refused trace writes; see MLflow's warnings above, then rerun"
        )
    return GenaiResult(
        float(found.metrics[f"{loaded.name}/mean"]),
        tuple(float(by_case[c.id]) for c in cases),
        found.run_id,
        seconds,
    )


@contextmanager
def traced(experiment: str = "gateway-traces", *, tracking_uri: str | None = None) -> Iterator[list[Trace]]:
    """Trace every call the official OpenAI client makes inside the block (e.g. to the gateway).

    Yields a list that holds, once the block ends, the block's traces (`mlflow.entities.Trace`),
    oldest first: one per call, `info.token_usage` filled on chat calls (MLflow reads no usage from
    legacy completions). Tracing is switched off again after the block.
    """
    traces: list[Trace] = []
    found = _fluent(tracking_uri, experiment)
    import mlflow

    start_ms = int(time.time() * 1000)
    mlflow.openai.autolog(log_traces=True)
    try:
        yield traces
    finally:
        mlflow.openai.autolog(disable=True)
        mlflow.flush_trace_async_logging()
        traces += mlflow.search_traces(
            locations=[found],
            filter_string=f"trace.timestamp_ms >= {start_ms}",
            order_by=["timestamp_ms ASC"],
            return_type="list",
        )
