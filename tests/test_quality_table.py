"""The quality table on the real engine, direct and through the gateway: each row's score is the share
of cases the task's scorer accepts (recounted here from the engine's own answers), the gateway does not
change a score, bad input is refused before any request, and the figure draws each interval."""

from __future__ import annotations

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.evals.matrix import Serving, quality_figure, quality_table
from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import load_task
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route

TASKS = ["capitals", "sentiment"]
LIMIT = 6


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    route = Route(model="gemma", deployments=[Deployment(name="gemma", url=server.base_url)])
    config = GatewayConfig(routes=[route], request_log=str(tmp_path_factory.mktemp("gw") / "requests.sqlite"))
    with GatewayServer(config) as gw:
        yield gw


def _recount(base_url: str, task_name: str) -> float:
    """The share right, asked one case at a time over plain HTTP with the reference prompt."""
    import httpx

    task = load_task(task_name)
    right = 0.0
    for case in task.split("test")[:LIMIT]:
        body = {"prompt": task.render(case), "max_tokens": task.reference.max_tokens, "temperature": 0}
        body["stop"] = list(task.reference.stop)
        answer = httpx.post(f"{base_url}/v1/completions", json=body, timeout=120).json()
        right += score(task, case, answer["choices"][0]["text"])
    return right / LIMIT


def test_the_table_scores_every_task_on_every_serving_choice_and_the_gateway_changes_nothing(server, gateway):
    serving = {"direct": server.base_url, "gateway": Serving(gateway.base_url, "gemma")}
    rows = quality_table(serving, TASKS, limit=LIMIT, cache=False)
    assert [(r["serving"], r["task"], r["n"]) for r in rows] == [
        ("direct", "capitals", 6),
        ("direct", "sentiment", 6),
        ("gateway", "capitals", 6),
        ("gateway", "sentiment", 6),
    ]
    scores = {(r["serving"], r["task"]): r["score"] for r in rows}
    for task in TASKS:
        assert scores["direct", task] == scores["gateway", task] == _recount(server.base_url, task)
    assert all(r["ci_low"] <= r["score"] <= r["ci_high"] and r["median_latency_s"] > 0 for r in rows)

    figure = quality_figure(rows)
    assert [bar.name for bar in figure.data] == ["direct", "gateway"]
    direct = figure.data[0]
    assert list(direct.x) == TASKS and list(direct.y) == [scores["direct", t] for t in TASKS]
    assert list(direct.error_y.array) == [r["ci_high"] - r["score"] for r in rows[:2]]


@pytest.mark.parametrize(
    "endpoints, tasks, limit, message",
    [
        ({}, TASKS, None, "no serving choices"),
        ({"x": "http://127.0.0.1:9"}, [], None, "no tasks"),
        ({"x": "http://127.0.0.1:9"}, ["capitals", "poetry"], None, "unknown task 'poetry'"),
        ({"x": "http://127.0.0.1:9"}, TASKS, 0, "limit must be at least 1"),
    ],
)
def test_bad_input_is_refused_before_any_request(endpoints, tasks, limit, message):
    with pytest.raises(SpecError, match=message):
        quality_table(endpoints, tasks, limit=limit)
