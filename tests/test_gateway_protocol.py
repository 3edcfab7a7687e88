"""The gateway's boundary without an engine: every refusal is a 4xx naming the field, in OpenAI's error
shape, before any upstream is contacted; the served OpenAPI document describes bodies and errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from llmops_lib.gateway import Deployment, GatewayConfig, Route, create_app
from llmops_lib.gateway.access import key_entry

DEAD_URL = "http://127.0.0.1:9"  # nothing listens: a request that got this far would fail with 502


def _config(tmp_path, **options) -> GatewayConfig:
    route = Route(model="gemma", deployments=[Deployment(name="a", url=DEAD_URL)])
    return GatewayConfig(routes=[route], request_log=str(tmp_path / "requests.sqlite"), **options)


@pytest.fixture
def client(tmp_path):
    config = _config(
        tmp_path, keys=[key_entry("adm", "adm", admin=True, routes=[])], max_tokens_limit=8, context_window=64
    )
    with TestClient(create_app(config)) as client:
        yield client


GOOD = {"model": "gemma", "prompt": "Hi", "max_tokens": 2}
CHAT = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.mark.parametrize(
    "path, body, status, param",
    [
        ("/v1/completions", GOOD | {"max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", GOOD | {"max_tokens": 9}, 400, "max_tokens"),
        ("/v1/completions", GOOD | {"max_tokens": 1.5}, 400, "max_tokens"),
        ("/v1/completions", GOOD | {"temperature": 2.5}, 400, "temperature"),
        ("/v1/completions", GOOD | {"top_p": "high"}, 400, "top_p"),
        ("/v1/completions", GOOD | {"n": 2}, 400, "n"),
        ("/v1/completions", GOOD | {"stream": "yes"}, 400, "stream"),
        ("/v1/completions", GOOD | {"stop": [1]}, 400, "stop"),
        ("/v1/completions", GOOD | {"priority": "urgent"}, 400, "priority"),
        ("/v1/completions", GOOD | {"prompt": []}, 400, "prompt"),
        ("/v1/completions", GOOD | {"prompt": ["a", "b"], "stream": True}, 400, "prompt"),
        ("/v1/completions", GOOD | {"prompt": 3}, 400, "prompt"),
        ("/v1/completions", {"prompt": "Hi"}, 400, "model"),
        ("/v1/completions", GOOD | {"model": "nope"}, 404, "model"),
        ("/v1/completions", GOOD | {"prompt": "x" * 400}, 400, "prompt"),
        ("/v1/chat/completions", CHAT | {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", CHAT | {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
        ("/v1/chat/completions", CHAT | {"messages": [{"content": "Hi"}]}, 400, "messages.0.role"),
        (
            "/v1/chat/completions",
            CHAT | {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            400,
            "messages.0.content",
        ),
        ("/v1/feedback", {"request_id": "req-x", "score": True}, 400, "score"),
        ("/v1/feedback", {"request_id": "req-x", "score": 1, "coment": "typo"}, 400, "coment"),
        ("/v1/feedback", {"score": 1}, 400, "request_id"),
    ],
)
def test_bad_bodies_are_4xx_naming_the_field(client, path, body, status, param):
    response = client.post(path, json=body)
    error = response.json()["error"]
    assert (response.status_code, error["param"]) == (status, param), error
    assert error["type"] == "invalid_request_error" and error["message"]


def test_not_json_or_not_an_object_and_a_bad_priority_header(client):
    for content in (b"{bad", b"[1, 2]", b'"text"', b""):
        response = client.post("/v1/completions", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json", content
    as_form = client.post("/v1/completions", content=b"{}", headers={"content-type": "text/plain"})
    assert as_form.status_code == 400 and "Content-Type: application/json" in as_form.json()["error"]["message"]
    untyped = client.post("/v1/completions", content=b'{"model": "gemma", "prompt": "x", "max_tokens": 0}')
    assert untyped.json()["error"]["param"] == "max_tokens", "a JSON body without Content-Type is read as JSON"
    response = client.post("/v1/completions", json=GOOD, headers={"x-llmops-priority": "urgent"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "x-llmops-priority"


def test_a_refused_request_has_a_request_id_and_unknown_routes_answer_openai_errors(client):
    refused = client.post("/v1/completions", json=GOOD | {"n": 3})
    assert refused.headers["x-request-id"].startswith("req-")
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and "/v1/nothing" in missing.json()["error"]["message"]
    wrong_method = client.get("/v1/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]


def test_admin_bodies_use_the_one_weight_type_and_the_key_comes_first(client):
    admin = {"authorization": "Bearer adm"}
    assert client.get("/admin/routes").status_code == 401
    refused = client.put("/admin/routes/gemma/weights", json={"weights": "a=1"})
    assert refused.status_code == 401, "no key: refused before the body is looked at"
    for weights, param in (({"a": 140}, "weights.a"), ({"a": True}, "weights.a"), ({}, "weights")):
        response = client.put("/admin/routes/gemma/weights", json={"weights": weights}, headers=admin)
        assert (response.status_code, response.json()["error"]["param"]) == (400, param), weights
    response = client.post(
        "/admin/routes/gemma/deployments", json={"name": "b", "url": DEAD_URL, "weight": -1}, headers=admin
    )
    assert (response.status_code, response.json()["error"]["param"]) == (400, "weight")
    added = client.post("/admin/routes/gemma/deployments", json={"name": "b", "url": DEAD_URL}, headers=admin)
    assert added.status_code == 200
    assert {d["name"]: d["weight"] for d in added.json()["routes"][0]["deployments"]} == {"a": 100, "b": 0}
    again = client.post("/admin/routes/gemma/deployments", json={"name": "b", "url": DEAD_URL}, headers=admin)
    assert again.status_code == 409


def test_api_keys_one_dependency_for_every_client_route(tmp_path):
    with TestClient(create_app(_config(tmp_path, keys=[key_entry("k1", "k1")]))) as client:
        for method, path in (("post", "/v1/completions"), ("post", "/v1/chat/completions"), ("get", "/v1/models")):
            response = client.request(method, path, json={"model": "gemma"})
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key", path
        response = client.post("/v1/feedback", json={"x": 1}, headers={"authorization": "Bearer k2"})
        assert response.status_code == 401
        assert client.get("/v1/models", headers={"authorization": "Bearer k1"}).json()["data"][0]["id"] == "gemma"
        assert client.get("/health").status_code == 200, "health needs no key"


def test_feedback_before_the_gateway_started_is_503_not_a_crash(tmp_path):
    client = TestClient(create_app(_config(tmp_path)))  # no `with`: the app never started, so no request log
    response = client.post("/v1/feedback", json={"request_id": "req-x", "score": 1})
    assert response.status_code == 503 and "request log" in response.json()["error"]["message"]


def test_the_openapi_document_describes_every_body_and_error(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}: the gateway answers 400, not 422"
            if method in ("post", "put"):
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in schemas and "400" in responses, f"{method} {path}"
            for status, response in responses.items():
                if status != "200":
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    completions = document["paths"]["/v1/completions"]["post"]
    assert {"400", "401", "404", "429", "502"} <= set(completions["responses"])
    assert "text/event-stream" in completions["responses"]["200"]["content"]
    assert {p["name"] for p in completions["parameters"]} == {"x-llmops-priority", "x-llmops-tag", "x-llmops-user"}
    assert schemas["CompletionRequest"]["properties"]["max_tokens"]["anyOf"][0]["minimum"] == 1
    assert "/v1/feedback" in document["paths"] and "404" in document["paths"]["/v1/feedback"]["post"]["responses"]
