"""The chat model SmolLM2-135M-Instruct as a new user meets it: by name in a spec and on the command
line, served by llama-server with its own chat template, directly and through the gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmops_lib.engines import EngineSpec
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.gguf_header import read_header
from llmops_lib.observe.request_log import RequestLogReader

# Asked by hand first (temperature 0): SmolLM2-135M answers this one right ("The capital of Japan
# is Tokyo."), while "What is the capital of France?" without a system prompt drifts into French.
QUESTION = [{"role": "user", "content": "What is the capital of Japan?"}]


def llmops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmops_lib", *args], capture_output=True, text=True)


def _chat(base_url: str, **extra: object) -> httpx.Response:
    body = {"messages": QUESTION, "temperature": 0, "max_tokens": 24} | extra
    return httpx.post(base_url + "/v1/chat/completions", json=body, timeout=120)


def test_engine_spec_accepts_a_catalogue_name(chat_model_path, model_path):
    assert EngineSpec(model="smollm2").model == chat_model_path
    assert EngineSpec(model="gemma3-270m").model == model_path
    assert EngineSpec(model=str(chat_model_path)).model == chat_model_path, "a path stays a path"
    assert EngineSpec(model=Path("smollm2")).model == Path("smollm2"), "a Path is never taken for a name"


def test_llama_server_answers_a_chat_with_the_models_own_template(chat_server, chat_model_path):
    in_file = read_header(chat_model_path).fields["tokenizer.chat_template"]
    assert "<|im_start|>" in in_file, "SmolLM2's template is ChatML"
    assert httpx.get(chat_server.base_url + "/props", timeout=30).json()["chat_template"] == in_file
    response = _chat(chat_server.base_url)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Tokyo" in choice["message"]["content"]
    assert "<|im_" not in choice["message"]["content"], "the template's markers are not echoed back"


def test_the_gateway_serves_chat_on_the_chat_model(chat_server, tmp_path):
    log = tmp_path / "requests.sqlite"
    config = GatewayConfig(
        routes=[Route(model="smollm2", deployments=[Deployment(name="smol", url=chat_server.base_url)])],
        request_log=str(log),
    )
    with GatewayServer(config) as gateway:
        response = _chat(gateway.base_url, model="smollm2")
    assert response.status_code == 200, response.text
    assert "Tokyo" in response.json()["choices"][0]["message"]["content"]
    request_id = response.headers["x-request-id"]
    with RequestLogReader(log) as reader:
        rows = [row for row in reader.rows_including({request_id}) if row["request_id"] == request_id]
    assert len(rows) == 1 and rows[0]["deployment"] == "smol"


def test_cli_model_path_and_info_by_name(chat_model_path):
    path = llmops("model", "path", "smollm2")
    assert path.returncode == 0, path.stderr
    assert path.stdout.strip() == str(chat_model_path)
    info = llmops("model", "info", "smollm2")
    assert info.returncode == 0, info.stderr
    assert str(chat_model_path) in info.stdout
    assert any(line.startswith("chat template") and line.endswith("  yes") for line in info.stdout.splitlines())


@pytest.mark.parametrize("command", [("model", "path", "llama-7b"), ("model", "info", "--json", "nope")])
def test_cli_unknown_model_is_one_line_error(command):
    result = llmops(*command)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and "smollm2" in result.stderr and "gemma3-270m" in result.stderr


def test_cli_help_names_the_catalogue():
    for command in ("path", "info"):
        result = llmops("model", command, "--help")
        assert result.returncode == 0
        assert "smollm2" in result.stdout and "gemma3-270m" in result.stdout
