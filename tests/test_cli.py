"""The `llmops` command as a person meets it."""

import subprocess
import sys

import pytest


def llmops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmops_lib", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args", [(), ("model",), ("runbook",), ("serve",), ("runbook", "run")])
def test_help_explains_every_command(args):
    result = llmops(*args, "--help")
    assert result.returncode == 0
    assert "Usage: llmops" in result.stdout
    assert len(result.stdout.splitlines()) > 5


def test_model_info_describes_the_default_model(model_path):
    result = llmops("model", "info")
    assert result.returncode == 0, result.stderr
    assert "gemma3" in result.stdout and "Q4_K_M" in result.stdout and "no (base model)" in result.stdout


def test_model_info_on_a_non_gguf_file_is_one_clear_line(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_text("hello")
    result = llmops("model", "info", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {path} is not a GGUF file (it does not start with the GGUF magic bytes)"


@pytest.mark.engine
def test_serve_answers_and_stops_on_sigterm(model_path):
    import signal
    import time

    import httpx

    from llmops_lib.engines.server import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llmops_lib", "serve", "--port", str(port), "--threads", "1", "--parallel", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in banner, process.stderr.read() if process.poll() is not None else banner
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "Hello", "max_tokens": 4}, timeout=60
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["text"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
