"""Runbooks: typed parameters checked before anything runs, archived output, telling exit codes."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from llmops_lib.errors import RunbookParameterError
from llmops_lib.runbooks import (
    ExitCode,
    declared_parameters,
    find_runbook,
    parse_assignments,
    run_dir,
    run_runbook,
    validate_parameters,
)

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


@pytest.fixture
def own_home(tmp_path, monkeypatch) -> Path:
    """A home of this test's own: what it finds archived is what it ran, whatever runs beside it."""
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def archived(result: subprocess.CompletedProcess) -> Path:
    line = result.stdout.strip().splitlines()[-1]
    folder = Path(line.rsplit(": ", 1)[1])
    assert folder.parent == runs_dir()
    return folder


def test_unknown_parameter_exits_2_and_runs_nothing(own_home):
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
    folder = archived(result)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["parameters"]["requests"] == 2
    assert summary["records"]["completed"] == 2
    assert summary["records"]["gate.p95_e2el_ms"]["passed"] is True
    notebook = nbformat.read(folder / "health_check.ipynb", as_version=4)
    assert notebook.metadata.papermill.parameters["max_tokens"] == 8
    assert not (folder / "summary.json").stat().st_mode & 0o222, "archived files are read-only"


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
    folder = archived(result)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "gate_failed"
    notebook = nbformat.read(folder / "health_check.ipynb", as_version=4)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "GateFailed"


@pytest.mark.engine
def test_broken_run_exits_4(tmp_path, own_home):
    result = llmops("runbook", "run", "health_check", "-p", f"model={tmp_path / 'absent.gguf'}", "--no-progress")
    assert result.returncode == ExitCode.INFRASTRUCTURE
    assert "ModelError" in result.stderr and "not found" in result.stderr
    summary = json.loads((archived(result) / "summary.json").read_text())
    assert summary["status"] == "infrastructure"
    assert not list(runs_dir().glob(".incomplete-*")), "no half-written run left in the archive"


def test_a_parameter_given_twice_is_refused():
    with pytest.raises(RunbookParameterError, match=r"parameter 'requests' is given twice \('1' and '2'\)"):
        parse_assignments(["requests=1", "requests=2"])


def test_a_parameter_given_twice_exits_2_in_one_line_and_runs_nothing(own_home):
    before = set(runs_dir().glob("*")) if runs_dir().exists() else set()
    result = llmops("runbook", "run", "health_check", "-p", "requests=1", "-p", "requests=2")
    assert result.returncode == ExitCode.BAD_PARAMETERS
    assert result.stderr.strip().splitlines() == [
        "error: parameter 'requests' is given twice ('1' and '2'): give it once"
    ]
    assert (set(runs_dir().glob("*")) if runs_dir().exists() else set()) == before


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("requests", "0", r"parameter 'requests' must be within 1\.\.10000, got '0'"),
        ("requests", "10001", r"parameter 'requests' must be within 1\.\.10000, got '10001'"),
        ("p95_threshold_ms", "-1", r"parameter 'p95_threshold_ms' must be within 0\.\., got '-1'"),
        ("p95_threshold_ms", "nan", r"parameter 'p95_threshold_ms' must be a number, got 'nan'"),
    ],
)
def test_values_outside_their_range_are_refused(name, value, message):
    with pytest.raises(RunbookParameterError, match=message):
        validate_parameters(find_runbook("health_check"), {name: value})


def test_range_bounds_are_inclusive():
    values = validate_parameters(find_runbook("health_check"), {"requests": "1", "p95_threshold_ms": "0"})
    assert values == {"requests": 1, "p95_threshold_ms": 0.0}
    assert validate_parameters(find_runbook("health_check"), {"requests": "10000"}) == {"requests": 10000}


def test_requests_0_exits_2_before_anything_runs(own_home):
    before = set(runs_dir().glob("*")) if runs_dir().exists() else set()
    result = llmops("runbook", "run", "health_check", "-p", "requests=0")
    assert result.returncode == ExitCode.BAD_PARAMETERS, result.stderr
    assert result.stderr.strip().splitlines() == ["error: parameter 'requests' must be within 1..10000, got '0'"]
    assert (set(runs_dir().glob("*")) if runs_dir().exists() else set()) == before


def test_params_shows_the_range_apart_from_the_help():
    result = llmops("runbook", "params", "health_check")
    assert result.returncode == 0, result.stderr
    assert "requests: int = 8 (range 1..10000)    # completions to send" in result.stdout.splitlines()


def runbook(tmp_path: Path, parameters: str, body: str) -> Path:
    """A runbook of our own: a parameters cell and one cell of code."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(parameters), nbformat.v4.new_code_cell(body)]
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "own.ipynb"
    nbformat.write(notebook, path)
    return path


def test_ranges_are_read_from_the_help_comment(tmp_path):
    path = runbook(
        tmp_path,
        "n: int = 5  # things; range: 1..10\nx: float = 0.5  # range: 0..1; a share\nm: float = -2.5  # range: ..0\n"
        "s: str = 'a'  # no range here",
        "",
    )
    declared = declared_parameters(path)
    assert (declared["n"].low, declared["n"].high, declared["n"].help) == (1, 10, "things")
    assert (declared["x"].low, declared["x"].high, declared["x"].help) == (0, 1, "a share")
    assert (declared["m"].low, declared["m"].high) == (None, 0)
    assert (declared["s"].low, declared["s"].high, declared["s"].help) == (None, None, "no range here")
    with pytest.raises(RunbookParameterError, match=r"'m' must be within \.\.0, got '0\.5'"):
        validate_parameters(path, {"m": "0.5"})


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "n: int = 0  # things; range: 1..10",
            r"own\.ipynb declares a default outside its range: .*'n' must be within",
        ),
        ("s: str = 'a'  # range: 1..2", r"parameter 's' is str: only int and float parameters take a range"),
    ],
)
def test_a_runbook_with_a_wrong_range_is_refused(tmp_path, line, message):
    with pytest.raises(RunbookParameterError, match=message):
        declared_parameters(runbook(tmp_path, line, ""))


def test_gate_true_and_run_dir_in_a_real_run(tmp_path):
    path = runbook(
        tmp_path,
        "promoted: bool = False  # whether the rollout was promoted",
        "from llmops_lib.runbooks import gate_true, run_dir\n"
        "(run_dir() / 'note.txt').write_text('kept with the run')\n"
        "gate_true('promoted', promoted, detail='phase RolledBack')",
    )
    failed = run_runbook(str(path), {"promoted": "false"})
    assert failed.exit_code == ExitCode.GATE_FAILED, failed.error
    assert failed.error == "GateFailed: gate 'promoted' failed: phase RolledBack"
    assert failed.records["gate.promoted"] == {"value": False, "limit": "true", "passed": False}
    assert (Path(failed.run_dir) / "note.txt").read_text() == "kept with the run"
    passed = run_runbook(str(path), {"promoted": "true"})
    assert passed.exit_code == ExitCode.OK, passed.error
    assert passed.records["gate.promoted"]["passed"] is True


def test_run_dir_outside_a_run_is_one_temporary_folder(monkeypatch):
    monkeypatch.delenv("LLMOPS_RUN_DIR", raising=False)
    assert run_dir() == run_dir()
    assert run_dir().is_dir() and run_dir().parent == Path(tempfile.gettempdir())
