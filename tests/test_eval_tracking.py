"""Evaluations in MLflow on the real engine and a temporary MLflow store: a run logged on the model or
prompt version it evaluated, refused subjects leaving nothing, a run MLflow refuses half-way deleted,
MLflow's `genai.evaluate` agreeing with our scorer, and one trace per gateway call.

Gemma answers completions; SmolLM2 answers chat (Gemma's GGUF has no chat template).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from openai import OpenAI

from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.evals.harness import run_builtin
from llmops_lib.evals.run import Endpoint, EvalRun, run_cases
from llmops_lib.evals.tasks import load_task
from llmops_lib.evals.tracking import EXPERIMENT, genai_evaluate, log_evaluation, traced
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.mlflow_store import mlflow_client
from llmops_lib.prompts.registry import PromptRegistry
from llmops_lib.release.registry import Registry

N = 12


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One store for the module (creating an MLflow database takes seconds); each test its own names."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def capitals(server) -> EvalRun:
    """The reference prompt of `capitals` on the first test cases, through the real engine."""
    task = load_task("capitals")
    with Endpoint(server.base_url, max_tokens=task.reference.max_tokens, stop=task.reference.stop) as endpoint:
        return run_cases(task, task.split("test")[:N], task.render, endpoint.complete, cache=False, progress=False)


@pytest.fixture(scope="module")
def model(uri, model_path) -> str:
    """A registered model with one version (the engine load at registration is not what is tested here)."""
    name = f"gemma-{uuid.uuid4().hex[:6]}"
    registry = Registry(uri)
    registry.register(name, model_path, load_check=lambda path: None)
    registry.set_alias(name, "stable", "1", why="first release", who="test")
    return name


def _active_runs(uri: str) -> list:
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    return [] if found is None else client.search_runs([found.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)


def test_a_run_is_logged_on_the_model_version_it_evaluated(uri, model, capitals):
    run_id = log_evaluation(capitals, subject={"model": model, "model_version": "stable"}, tracking_uri=uri)
    client = mlflow_client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"task": "capitals", "split": "test", "harness": "builtin", "model": model} | {
        "model_version": "1"  # the alias, resolved to the version it pointed at
    }
    metrics = run.data.metrics
    assert metrics["n"] == N and metrics["score"] == capitals.accuracy
    assert metrics["ci_low"] <= metrics["score"] <= metrics["ci_high"]
    samples = json.loads(Path(client.download_artifacts(run_id, "samples.json")).read_text())
    assert [(s["id"], s["output"], s["score"]) for s in samples] == [
        (row.case_id, row.output, row.score) for row in capitals.rows
    ]
    tags = client.get_model_version(model, "1").tags
    assert tags["llmops.eval.capitals"] == repr(capitals.accuracy) and tags["llmops.eval.capitals.run"] == run_id
    assert Registry(uri).get(model, "stable").version == "1"  # the registry still reads its version


def test_a_harness_result_is_logged_on_the_prompt_version_it_evaluated(uri, server, tmp_path):
    task = load_task("sentiment")
    prompts = PromptRegistry(uri)
    name = f"sentiment-{uuid.uuid4().hex[:6]}"
    prompts.register(name, task.reference.template, commit_message="the reference few-shot prompt")
    result = run_builtin("sentiment", server.base_url, limit=8, num_concurrent=1, output_dir=tmp_path)
    run_id = log_evaluation(
        result, subject={"prompt": name, "prompt_version": "1"}, endpoint=server.base_url, tracking_uri=uri
    )
    run = mlflow_client(uri).get_run(run_id)
    assert run.data.params["harness"] == "builtin" and run.data.params["endpoint"] == server.base_url
    assert run.data.metrics["n"] == 8 and run.data.metrics["score"] == result.score
    assert prompts.load(f"{name}/1").tags == {
        "llmops.eval.sentiment": repr(result.score),
        "llmops.eval.sentiment.run": run_id,
    }


@pytest.mark.parametrize(
    "subject, named",
    [
        ({"model": "{model}", "model_version": "9"}, "'9'"),
        ({"model": "no-such-model", "model_version": "1"}, "'no-such-model'"),
        ({"prompt": "no-such-prompt", "prompt_version": "1"}, "'no-such-prompt'"),
        ({"model_version": "1"}, "'model'"),
        ({"model": "{model}", "model_version": "1", "bad key?": "x"}, "bad subject key 'bad key"),
        ({"model": "{model}", "model_version": "1", "prompt": "p", "prompt_version": "1"}, "not both"),
    ],
)
def test_a_subject_naming_no_registered_version_is_refused_and_nothing_is_logged(uri, model, capitals, subject, named):
    before = len(_active_runs(uri))
    tags = mlflow_client(uri).get_model_version(model, "1").tags
    subject = {k: v.format(model=model) for k, v in subject.items()}
    with pytest.raises(SpecError, match=named):
        log_evaluation(capitals, subject=subject, tracking_uri=uri)
    assert len(_active_runs(uri)) == before
    assert mlflow_client(uri).get_model_version(model, "1").tags == tags


def test_a_run_that_fails_half_way_is_deleted_and_the_version_keeps_its_tags(uri, model, capitals, tmp_path):
    log_evaluation(capitals, subject={"model": model, "model_version": "1"}, tracking_uri=uri)
    tags = mlflow_client(uri).get_model_version(model, "1").tags
    in_the_way = tmp_path / "artifacts"
    in_the_way.write_text("a file where the experiment's artifact folder should be")
    experiment = f"broken-{uuid.uuid4().hex[:6]}"
    client = mlflow_client(uri)
    client.create_experiment(experiment, artifact_location=in_the_way.as_uri())
    with pytest.raises(LLMOpsError, match="nothing was kept"):
        log_evaluation(
            capitals, subject={"model": model, "model_version": "1"}, experiment=experiment, tracking_uri=uri
        )
    found = client.get_experiment_by_name(experiment).experiment_id
    assert client.search_runs([found], run_view_type=ViewType.ACTIVE_ONLY) == []
    assert [r.info.status for r in client.search_runs([found], run_view_type=ViewType.DELETED_ONLY)] == ["FAILED"]
    assert client.get_model_version(model, "1").tags == tags


def test_mlflow_genai_evaluate_with_our_scorer_scores_the_same_outputs_alike(uri, capitals):
    task = load_task("capitals")
    cases = task.split("test")[:N]
    answers = {task.render(case): row.output for case, row in zip(cases, capitals.rows, strict=True)}
    found = genai_evaluate(task, cases, answers.__getitem__, tracking_uri=uri)
    assert 0 < capitals.accuracy < 1, "a sample with right and wrong answers, so agreement means something"
    assert found.scores == tuple(capitals.scores) and found.score == capitals.accuracy
    assert mlflow_client(uri).get_run(found.run_id).data.metrics["capitals/mean"] == capitals.accuracy


@pytest.fixture(scope="module")
def gateway(server, chat_server, tmp_path_factory):
    routes = [
        Route(model=name, deployments=[Deployment(name=name, url=engine.base_url)])
        for name, engine in (("gemma", server), ("smollm2", chat_server))
    ]
    config = GatewayConfig(routes=routes, request_log=str(tmp_path_factory.mktemp("gw") / "requests.sqlite"))
    with GatewayServer(config) as gw:
        yield OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0, timeout=120)


def test_each_gateway_call_made_with_the_openai_client_is_one_trace_chat_with_its_token_usage(uri, gateway):
    experiment = f"traces-{uuid.uuid4().hex[:6]}"
    with traced(experiment, tracking_uri=uri) as traces:
        gateway.completions.create(model="gemma", prompt="The capital of France is", max_tokens=4, temperature=0)
        chat = gateway.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=6, temperature=0
        )
    assert len(traces) == 2
    completion_trace, chat_trace = traces
    assert chat_trace.info.token_usage["input_tokens"] == chat.usage.prompt_tokens
    assert chat_trace.info.token_usage["output_tokens"] == chat.usage.completion_tokens
    assert [s.span_type for s in completion_trace.data.spans] == ["LLM"]
    assert [s.span_type for s in chat_trace.data.spans] == ["CHAT_MODEL"]
    gateway.completions.create(model="gemma", prompt="Tracing is off now", max_tokens=2)
    client = mlflow_client(uri)
    assert len(client.search_traces(locations=[client.get_experiment_by_name(experiment).experiment_id])) == 2
