"""The gateway under load and failure, on real llama-servers: nothing lost, clear errors, no 5xx for bad input."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import ClientDisconnect

from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.gateway.access import key_entry
from llmops_lib.gateway.app import create_app
from llmops_lib.observe.request_log import RequestLogReader

pytestmark = pytest.mark.engine


def _gateway(tmp_path, deployments: list[Deployment], **options) -> GatewayServer:
    route = Route(model="gemma", deployments=deployments, fallback=options.pop("fallback", None))
    return GatewayServer(GatewayConfig(routes=[route], request_log=str(tmp_path / "requests.sqlite"), **options))


def _rows_for(log_path, ids: set[str]) -> list[dict]:
    with RequestLogReader(log_path) as log:
        return log.rows_including(ids)


def test_1000_requests_at_concurrency_16_each_answered_and_logged_once(server, tmp_path):
    async def drive(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            todo = iter(range(1000))
            answers: list[httpx.Response] = []

            async def worker() -> None:
                for i in todo:
                    body = {
                        "model": "gemma",
                        "prompt": f"Item {i % 250}:",
                        "max_tokens": 2,
                        "temperature": 0 if i % 4 == 0 else 0.7,
                    }
                    if i % 5 == 0:
                        body["stream"] = True
                    answers.append(await client.post("/v1/completions", json=body))

            await asyncio.gather(*(worker() for _ in range(16)))
            return answers

    # a generous upstream timeout: what is tested is one answer and one log row per request, and the queue
    # wait counts into the timeout on a machine that is busy with other work
    with _gateway(tmp_path, [Deployment(name="a", url=server.base_url)], timeout_s=300) as gw:
        answers = asyncio.run(drive(gw.base_url))
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(answers) == 1000 and len(set(ids)) == 1000
    unclear = [a for a in answers if a.status_code != 200 and "error" not in a.json()]
    assert not unclear, "every failure carries an error body"
    assert sum(a.status_code == 200 for a in answers) == 1000, {a.status_code for a in answers}
    rows = _rows_for(tmp_path / "requests.sqlite", set(ids))
    assert sorted(r["request_id"] for r in rows) == sorted(ids), "exactly one row per request, none extra"
    assert sum(r["cache_hit"] for r in rows) > 0 and all(
        r["gen_ai_usage_output_tokens"] for r in rows if not r["cache_hit"]
    )


def test_engine_killed_mid_stream_error_event_then_failover(server, model_path, tmp_path):
    with LlamaServer(EngineSpec(model=model_path, n_ctx=512, threads=1, parallel=1)) as victim:
        deployments = [
            Deployment(name="victim", url=victim.base_url),
            Deployment(name="a", url=server.base_url, weight=0),
        ]
        with _gateway(tmp_path, deployments, fallback="a") as gw:
            client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
            stream = client.completions.with_raw_response.create(
                model="gemma", prompt="Once upon a time", max_tokens=400, stream=True, extra_body={"ignore_eos": True}
            )
            streamed_id = stream.headers["x-request-id"]
            chunks = 0
            with pytest.raises(openai.APIError, match="mid-stream"):
                for _ in stream.parse():
                    chunks += 1
                    if chunks == 3:
                        victim.kill()
            after = httpx.post(
                gw.base_url + "/v1/completions", json={"model": "gemma", "prompt": "Hi", "max_tokens": 2}, timeout=60
            )
    assert chunks >= 3 and after.status_code == 200 and after.headers["x-llmops-deployment"] == "a"
    rows = {
        r["request_id"]: r
        for r in _rows_for(tmp_path / "requests.sqlite", {streamed_id, after.headers["x-request-id"]})
    }
    died, failed_over = rows[streamed_id], rows[after.headers["x-request-id"]]
    assert (died["deployment"], died["http_status"], died["error_type"]) == ("victim", 502, "upstream_died_mid_stream")
    assert (failed_over["deployment"], failed_over["fallback_from"], failed_over["http_status"]) == ("a", "victim", 200)


def _queue_depth(base_url: str, priority: str) -> float:
    families = text_string_to_metric_families(httpx.get(base_url + "/metrics", timeout=10).text)
    return next(
        (
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "llmops_gateway_queue_depth" and sample.labels.get("priority") == priority
        ),
        0.0,
    )


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_interactive_goes_before_batch_and_a_full_queue_answers_429(server, tmp_path):
    with _gateway(tmp_path, [Deployment(name="a", url=server.base_url)], concurrency=1, queue_size=2) as gw:
        answers: dict[str, httpx.Response] = {}

        def send(name: str, priority: str) -> None:
            body = {"model": "gemma", "prompt": f"{name}:", "max_tokens": 4, "priority": priority, "temperature": 0.5}
            answers[name] = httpx.post(gw.base_url + "/v1/completions", json=body, timeout=120)

        with httpx.stream(
            "POST",
            gw.base_url + "/v1/completions",
            timeout=120,
            json={"model": "gemma", "prompt": "Hold", "max_tokens": 60, "stream": True, "ignore_eos": True},
        ) as holder:
            lines = holder.iter_lines()
            next(lines)  # the only slot is now busy until this stream ends
            batch = threading.Thread(target=send, args=("batch", "batch"))
            batch.start()
            _wait_for(lambda: _queue_depth(gw.base_url, "batch") == 1)
            interactive = threading.Thread(target=send, args=("interactive", "interactive"))
            interactive.start()
            _wait_for(lambda: _queue_depth(gw.base_url, "interactive") == 1)
            rejected = httpx.post(
                gw.base_url + "/v1/completions", json={"model": "gemma", "prompt": "x", "max_tokens": 2}, timeout=30
            )
            for _ in lines:
                pass
        batch.join()
        interactive.join()
    assert (
        rejected.status_code == 429
        and rejected.headers["retry-after"]
        and rejected.json()["error"]["code"] == "queue_full"
    )
    ids = {name: a.headers["x-request-id"] for name, a in answers.items()}
    rows = {r["request_id"]: r for r in _rows_for(tmp_path / "requests.sqlite", set(ids.values()))}
    assert rows[ids["interactive"]]["finished_at"] < rows[ids["batch"]]["finished_at"], (
        "interactive overtook the batch request"
    )


def test_clients_gone_before_the_first_byte_give_their_slots_back(server, tmp_path):
    """Streamed requests whose clients leave while they wait (before any byte is relayed) still give
    their priority slot back and are logged: the next request is answered, not queued forever."""
    leavers = 6
    body = json.dumps({"model": "gemma", "prompt": "Leave", "max_tokens": 8, "stream": True}).encode()
    raw = b"POST /v1/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    raw += b"content-length: %d\r\n\r\n%s" % (len(body), body)
    with _gateway(tmp_path, [Deployment(name="a", url=server.base_url)], concurrency=1, queue_size=leavers) as gw:
        address = urlsplit(gw.base_url)
        with httpx.stream(
            "POST",
            gw.base_url + "/v1/completions",
            timeout=120,
            json={"model": "gemma", "prompt": "Hold", "max_tokens": 40, "stream": True, "ignore_eos": True},
        ) as holder:
            lines = holder.iter_lines()
            next(lines)  # the only slot is busy until this stream ends: the leavers wait in the queue
            sockets = [socket.create_connection((address.hostname, address.port)) for _ in range(leavers)]
            for sock in sockets:
                sock.sendall(raw)
            _wait_for(lambda: _queue_depth(gw.base_url, "interactive") == leavers)
            for sock in sockets:
                sock.close()  # gone before the first byte of the answer
            for _ in lines:
                pass
        _wait_for(lambda: _queue_depth(gw.base_url, "interactive") == 0, timeout_s=120)
        after = httpx.post(
            gw.base_url + "/v1/completions", json={"model": "gemma", "prompt": "Stay", "max_tokens": 2}, timeout=120
        )
    assert after.status_code == 200
    ids = {holder.headers["x-request-id"], after.headers["x-request-id"]}
    rows = _rows_for(tmp_path / "requests.sqlite", ids)
    gone = [r for r in rows if r["request_id"] not in ids]
    assert len(rows) == leavers + 2 and len(gone) == leavers, "each request logged once, the leavers too"
    assert all(r["stream"] == 1 and r["ttft_s"] is None for r in gone), "no byte was relayed to a leaver"


def test_a_stream_dropped_before_it_starts_gives_its_slot_back(server, tmp_path):
    """An ASGI server of spec 2.4 reports a client that has gone by raising OSError from `send`:
    Starlette then drops the relayed stream before its generator starts. Its slot comes back anyway."""
    config = GatewayConfig(
        routes=[Route(model="gemma", deployments=[Deployment(name="a", url=server.base_url)])],
        request_log=str(tmp_path / "requests.sqlite"),
        concurrency=8,
    )
    app = create_app(config)
    body = json.dumps({"model": "gemma", "prompt": "Leave", "max_tokens": 4, "stream": True}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def client_gone() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            raise OSError("the client has gone")

        with pytest.raises(ClientDisconnect):  # what Starlette makes of the OSError
            await app(dict(scope), receive, send)

    async def slots_held_after(leavers: int) -> int:
        async with app.router.lifespan_context(app):
            for _ in range(leavers):
                await client_gone()
            return app.state.gateway.gate.running

    assert asyncio.run(slots_held_after(5)) == 0


def test_api_keys_are_required_and_never_logged(server, tmp_path):
    secret = "sk-llmops-test-7f3a9c"
    with _gateway(
        tmp_path, [Deployment(name="a", url=server.base_url)], keys=[key_entry(secret, "t")], capture_text=True
    ) as gw:
        body = {"model": "gemma", "prompt": "Hello", "max_tokens": 2}
        refused = httpx.post(gw.base_url + "/v1/completions", json=body, timeout=60)
        wrong = httpx.get(gw.base_url + "/v1/models", headers={"authorization": "Bearer nope"}, timeout=60)
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=secret)
        answered = client.completions.with_raw_response.create(**body)
        assert httpx.get(gw.base_url + "/health").status_code == 200
    assert (
        refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key" and wrong.status_code == 401
    )
    _rows_for(tmp_path / "requests.sqlite", {answered.headers["x-request-id"]})
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("requests.sqlite*"))
    assert b"Hello" in stored and secret.encode() not in stored, "text capture works, the key is nowhere in the log"


def test_chat_through_openai_client_stream_and_not(model_path, tmp_path):
    spec = EngineSpec(
        model=model_path, n_ctx=512, threads=1, parallel=1, extra_args=("--no-jinja", "--chat-template", "gemma")
    )
    with LlamaServer(spec) as chat_server, _gateway(tmp_path, [Deployment(name="a", url=chat_server.base_url)]) as gw:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused")
        messages = [{"role": "user", "content": "Say hello."}]
        whole = client.chat.completions.create(model="gemma", messages=messages, max_tokens=4, temperature=0)
        pieces = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="gemma", messages=messages, max_tokens=4, temperature=0, stream=True
            )
            if c.choices
        ]
    assert whole.choices[0].message.content and whole.usage.completion_tokens > 0
    assert "".join(pieces) == whole.choices[0].message.content, "greedy: the stream spells the same answer"


_KEYS = ("model", "prompt", "messages", "max_tokens", "temperature", "top_p", "n", "stream", "stop", "priority")
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10**6)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["gemma", "interactive"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "text"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_BODIES = st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6).map(
    lambda b: json.dumps(b).encode()
) | st.binary(max_size=40)


@pytest.fixture(scope="module")
def fuzz_gateway(server, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "requests.sqlite"
    config = GatewayConfig(
        routes=[Route(model="gemma", deployments=[Deployment(name="a", url=server.base_url)])],
        request_log=str(log),
        max_tokens_limit=4,
        context_window=256,
    )
    with GatewayServer(config) as gw, httpx.Client(base_url=gw.base_url, timeout=60) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/feedback"]), body=_BODIES)
def test_no_malformed_request_gets_a_5xx(fuzz_gateway, path, body):
    response = fuzz_gateway.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.json()["error"]["message"]
