"""Access control: keys scoped to routes, per-key rate and token quota (429 + Retry-After), admin keys
apart, the key id (never the key) in the request log, and admin changes in the audit log. The limits'
arithmetic on a fake clock; the rest through a real gateway in front of the real engine."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from llmops_lib.audit import AuditLog
from llmops_lib.cli import app
from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route, load_config
from llmops_lib.gateway.access import Access, hash_key, key_entry
from llmops_lib.gateway.protocol import ApiError
from llmops_lib.observe.request_log import RequestLogReader

RAW = {name: f"sk-llmops-test-{name}-0123456789" for name in ("alice", "bob", "rate", "quota", "ops")}
BODY = {"model": "gemma", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


def _bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {RAW[name]}"}


def test_hash_is_sha256_of_the_key():
    assert hash_key("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_rate_bucket_and_token_window_on_a_fake_clock():
    now = [0.0]
    access = Access(
        [key_entry("r", "r", requests_per_minute=2), key_entry("q", "q", tokens_per_minute=10)], clock=lambda: now[0]
    )
    rate, quota = access.authenticate("r"), access.authenticate("q")
    access.admit(rate, "m")
    access.admit(rate, "m")
    with pytest.raises(ApiError) as refused:
        access.admit(rate, "m")
    assert (refused.value.status, refused.value.retry_after, refused.value.code) == (429, 30, "rate_limit_exceeded")
    now[0] = 30.0  # one request refilled at 2 per minute
    access.admit(rate, "m")
    access.admit(quota, "m")
    access.spend("q", 6)  # at 30 s
    now[0] = 50.0
    access.spend("q", 4)  # 10 tokens in the window: the next request waits until the first 6 leave it, at 90 s
    with pytest.raises(ApiError) as spent:
        access.admit(quota, "m")
    assert (spent.value.retry_after, spent.value.code) == (40, "token_quota_exceeded")
    now[0] = 90.0
    access.admit(quota, "m")


def test_config_keeps_hashes_only_and_names_a_raw_key(tmp_path):
    bad = tmp_path / "keys.yaml"
    bad.write_text(
        "routes:\n  - model: m\n    deployments: [{name: a, url: http://x}]\n"
        "keys:\n  - id: alice\n    sha256: sk-llmops-raw-secret\n"
    )
    with pytest.raises(SpecError, match=r"keys\.0\.sha256: .*never the key itself") as error:
        load_config(bad)
    assert "sk-llmops-raw-secret" not in str(error.value)
    bad.write_text(
        "routes:\n  - model: m\n    deployments: [{name: a, url: http://x}]\n"
        f"keys:\n  - id: alice\n    sha256: '{hash_key('k')}'\n    routes: [chat]\n"
    )
    with pytest.raises(SpecError, match=r"key 'alice': routes \['chat'\] are not routes"):
        load_config(bad)


def test_keys_create_prints_the_key_once_and_an_entry_that_loads(tmp_path):
    import yaml

    shown = CliRunner().invoke(
        app, ["keys", "create", "--id", "alice", "--routes", "m", "--rpm", "60", "--tpm", "20000"]
    )
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    raw = lines[0].rsplit(" ", 1)[1]
    entry = yaml.safe_load("\n".join(lines[2:]))[0]
    assert raw.startswith("sk-llmops-") and shown.output.count(raw) == 1
    assert entry["sha256"] == hash_key(raw) and entry["routes"] == ["m"] and entry["tokens_per_minute"] == 20000
    config = {"routes": [{"model": "m", "deployments": [{"name": "a", "url": "http://x"}]}], "keys": [entry]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(config))
    assert load_config(tmp_path / "g.yaml").keys[0].requests_per_minute == 60


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    log = tmp_path_factory.mktemp("access") / "requests.sqlite"
    routes = [
        Route(model="gemma", deployments=[Deployment(name="a", url=server.base_url)]),
        Route(model="other", deployments=[Deployment(name="b", url=server.base_url)]),
    ]
    keys = [
        key_entry(RAW["alice"], "alice", routes=["gemma"]),
        key_entry(RAW["bob"], "bob", routes=["other"]),
        key_entry(RAW["rate"], "rate", requests_per_minute=2),
        key_entry(RAW["quota"], "quota", tokens_per_minute=3),
        key_entry(RAW["ops"], "ops", admin=True, routes=[]),
    ]
    config = GatewayConfig(routes=routes, keys=keys, request_log=str(log), capture_text=True, cache_size=0)
    with GatewayServer(config) as gw:
        yield gw, log


def _post(gw, name: str | None = None, **extra) -> httpx.Response:
    headers = _bearer(name) if name else {}
    return httpx.post(gw.base_url + "/v1/completions", json=BODY | extra, headers=headers, timeout=120)


def test_unknown_or_missing_key_401_out_of_scope_403_naming_model_and_key(gateway):
    gw, _ = gateway
    assert _post(gw).status_code == 401
    unknown = httpx.post(gw.base_url + "/v1/completions", json=BODY, headers={"authorization": "Bearer nope"})
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"
    refused = _post(gw, "bob")
    error = refused.json()["error"]
    assert refused.status_code == 403 and "'gemma'" in error["message"] and "'bob'" in error["message"]
    assert _post(gw, "alice").status_code == 200
    listed = httpx.get(gw.base_url + "/v1/models", headers=_bearer("bob")).json()["data"]
    assert [m["id"] for m in listed] == ["other"]


def test_rate_limit_429_with_retry_after(gateway):
    gw, _ = gateway
    answers = [_post(gw, "rate") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(answers[2].headers["retry-after"]) <= 30  # one request back at 2 per minute: 30 s at most


def test_token_quota_refuses_the_request_after_the_usage(gateway):
    gw, _ = gateway
    first = _post(gw, "quota")
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] >= 3
    second = _post(gw, "quota")
    assert second.status_code == 429 and second.json()["error"]["code"] == "token_quota_exceeded"
    assert 1 <= int(second.headers["retry-after"]) <= 60


def test_admin_keys_are_apart(gateway):
    gw, _ = gateway
    url = gw.base_url + "/admin/routes/gemma/weights"
    assert httpx.put(url, json={"weights": {"a": 100}}).status_code == 401
    client = httpx.put(url, json={"weights": {"a": 100}}, headers=_bearer("alice"))
    assert client.status_code == 403 and client.json()["error"]["code"] == "not_admin"
    assert httpx.put(url, json={"weights": {"a": 100}}, headers=_bearer("ops")).status_code == 200
    assert _post(gw, "ops").status_code == 403, "an admin-only key spends no tokens"
    moves = [e.fields for e in AuditLog().entries(event="admin.weights")]
    assert {"key_id": "ops", "model": "gemma", "weights": {"a": 100}} in moves


def test_the_log_has_key_ids_and_users_never_a_key(gateway):
    gw, log = gateway
    named = _post(gw, "alice", user="end-user-7")
    keyed = _post(gw, "alice")
    ids = {named.headers["x-request-id"], keyed.headers["x-request-id"]}
    with RequestLogReader(log) as reader:
        rows = {r["request_id"]: r for r in reader.rows_including(ids)}
    assert rows[named.headers["x-request-id"]]["user"] == "end-user-7"
    assert (rows[keyed.headers["x-request-id"]]["user"], rows[keyed.headers["x-request-id"]]["api_key_id"]) == (
        "alice",
        "alice",
    )
    stored = b"".join(p.read_bytes() for p in log.parent.glob("requests.sqlite*"))
    stored += gw.config_path.read_bytes() + gw.log_path.read_bytes()
    stored += b"".join(p.read_bytes() for p in AuditLog().path.parent.glob("*"))
    assert b"Hello" in stored, "text capture is on: the scan reads the right files"
    assert not [name for name, raw in RAW.items() if raw.encode() in stored]
