"""Prompts served by reference through the gateway, on the real engines: Gemma (text template on
/v1/completions) and SmolLM2 (chat template on /v1/chat/completions); the request log names the
version served; a rollback changes the very next request, also mid-traffic; A/B arms are stable per
user; every bad reference is a 4xx naming the field, logged."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient

from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route, create_app
from llmops_lib.gateway.prompts import arm
from llmops_lib.guards.pii import STRUCTURED
from llmops_lib.observe.request_log import RequestLog, RequestLogReader, RequestRecord
from llmops_lib.prompts.registry import PromptRegistry

GEMMA = {"model": "gemma", "temperature": 0, "max_tokens": 3, "stop": ["\n"]}
ZERO_SHOT = "Q: What is the capital of {{country}}?\nA:"
FEW_SHOT = "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of {{country}}?\nA:"
SUPPORT = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "{{question}}"},
]
SPLIT = {"production": 50, "candidate": 50}
#: The request log's table as the gateway created it before prompts were served by reference.
OLD_SCHEMA = """CREATE TABLE requests (
    request_id TEXT PRIMARY KEY, started_at REAL, finished_at REAL, deployment TEXT, upstream_url TEXT,
    gen_ai_operation_name TEXT, gen_ai_request_model TEXT, gen_ai_response_model TEXT,
    gen_ai_usage_input_tokens INTEGER, gen_ai_usage_output_tokens INTEGER, gen_ai_request_max_tokens INTEGER,
    gen_ai_request_temperature REAL, stream INTEGER, priority TEXT, http_status INTEGER, error_type TEXT,
    error TEXT, ttft_s REAL, latency_s REAL, cost_usd REAL, cache_hit INTEGER, fallback_from TEXT,
    cached_from TEXT, prompt TEXT, completion TEXT)"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A fresh prompt registry, also the one the gateway reads (LLMOPS_REGISTRY_URI)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('prompts') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMOPS_REGISTRY_URI", uri)
        registry = PromptRegistry()
        registry.register("capital", ZERO_SHOT, commit_message="zero-shot", model_config=GEMMA)
        registry.register("capital", FEW_SHOT, commit_message="one example first", model_config=GEMMA)
        registry.set_alias("capital", "production", 1, why="baseline")
        registry.set_alias("capital", "candidate", 2, why="try few-shot")
        registry.register("rollback-demo", "Version one says {{word}}.", commit_message="one", model_config=GEMMA)
        registry.register("rollback-demo", "Version two says {{word}}.", commit_message="two", model_config=GEMMA)
        registry.set_alias("rollback-demo", "production", 1, why="first")
        chat = {"model": "smollm2", "temperature": 0, "max_tokens": 4}
        registry.register("support", SUPPORT, commit_message="terse", model_config=chat)
        registry.set_alias("support", "production", 1, why="first")
        registry.register("greet", "Say hello to {{name}}.", commit_message="text for chat", model_config=chat)
        registry.set_alias("greet", "production", 1, why="first")
        registry.register("no-model", "Hello {{name}}", commit_message="no model config")
        registry.set_alias("no-model", "production", 1, why="first")
        yield registry


@pytest.fixture(scope="module")
def gateway(registry, server, chat_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gw") / "requests.sqlite"
    config = GatewayConfig(
        routes=[
            Route(model="gemma", deployments=[Deployment(name="gemma", url=server.base_url)]),
            Route(model="smollm2", deployments=[Deployment(name="smollm2", url=chat_server.base_url)]),
        ],
        request_log=str(log),
        capture_text=True,
        redact_entities=list(STRUCTURED),  # synthetic traffic: the countries asked about stay in the text
        cache_size=0,
        prompt_splits={"capital": SPLIT},
    )
    with GatewayServer(config) as gw:
        yield gw, log


def _post(gw, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(gw.base_url + path, json=body, headers=headers, timeout=120)


def _row(log, response: httpx.Response) -> dict:
    request_id = response.headers["x-request-id"]
    with RequestLogReader(log) as reader:
        return next(r for r in reader.rows_including({request_id}) if r["request_id"] == request_id)


def _ref(prompt_id: str, **variables: str) -> dict:
    return {"id": prompt_id, "variables": variables}


def test_a_text_prompt_on_gemma_completions_with_its_model_config_and_the_clients_fields_winning(gateway):
    gw, log = gateway
    response = _post(gw, "/v1/completions", {"prompt": _ref("capital@production", country="Italy")})
    assert response.status_code == 200, response.text
    row = _row(log, response)
    assert (row["prompt_name"], row["prompt_version"], row["prompt_alias"]) == ("capital", 1, "production")
    assert row["prompt"] == "Q: What is the capital of Italy?\nA:"
    assert (row["gen_ai_request_model"], row["gen_ai_request_max_tokens"], row["gen_ai_request_temperature"]) == (
        "gemma",
        3,
        0.0,
    )
    assert row["gen_ai_usage_output_tokens"] <= 3
    mine = _post(
        gw, "/v1/completions", {"model": "gemma", "max_tokens": 1, "prompt": _ref("capital/2", country="Peru")}
    )
    row = _row(log, mine)
    assert mine.status_code == 200 and row["gen_ai_request_max_tokens"] == 1, "the client's max_tokens wins"
    assert (row["prompt_version"], row["prompt_alias"]) == (2, None)
    assert row["prompt"].startswith("Q: What is the capital of France?\nA: Paris\n")


def test_a_chat_prompt_on_smollm2_and_a_text_prompt_on_chat_as_one_user_message(gateway):
    gw, log = gateway
    response = _post(gw, "/v1/chat/completions", {"prompt": _ref("support", question="What is 2+2?")})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    row = _row(log, response)
    assert (row["prompt_name"], row["prompt_version"], row["prompt_alias"]) == ("support", 1, "production")
    assert row["prompt"] == "You are a terse assistant.\nWhat is 2+2?"
    assert row["gen_ai_request_model"] == "smollm2" and row["gen_ai_usage_input_tokens"] > 10
    text = _post(gw, "/v1/chat/completions", {"prompt": _ref("greet@production", name="Ann")})
    assert text.status_code == 200 and _row(log, text)["prompt"] == "Say hello to Ann."


def test_a_rollback_changes_the_very_next_request_without_restart(gateway, registry):
    gw, log = gateway

    def served() -> tuple[int, str]:
        response = _post(gw, "/v1/completions", {"prompt": _ref("rollback-demo", word="hi"), "max_tokens": 1})
        assert response.status_code == 200, response.text
        row = _row(log, response)
        return row["prompt_version"], row["prompt"]

    assert served() == (1, "Version one says hi.")
    registry.set_alias("rollback-demo", "production", 2, why="promote two")
    assert served() == (2, "Version two says hi.")
    registry.rollback("rollback-demo", why="two is worse")
    assert served() == (1, "Version one says hi.")


def test_a_rollback_mid_traffic_fails_no_request(gateway, registry):
    gw, log = gateway
    stop, statuses, ids = threading.Event(), [], []

    def client() -> None:
        with httpx.Client(base_url=gw.base_url, timeout=120) as http:
            while not stop.is_set():
                body = {"prompt": _ref("rollback-demo", word="go"), "max_tokens": 1}
                response = http.post("/v1/completions", json=body)
                statuses.append(response.status_code)
                ids.append(response.headers["x-request-id"])

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            registry.set_alias("rollback-demo", "production", 2, why="promote under load")
            registry.rollback("rollback-demo", why="roll back under load")
        registry.set_alias("rollback-demo", "production", 2, why="promote again")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert statuses and set(statuses) == {200}, Counter(statuses)
    with RequestLogReader(log) as reader:
        rows = [r for r in reader.rows_including(ids) if r["request_id"] in set(ids)]
    assert len(rows) == len(ids) and {r["prompt_version"] for r in rows} <= {1, 2}
    after = _post(gw, "/v1/completions", {"prompt": _ref("rollback-demo", word="go"), "max_tokens": 1})
    assert _row(log, after)["prompt_version"] == 2, "the last move (to v2) serves the next request"


def test_a_split_gives_one_user_always_the_same_arm_and_arms_follow_the_weights(gateway):
    gw, log = gateway
    served: dict[str, set[tuple[str, int]]] = {}
    for key in [f"user-{i}" for i in range(8)]:
        for how in ({"body": {"user": key}}, {"headers": {"x-llmops-user": key}}):
            body = {"prompt": _ref("capital", country="Chile"), "max_tokens": 1} | how.get("body", {})
            row = _row(log, _post(gw, "/v1/completions", body, **how.get("headers", {})))
            served.setdefault(key, set()).add((row["prompt_alias"], row["prompt_version"]))
    assert all(len(arms) == 1 for arms in served.values()), served
    assert {arms.pop() for arms in served.values()} == {("production", 1), ("candidate", 2)}
    weights = {"production": 90, "candidate": 10}
    counts = Counter(arm("capital", f"key-{i}", weights) for i in range(4000))
    assert 320 <= counts["candidate"] <= 480, counts  # 400 expected; 4 standard deviations either side
    assert all(arm("capital", "key-7", weights) == arm("capital", "key-7", weights) for _ in range(3))


@pytest.mark.parametrize(
    "path, body, status, param",
    [
        ("/v1/completions", {"prompt": _ref("nope@production", x="1")}, 404, "prompt.id"),
        ("/v1/completions", {"prompt": _ref("capital@staging", country="Chile")}, 404, "prompt.id"),
        ("/v1/completions", {"prompt": _ref("capital/99", country="Chile")}, 404, "prompt.id"),
        ("/v1/completions", {"prompt": _ref("capital@@x", country="Chile")}, 400, "prompt.id"),
        ("/v1/completions", {"prompt": _ref("capital@production")}, 400, "prompt.variables.country"),
        ("/v1/completions", {"prompt": _ref("capital", country="Chile", city="x")}, 400, "prompt.variables.city"),
        (
            "/v1/completions",
            {"prompt": {"id": "capital", "variables": {"country": 3}}},
            400,
            "prompt.variables.country",
        ),
        ("/v1/completions", {"prompt": {"id": "capital", "vars": {}}}, 400, "prompt.vars"),
        ("/v1/completions", {"prompt": {"variables": {}}}, 400, "prompt.id"),
        ("/v1/completions", {"prompt": _ref("support", question="Hi")}, 400, "prompt.id"),
        ("/v1/completions", {"prompt": _ref("no-model", name="Ann")}, 400, "model"),
        (
            "/v1/chat/completions",
            {"prompt": _ref("support", question="Hi"), "messages": [{"role": "user", "content": "Hi"}]},
            400,
            "prompt",
        ),
        ("/v1/chat/completions", {"model": "smollm2"}, 400, "messages"),
    ],
)
def test_a_bad_reference_is_a_4xx_naming_the_field_and_a_log_row(gateway, path, body, status, param):
    gw, log = gateway
    response = _post(gw, path, body)
    error = response.json()["error"]
    assert (response.status_code, error["param"]) == (status, param), error
    row = _row(log, response)
    assert row["http_status"] == status and row["error"] == error["message"]


def test_an_unknown_prompt_is_not_told_where_the_registry_is_or_what_else_it_holds(gateway, registry):
    gw, _ = gateway
    message = _post(gw, "/v1/completions", {"prompt": _ref("nope@production", x="1")}).json()["error"]["message"]
    assert "'nope'" in message
    assert "sqlite" not in message and "capital" not in message, message


def test_a_split_naming_a_missing_alias_stops_the_gateway_at_start(registry, tmp_path):
    route = Route(model="gemma", deployments=[Deployment(name="a", url="http://127.0.0.1:9")])
    config = GatewayConfig(
        routes=[route],
        request_log=str(tmp_path / "r.sqlite"),
        prompt_splits={"capital": {"production": 50, "staging": 50}},
    )
    missing = r"prompt_splits\.capital\.staging: prompt 'capital' has no alias 'staging'"
    with pytest.raises(SpecError, match=missing), TestClient(create_app(config)):
        pass
    with pytest.raises(ValueError, match=r"prompt_splits\.capital\n.*sum to 100"):
        GatewayConfig(routes=[route], prompt_splits={"capital": {"production": 60, "candidate": 60}})


def test_a_request_log_from_before_the_prompt_columns_still_opens(tmp_path):
    path = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(OLD_SCHEMA)
        db.execute("INSERT INTO requests (request_id, started_at) VALUES ('old', 1.0)")
        db.commit()
    with RequestLog(path) as log:
        log.submit(RequestRecord("new", 2.0, prompt_name="capital", prompt_version=2, prompt_alias="candidate"))
    rows = {r["request_id"]: r for r in RequestLogReader(path).rows()}
    assert rows["old"]["prompt_name"] is None
    assert (rows["new"]["prompt_name"], rows["new"]["prompt_version"], rows["new"]["prompt_alias"]) == (
        "capital",
        2,
        "candidate",
    )
