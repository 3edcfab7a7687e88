"""The `llmops` command as a person meets it."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_lib.errors import ExitCode, GateFailed, ModelError, SpecError, fail


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
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def _copy_with(source: Path, target: Path, position: int, data: bytes) -> Path:
    shutil.copyfile(source, target)
    with target.open("r+b") as stream:
        stream.seek(position)
        stream.write(data)
    return target


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, model_path) -> Iterator[Path]:
    """The real model with one header byte altered: 235 tensors announced instead of 236."""
    path = _copy_with(model_path, tmp_path_factory.mktemp("damaged") / "damaged.gguf", 8, bytes([235]))
    yield path
    path.unlink()


def _damage_line(path: Path) -> str:
    return f"{path} is a damaged GGUF file: 2,624 bytes after the last tensor's data"


def test_model_info_refuses_a_damaged_header_in_one_line(damaged):
    result = llmops("model", "info", str(damaged))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {_damage_line(damaged)}") and line.endswith("replace it with an intact copy")


def test_serve_refuses_a_damaged_header_before_starting_an_engine(damaged):
    result = llmops("serve", "--model", str(damaged), "--threads", "1")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {_damage_line(damaged)}")
    assert "serving" not in result.stdout


def test_registry_register_refuses_a_damaged_header(damaged, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmops_lib", "registry", "register", "gemma", str(damaged)],
        capture_output=True,
        text=True,
        env=os.environ | {"LLMOPS_HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot register gemma: {_damage_line(damaged)}")


@pytest.mark.engine
def test_serve_names_llama_cpps_reason_for_refusing_a_model(model_path, tmp_path):
    """A header that is whole but lacks a key llama.cpp needs: only the engine can tell; its log says why."""
    with model_path.open("rb") as stream:
        key_at = stream.read(8 << 20).find(b"gemma3.context_length")
    assert key_at > 0
    unknown_key = _copy_with(model_path, tmp_path / "renamed_key.gguf", key_at + len("gemma3.context_lengt"), b"X")
    from llmops_lib.engines.server import free_port

    result = llmops(
        "serve", "--model", str(unknown_key), "--port", str(free_port()), "--threads", "1", "--parallel", "1"
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: llama-server could not load {unknown_key}: ")
    assert "key not found in model: gemma3.context_length" in line
    unknown_key.unlink()


def test_fail_prints_one_line_and_picks_the_exit_code(capsys):
    assert fail("bad\n  news").exit_code == ExitCode.ERROR
    assert capsys.readouterr().err == "error: bad; news\n"
    assert fail(SpecError("x")).exit_code == ExitCode.BAD_PARAMETERS
    assert fail(GateFailed("x")).exit_code == ExitCode.GATE_FAILED
    assert fail(ModelError("x")).exit_code == ExitCode.INFRASTRUCTURE
    assert fail(ModelError("x"), ExitCode.ERROR).exit_code == 1
