"""Online evaluation on real traffic: Gemma behind the gateway (text captured); logged requests whose
prompt is a task's reference prompt are scored, others ignored; a JSON route's answers checked for validity."""

from __future__ import annotations

import json
import re

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint
from llmops_lib.evals.tasks import load_task
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.guards.pii import STRUCTURED
from llmops_lib.observe.online_eval import correctness_results, reference_set, validity_results
from llmops_lib.observe.quality import ValidJSON, check_monitor, status
from llmops_lib.observe.request_log import RequestLogReader

UNMATCHED = ["Hello there", "Q: What is the capital of Atlantis?\nA:"]


def ascii_capitals(n: int) -> list:
    task = load_task("capitals")
    return [case for case in task.split("test") if str(case.expected).isascii()][:n]


@pytest.fixture(scope="module")
def logged(server, tmp_path_factory):
    """Eight reference prompts of `capitals` and two unmatched prompts on route `gemma`; a capitals prompt
    (a word answer: not JSON) and two arithmetic prompts (a number: JSON) on route `json`."""
    log = tmp_path_factory.mktemp("online") / "requests.sqlite"
    config = GatewayConfig(
        routes=[
            Route(model=name, deployments=[Deployment(name=f"{name}-engine", url=server.base_url)])
            for name in ("gemma", "json")
        ],
        request_log=str(log),
        capture_text=True,
        redact_entities=list(STRUCTURED),  # synthetic traffic: names and places stay scorable
        cache_size=0,
    )
    capitals, arithmetic = load_task("capitals"), load_task("arithmetic")
    cases = ascii_capitals(8)
    with GatewayServer(config) as gateway:
        for route, prompts in (
            ("gemma", [capitals.render(case) for case in cases] + UNMATCHED),
            ("json", [capitals.render(cases[0])] + [arithmetic.render(c) for c in arithmetic.split("test")[:2]]),
        ):
            with Endpoint(gateway.base_url, model=route, max_tokens=4, stop=["\n"]) as endpoint:
                for prompt in prompts:
                    endpoint.complete(prompt)
    rows = RequestLogReader(log).rows()
    assert len(rows) == 13
    return rows, cases


def test_matched_requests_are_scored_and_others_ignored(logged):
    rows, cases = logged
    results = correctness_results(rows, reference_set())
    by_id = {r["request_id"]: r for r in rows}
    assert sorted(r.check for r in results) == ["correct.arithmetic"] * 2 + ["correct.capitals"] * 9
    assert not {by_id[r.request_id]["prompt"] for r in results} & set(UNMATCHED), "unmatched prompts are ignored"
    capitals = load_task("capitals")
    city = {capitals.render(case): str(case.expected) for case in cases}
    for result in results:
        row = by_id[result.request_id]
        if result.check == "correct.capitals":  # the oracle: the expected city as a whole word of the answer
            right = re.search(rf"\b{re.escape(city[row['prompt']])}\b", row["completion"], re.I) is not None
            assert result.passed == right and result.value == float(right), row["completion"]


def test_rolling_correctness_monitor(logged):
    rows, _ = logged
    results = correctness_results(rows, reference_set(["capitals"]))
    passed = sum(r.passed for r in results)
    points = check_monitor(results, window_s=3600)["correct.capitals"]
    assert points[-1].count == 9 and points[-1].value == pytest.approx(passed / 9)
    verdict = status("correct.capitals", points, at_least=1.01)
    assert verdict.state == "alert", "no rate is at least 1.01"
    assert status("correct.capitals", points, at_least=0.0).state == "ok"


def test_a_json_route_is_checked_for_validity(logged):
    rows, _ = logged
    results = validity_results(rows, {"json": None})
    on_json = {r["request_id"]: r["completion"] for r in rows if r["gen_ai_request_model"] == "json"}
    assert {r.request_id for r in results} == set(on_json)

    def parses(text: str) -> bool:
        try:
            json.loads(text)
        except ValueError:
            return False
        return True

    assert [r.passed for r in results] == [parses(on_json[r.request_id]) for r in results]
    assert any(r.passed for r in results) and not all(r.passed for r in results), list(on_json.values())


def test_valid_json_check_on_literal_answers():
    schema = {"type": "object", "required": ["name"]}
    assert ValidJSON()("", ' {"name": "Ada"} ') == (True, 1.0)
    assert ValidJSON(schema)("", '{"age": 3}') == (False, 0.0)
    assert ValidJSON(schema)("", '{"name": "Ada", "age": 3}') == (True, 1.0)
    assert ValidJSON()("", '{"name": "Ada"') == (False, 0.0)
    assert ValidJSON()("", "Paris") == (False, 0.0)


def test_a_log_without_text_is_refused():
    rows = [
        {"request_id": f"r{i}", "started_at": 1.0, "http_status": 200, "prompt": None, "completion": None}
        for i in range(3)
    ]
    with pytest.raises(SpecError, match="capture_text"):
        correctness_results(rows, reference_set(["capitals"]))
