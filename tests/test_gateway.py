"""The gateway over the real llama-server: OpenAI client unchanged, cache, validation, admin API, fallback, log."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayAdmin, GatewayConfig, GatewayServer, Route
from llmops_lib.gateway.access import key_entry
from llmops_lib.observe.request_log import RequestLogReader

DEAD_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gw") / "requests.sqlite"
    routes = [
        Route(
            model="gemma",
            deployments=[Deployment(name="a", url=server.base_url), Deployment(name="dead", url=DEAD_URL, weight=0)],
            fallback="a",
        )
    ]
    config = GatewayConfig(
        routes=routes,
        keys=[key_entry("adm", "adm", admin=True, routes=[])],
        request_log=str(log),
        prices={"a": {"per_1k_input_usd": 0.1, "per_1k_output_usd": 0.2}},
    )
    with GatewayServer(config) as gw:
        yield gw, log


def _rows(log, ids: set[str] = frozenset()) -> list[dict]:
    with RequestLogReader(log) as reader:
        return reader.rows_including(ids)


def test_openai_client_unchanged_cache_and_log(gateway):
    gw, log = gateway
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused")
    first = client.completions.with_raw_response.create(
        model="gemma", prompt="Hello there", max_tokens=3, temperature=0
    )
    again = client.completions.with_raw_response.create(
        model="gemma", prompt="Hello there", max_tokens=3, temperature=0
    )
    assert first.headers["x-llmops-deployment"] == "a" and again.headers["x-llmops-deployment"] == "cache"
    assert first.parse().choices[0].text == again.parse().choices[0].text
    pieces = [
        c.choices[0].text for c in client.completions.create(model="gemma", prompt="Hello", max_tokens=3, stream=True)
    ]
    assert "".join(pieces)
    ids = {first.headers["x-request-id"], again.headers["x-request-id"]}
    rows = {r["request_id"]: r for r in _rows(log, ids)}
    assert ids <= set(rows) and rows[again.headers["x-request-id"]]["cache_hit"] == 1
    assert rows[first.headers["x-request-id"]]["cost_usd"] > 0


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{bad", None),
        (b'{"model": "gemma", "prompt": "x", "max_tokens": -1}', "max_tokens"),
        (b'{"model": "nope", "prompt": "x"}', "model"),
        (b'{"model": "gemma", "prompt": 3}', "prompt"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(gateway, body, param):
    response = httpx.post(gateway[0].base_url + "/v1/completions", content=body)
    assert 400 <= response.status_code < 500 and response.json()["error"]["param"] == param


def test_admin_weights_and_fallback(gateway):
    gw, log = gateway
    with pytest.raises(SpecError, match="401"):
        GatewayAdmin(gw.base_url).routes()
    admin = GatewayAdmin(gw.base_url, "adm")
    with pytest.raises(SpecError, match="sum to 100"):
        admin.set_weights("gemma", {"a": 50})
    with pytest.raises(SpecError, match="not in route"):
        admin.set_weights("gemma", {"ghost": 100, "a": 0})
    admin.set_weights("gemma", {"a": 0, "dead": 100})
    try:
        response = httpx.post(
            gw.base_url + "/v1/completions", json={"model": "gemma", "prompt": "Hi", "max_tokens": 2}, timeout=60
        )
    finally:
        admin.set_weights("gemma", {"a": 100, "dead": 0})
    assert response.status_code == 200 and response.headers["x-llmops-deployment"] == "a"
    row = next(
        r for r in _rows(log, {response.headers["x-request-id"]}) if r["request_id"] == response.headers["x-request-id"]
    )
    assert row["fallback_from"] == "dead" and row["deployment"] == "a"


def test_example_config_is_valid_and_bad_configs_name_the_field(tmp_path):
    from llmops_lib.gateway import load_config

    config = load_config("deploy/gateway.example.yaml")
    assert [d.weight for d in config.routes[0].deployments] == [100, 0] and "stable" in config.price_table()
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - model: m\n    deployments: [{name: a, url: http://x, weight: 140}]\n")
    with pytest.raises(SpecError, match=r"routes\.0\.deployments\.0\.weight"):
        load_config(bad)


def test_gateway_cli_help_and_one_line_error(tmp_path):
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "llmops_lib", "gateway", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--config" in shown.stdout and "request-log row" in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "llmops_lib", "gateway", "--config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
    )
    assert (
        missing.returncode == 1
        and missing.stderr.count("\n") == 1
        and missing.stderr.startswith("error: no gateway configuration")
    )


def test_load_test_runbook_through_the_gateway(gateway):
    from llmops_lib.runbooks import ExitCode, run_runbook

    gw, log = gateway
    before = len(_rows(log))
    # what is tested: every request answered and logged; the SLO is not (the engine may share its cores)
    run = run_runbook(
        "load_test",
        {
            "endpoint": gw.base_url,
            "model": "gemma",
            "duration_s": 2.0,
            "output_len": 4,
            "concurrency": 2,
            "slo_tpot_ms": 10000.0,
        },
    )
    assert run.exit_code == ExitCode.OK and run.records["failed"] == 0
    deadline = time.monotonic() + 30  # the gateway writes its log in the background
    while len(_rows(log)) - before < run.records["completed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_rows(log)) - before >= run.records["completed"] > 0, (
        "every request of the load test is in the gateway's log"
    )


def test_feedback_for_an_answered_request_is_kept_and_for_an_unknown_id_is_404(gateway):
    gw, log = gateway
    answered = httpx.post(
        gw.base_url + "/v1/completions", json={"model": "gemma", "prompt": "Rate me", "max_tokens": 2}, timeout=60
    )
    request_id = answered.headers["x-request-id"]
    kept = httpx.post(gw.base_url + "/v1/feedback", json={"request_id": request_id, "score": 1, "comment": "ok"})
    unknown = httpx.post(gw.base_url + "/v1/feedback", json={"request_id": "req-never-issued", "score": 1})
    assert answered.status_code == 200 and kept.status_code == 200 and kept.json() == {"ok": True}
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "request_id"
    deadline = time.monotonic() + 30  # the gateway writes its log in the background
    while time.monotonic() < deadline:
        with RequestLogReader(log) as reader:
            rated = [row for row in reader.feedback_rows() if row["request_id"] == request_id]
        if rated:
            break
        time.sleep(0.2)
    assert [(row["score"], row["comment"], row["deployment"]) for row in rated] == [(1.0, "ok", "a")]
    with RequestLogReader(log) as reader:
        assert all(row["request_id"] != "req-never-issued" for row in reader.feedback_rows())


def test_chat_to_a_model_without_a_chat_template_is_400_pointing_to_completions(gateway, model_path):
    from llmops_lib.models import inspect_gguf

    assert not inspect_gguf(model_path).has_chat_template, "the default model is the base Gemma 3: no template"
    response = httpx.post(
        gateway[0].base_url + "/v1/chat/completions",
        json={"model": "gemma", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
        timeout=60,
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "no_chat_template" and "/v1/completions" in error["message"]
