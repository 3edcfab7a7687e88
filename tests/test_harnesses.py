"""The field's harnesses live on the real Gemma engine: lm-eval direct and through the gateway, Inspect AI
and the built-in runner on the same cases agree sample by sample; bad input is one line and exit 2.

The harnesses check one another: lm-eval renders the prompt from its task YAML with its own Jinja, and
lm-eval, Inspect and the built-in runner each call the endpoint with their own client, so equal outputs
and scores are not the library agreeing with itself. 20 capitals cases keep the file short.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmops_lib.cli import app
from llmops_lib.evals import scorers
from llmops_lib.evals.harness import HarnessResult, run_builtin, run_inspect, run_lm_eval
from llmops_lib.evals.tasks import load_task
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.observe.request_log import RequestLogReader

LIMIT = 20


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    """A gateway with one route `gemma` to the engine, no response cache (every case reaches the engine)."""
    log = tmp_path_factory.mktemp("gw") / "requests.sqlite"
    route = Route(model="gemma", deployments=[Deployment(name="a", url=server.base_url)])
    with GatewayServer(GatewayConfig(routes=[route], request_log=str(log), cache_size=0)) as gw:
        yield gw, log


@pytest.fixture(scope="module")
def runs(server, gateway, tmp_path_factory) -> dict[str, HarnessResult]:
    """lm-eval direct and through the gateway, Inspect and the built-in runner on the same cases.

    One after another, one request in flight: llama-server's output at temperature 0 depends on which
    requests share a batch (measured: run side by side, one case came back " San Pedro" in one harness
    and " Belize City" in another), so identical samples need identical batching.
    """
    folder = tmp_path_factory.mktemp("runs")
    jobs = {
        "direct": (run_lm_eval, server.base_url, "default"),
        "gateway": (run_lm_eval, gateway[0].base_url, "gemma"),
        "inspect": (run_inspect, server.base_url, "default"),
        "builtin": (run_builtin, server.base_url, "default"),
    }
    return {
        name: run("capitals", url, model, limit=LIMIT, num_concurrent=1, output_dir=folder / name)
        for name, (run, url, model) in jobs.items()
    }


def outputs(result) -> list[tuple[str, str, float]]:
    return [(sample.id, sample.output, sample.score) for sample in result.samples]


def test_lm_eval_sends_the_reference_prompt_and_scores_with_our_scorer(runs):
    direct = runs["direct"]
    task = load_task("capitals")
    cases = task.split("test")[:LIMIT]
    assert [sample.id for sample in direct.samples] == [case.id for case in cases] and direct.n == LIMIT
    logged = {}
    for path in (direct.output_dir / "lm_eval").rglob("samples_*.jsonl"):
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            logged[sample["doc"]["id"]] = sample["arguments"]["gen_args_0"]
    for case, sample in zip(cases, direct.samples, strict=True):
        prompt, generation = logged[case.id]["arg_0"], logged[case.id]["arg_1"]
        assert prompt == task.render(case)
        assert generation["until"] == ["\n"] and generation["max_gen_toks"] == 8 and generation["temperature"] == 0
        assert sample.score == scorers.score(task, case, sample.output)
    # lm-eval's own aggregate (its results file) is the mean of the per-sample scores
    assert direct.reported["score"] == pytest.approx(direct.score)
    assert 0 < direct.score < 1  # the base model gets some capitals wrong: the comparisons below can fail


def test_lm_eval_through_the_gateway_gives_identical_samples(runs, gateway):
    assert outputs(runs["gateway"]) == outputs(runs["direct"])
    assert runs["gateway"].score == runs["direct"].score
    assert len(served_rows(gateway[1])) == LIMIT  # every case went through the gateway to the engine, once


def served_rows(log, wait_s: float = 30.0) -> list[dict]:
    """The log's 200 rows of deployment `a`, once the gateway has written at least LIMIT (it writes in
    the background)."""
    deadline = time.monotonic() + wait_s
    while True:
        with RequestLogReader(log) as reader:
            rows = [row for row in reader.rows(deployment="a") if row["http_status"] == 200] if reader.exists() else []
        if len(rows) >= LIMIT or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_inspect_and_the_builtin_runner_reproduce_lm_eval(runs):
    assert outputs(runs["inspect"]) == outputs(runs["direct"])
    assert outputs(runs["builtin"]) == outputs(runs["direct"])
    assert runs["inspect"].reported["accuracy"] == pytest.approx(runs["direct"].score)


def llmops(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, ["eval", *args], env=env)


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--task", "trivia"], {}, "unknown task 'trivia'"),
        (["--task", "capitals", "--harness", "helm"], {}, "unknown harness 'helm'"),
        (["--task", "capitals", "--split", "holdout"], {}, "unknown split 'holdout'"),
        (["--task", "capitals", "--limit", "0"], {}, "limit must be at least 1"),
        (["--task", "capitals", "--harness", "inspect", "--wandb-project", "p"], {}, "--harness lm-eval only"),
        (["--task", "capitals", "--endpoint", "http://127.0.0.1:9"], {}, "is unreachable"),
        (["--task", "capitals"], {"LLMOPS_EVALS_VENV": "/nonexistent"}, "run `make evals`"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, env, message):
    if "--endpoint" not in args:
        args = [*args, "--endpoint", "http://127.0.0.1:9"]
    done = llmops("run", *args, **env)
    assert done.exit_code == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_tasks_are_listed_with_their_split_sizes():
    done = llmops("tasks", "--json")
    assert done.exit_code == 0
    rows = {row["task"]: row for row in json.loads(done.stdout)}
    assert (rows["capitals"]["test"], rows["extraction"]["scorer"]) == (58, "json_schema")
