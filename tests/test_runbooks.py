"""Runbooks: typed parameters checked before anything runs, archived output, telling exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llmops_lib.errors import RunbookParameterError
from llmops_lib.runbooks import ExitCode, declared_parameters, find_runbook, parse_assignments, validate_parameters

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = sorted((ROOT / "runbooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_every_runbook_declares_typed_parameters(path):
    params = declared_parameters(path)
    assert params, f"{path.name} has no parameters cell"
    for p in params.values():
        assert p.type_name in {"int", "float", "str", "bool"}, f"{path.name}: {p.name} is {p.type_name}"
        assert p.help, f"{path.name}: {p.name} needs a help comment"


def test_values_are_converted_to_the_declared_types():
    path = find_runbook("health_check")
    values = validate_parameters(path, {"requests": "3", "p95_threshold_ms": "12.5", "engine": "in-process"})
    assert values == {"requests": 3, "p95_threshold_ms": 12.5, "engine": "in-process"}


@pytest.mark.parametrize(
    "given, message",
    [
        ({"not_a_param": "1"}, "no parameter 'not_a_param'.*accepts .*requests: int"),
        ({"requests": "many"}, "must be int"),
    ],
)
def test_bad_parameters_are_refused(given, message):
    with pytest.raises(RunbookParameterError, match=message):
        validate_parameters(find_runbook("health_check"), given)


def test_assignments_must_be_key_value():
    assert parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(RunbookParameterError, match="key=value"):
        parse_assignments(["novalue"])


def llmops(*args: str) -> subprocess.CompletedProcess:
    """The real `llmops` command, as an operator's cron job would run it."""
    return subprocess.run(
        [sys.executable, "-m", "llmops_lib", *args], capture_output=True, text=True, cwd=ROOT, env=os.environ.copy()
    )


def runs_dir() -> Path:
    return Path(os.environ["LLMOPS_HOME"]) / "runs"


def archived(result: subprocess.CompletedProcess) -> Path:
    line = result.stdout.strip().splitlines()[-1]
    run_dir = Path(line.rsplit(": ", 1)[1])
    assert run_dir.parent == runs_dir()
    return run_dir


def test_unknown_parameter_exits_2_and_runs_nothing():
    before = set(runs_dir().glob("*")) if runs_dir().exists() else set()
    result = llmops("runbook", "run", "health_check", "-p", "not_a_param=1")
    assert result.returncode == ExitCode.BAD_PARAMETERS
    assert "not_a_param" in result.stderr and "accepts" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear line"
    after = set(runs_dir().glob("*")) if runs_dir().exists() else set()
    assert after == before


def test_unknown_runbook_exits_2():
    result = llmops("runbook", "run", "no_such_runbook")
    assert result.returncode == ExitCode.BAD_PARAMETERS
    assert "health_check" in result.stderr


@pytest.mark.engine
def test_healthy_run_is_archived_with_its_records(model_path):
    result = llmops("runbook", "run", "health_check", "-p", "requests=2", "-p", "max_tokens=8", "--no-progress")
    assert result.returncode == ExitCode.OK, result.stderr
    run_dir = archived(result)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["parameters"]["requests"] == 2
    assert summary["records"]["completed"] == 2
    assert summary["records"]["gate.p95_e2el_ms"]["passed"] is True
    notebook = nbformat.read(run_dir / "health_check.ipynb", as_version=4)
    assert notebook.metadata.papermill.parameters["max_tokens"] == 8
    assert not os.access(run_dir / "summary.json", os.W_OK) or os.geteuid() == 0
    assert not (run_dir / "summary.json").stat().st_mode & 0o222, "archived files are read-only"


@pytest.mark.engine
def test_failed_gate_exits_3_and_keeps_the_output_notebook(model_path):
    result = llmops(
        "runbook",
        "run",
        "health_check",
        "-p",
        "requests=1",
        "-p",
        "max_tokens=4",
        "-p",
        "p95_threshold_ms=0.001",
        "--no-progress",
    )
    assert result.returncode == ExitCode.GATE_FAILED, result.stderr
    assert "gate 'p95_e2el_ms' failed" in result.stderr
    run_dir = archived(result)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "gate_failed"
    notebook = nbformat.read(run_dir / "health_check.ipynb", as_version=4)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "GateFailed"


@pytest.mark.engine
def test_broken_run_exits_4(tmp_path):
    result = llmops("runbook", "run", "health_check", "-p", f"model={tmp_path / 'absent.gguf'}", "--no-progress")
    assert result.returncode == ExitCode.INFRASTRUCTURE
    assert "ModelError" in result.stderr and "not found" in result.stderr
    summary = json.loads((archived(result) / "summary.json").read_text())
    assert summary["status"] == "infrastructure"
    assert not list(runs_dir().glob(".incomplete-*")), "no half-written run left in the archive"
