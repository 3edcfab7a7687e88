"""llama.cpp for real: in-process and as llama-server, on the default model."""

import time
from dataclasses import replace

import httpx
import psutil
import pytest

from llmops_lib.config import settings
from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.errors import EngineError, ModelError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route

pytestmark = pytest.mark.engine

PROMPT = "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Japan?\nA:"


def test_in_process_greedy_completion_is_repeatable(in_process):
    first = in_process.complete(PROMPT, max_tokens=8)
    second = in_process.complete(PROMPT, max_tokens=8)
    assert first.text == second.text
    assert "Tokyo" in first.text
    assert first.prompt_tokens == len(in_process.tokenize(PROMPT))
    assert 0 < first.ttft_s <= first.latency_s


def test_ignore_eos_generates_exactly_max_tokens(in_process, server):
    for engine in (in_process, server):
        done = engine.complete("The end.", max_tokens=12, ignore_eos=True)
        assert done.completion_tokens == 12, engine.name
        assert done.finish_reason == "length"
        assert done.generation_tokens_per_s > 0


def test_server_completes_over_http(server):
    done = server.complete(PROMPT, max_tokens=8)
    assert "Tokyo" in done.text
    assert done.prompt_tokens > 10 and done.completion_tokens >= 1
    assert server.base_url.startswith("http://127.0.0.1:")


def test_server_streams_token_by_token(server):
    events = list(server.client.stream_events("Count: one, two, three,", max_tokens=10, ignore_eos=True))
    texts = [c["text"] for e in events for c in e.get("choices", []) if c.get("text")]
    assert len(texts) >= 5, "a streamed answer arrives in several events"


def test_server_exposes_prometheus_metrics(server):
    server.complete(PROMPT, max_tokens=4)
    text = server.metrics_text()
    assert "llamacpp:prompt_tokens_total" in text
    assert "llamacpp:tokens_predicted_total" in text


def test_client_disconnect_mid_stream_frees_the_slot(server):
    stream = server.client.stream_events("Write a long story about a lighthouse.", max_tokens=400, ignore_eos=True)
    next(stream)
    stream.close()  # the client goes away after the first token
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        slots = server.client.get("/slots").json()
        if not any(slot.get("is_processing") for slot in slots):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the slot kept generating for a client that left")
    assert "Tokyo" in server.complete(PROMPT, max_tokens=8).text


def test_stop_leaves_no_process(spec):
    engine = LlamaServer(spec).start()
    pid = engine.pid
    assert httpx.get(f"{engine.base_url}/health").status_code == 200
    engine.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    engine.stop()  # twice is fine


def test_port_in_use_is_a_clear_error(server, spec):
    with pytest.raises(EngineError, match=f"port {server.port} .* in use"):
        LlamaServer(spec, port=server.port).start()


def test_missing_model_is_refused_before_starting(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        LlamaServer(EngineSpec(model=tmp_path / "absent.gguf")).start()


def test_damaged_model_is_refused_before_starting(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 1024)  # right magic, nothing valid behind it
    engine = LlamaServer(EngineSpec(model=broken, threads=1), start_timeout_s=60)
    with pytest.raises(ModelError):
        engine.start()
    assert not engine.running() and engine.log_path is None, "no process started, no log left"


def test_engine_crash_at_start_reports_its_log(spec):
    engine = LlamaServer(replace(spec, extra_args=("--no-such-flag",)), start_timeout_s=60)
    with pytest.raises(EngineError, match="exited with code .*no-such-flag") as raised:
        engine.start()
    assert f"log: {engine.log_path}" in str(raised.value)
    assert not engine.running()


def test_the_gateway_is_a_child_server_like_an_engine(server):
    config = GatewayConfig(routes=[Route(model="m", deployments=[Deployment(name="a", url=server.base_url)])])
    with pytest.raises(EngineError, match=f"port {server.port} .* in use"):
        GatewayServer(config, port=server.port).start()
    with GatewayServer(config) as gateway:
        pid = gateway.pid
        assert httpx.get(gateway.base_url + "/health", timeout=10).status_code == 200
        assert gateway.config_path.parent == gateway.log_path.parent == settings().logs_dir / "gateway"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(EngineError, match="not running"):
        _ = gateway.base_url


def test_server_dying_mid_request_is_an_engine_error(spec):
    with LlamaServer(spec) as engine:
        stream = engine.client.stream_events("Tell a long story.", max_tokens=500, ignore_eos=True)
        next(stream)
        engine.kill()  # as a crash would: SIGKILL, no goodbye
        with pytest.raises(EngineError):
            list(stream)
