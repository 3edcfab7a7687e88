"""Run a runbook notebook with papermill: typed parameters, an archived record, telling exit codes.

A runbook declares its parameters in a cell tagged `parameters`, each with a type annotation and a
default (`p95_threshold_ms: float = 5000.0  # why`). `run_runbook` refuses any other name or a value
that does not parse as the declared type *before* anything runs (papermill itself only warns),
then executes the notebook and archives the output notebook, the parameters and a JSON summary
under `LLMOPS_HOME/runs/<run-id>/`. Inside the notebook, `record()` keeps a value for the summary
and `gate()` fails the run on a threshold.

Explained in: runbooks/health_check.ipynb and the README ("Run a runbook").
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any
from uuid import uuid4

import nbformat

from llmops_lib.config import settings
from llmops_lib.errors import GateFailed, RunArchiveError, RunbookParameterError

RECORD_MIME = "application/vnd.llmops.record+json"


class ExitCode(IntEnum):
    """What `llmops runbook run` exits with. Cron and CI can tell a failed gate from a broken run."""

    OK = 0
    BAD_PARAMETERS = 2  # nothing ran: unknown runbook, unknown parameter, or a value of the wrong type
    GATE_FAILED = 3  # the runbook ran and a gate found the system outside its threshold
    INFRASTRUCTURE = 4  # the runbook could not finish: an error other than a gate, a timeout, a dead kernel


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Parameter:
    """One declared runbook parameter."""

    name: str
    type_name: str
    default: str
    help: str

    def parse(self, raw: Any) -> Any:
        """Turn a command-line string (or a Python value) into the declared type."""
        if self.type_name not in _TYPES:
            raise RunbookParameterError(
                f"parameter {self.name!r} is declared as {self.type_name!r}; runbooks may use int, float, str, bool"
            )
        if not isinstance(raw, str):
            raw = str(raw)
        kind = _TYPES[self.type_name]
        if kind is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
        else:
            try:
                return kind(raw)
            except ValueError:
                pass
        raise RunbookParameterError(f"parameter {self.name!r} must be {self.type_name}, got {raw!r}")


def runbooks_dir() -> Path:
    """`LLMOPS_RUNBOOKS`, else `./runbooks`, else the repository's `runbooks/` (editable install)."""
    if env := os.environ.get("LLMOPS_RUNBOOKS"):
        return Path(env)
    here = Path.cwd() / "runbooks"
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "runbooks"


def available_runbooks() -> list[str]:
    return sorted(p.stem for p in runbooks_dir().glob("*.ipynb"))


def find_runbook(name_or_path: str) -> Path:
    """A runbook by name (`health_check`) or by path to an `.ipynb` file."""
    path = Path(name_or_path)
    if path.suffix == ".ipynb" and path.is_file():
        return path
    candidate = runbooks_dir() / f"{name_or_path}.ipynb"
    if candidate.is_file():
        return candidate
    raise RunbookParameterError(
        f"no runbook named {name_or_path!r} in {runbooks_dir()}; available: {', '.join(available_runbooks()) or 'none'}"
    )


def declared_parameters(notebook: Path) -> dict[str, Parameter]:
    """The parameters a runbook declares in its `parameters` cell, by name."""
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    if not found:
        raise RunbookParameterError(f"{notebook} has no cell tagged 'parameters', so it cannot be run as a runbook")
    return {
        name: Parameter(name, str(p["inferred_type_name"]), str(p["default"]), str(p.get("help", "")))
        for name, p in found.items()
    }


def validate_parameters(notebook: Path, given: dict[str, Any]) -> dict[str, Any]:
    """Check names and types against the notebook; return the values converted to their types."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        accepted = ", ".join(f"{p.name}: {p.type_name}" for p in declared.values())
        raise RunbookParameterError(
            f"{notebook.stem} has no parameter {', '.join(map(repr, unknown))}; it accepts {accepted}"
        )
    return {name: declared[name].parse(value) for name, value in given.items()}


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` → `{"a": "1", "b": "x"}` (the CLI's `-p key=value`)."""
    result = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise RunbookParameterError(f"parameter {pair!r} is not of the form key=value")
        result[name.strip()] = value
    return result


# --- inside a running runbook --------------------------------------------------------------


def record(name: str, value: Any) -> Any:
    """Show a value in the notebook and keep it for the run's `summary.json`. Returns `value`."""
    from IPython.display import display

    display({RECORD_MIME: {"name": name, "value": value}, "text/plain": f"{name} = {value!r}"}, raw=True)
    return value


def gate(name: str, value: float, *, at_most: float | None = None, at_least: float | None = None) -> None:
    """Record a gate and fail the run (exit code 3) if `value` is outside its limit."""
    passed = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    limit = f"<= {at_most}" if at_most is not None else f">= {at_least}"
    record(f"gate.{name}", {"value": value, "limit": limit, "passed": passed})
    if not passed:
        raise GateFailed(f"gate {name!r} failed: {value:.4g} is not {limit}")


def records_of(notebook: nbformat.NotebookNode) -> dict[str, Any]:
    """Every value `record()` left in an executed notebook, by name (last one wins)."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                values[data[RECORD_MIME]["name"]] = data[RECORD_MIME]["value"]
    return values


# --- running one -----------------------------------------------------------------------------


@dataclass
class RunResult:
    """What a runbook run left behind."""

    run_id: str
    runbook: str
    source: str
    parameters: dict[str, Any]
    exit_code: int
    status: str
    started: str
    duration_s: float
    run_dir: str
    records: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_runbook(
    name_or_path: str,
    parameters: dict[str, Any] | None = None,
    *,
    progress_bar: bool = False,
    cell_timeout_s: int | None = None,
) -> RunResult:
    """Validate, execute and archive one runbook run.

    Raises:
        RunbookParameterError: unknown runbook or parameter, or a value of the wrong type
            (nothing has run and nothing is archived).
        RunArchiveError: the run could not be archived (e.g. a full disk); nothing is kept.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = find_runbook(name_or_path)
    values = validate_parameters(source, parameters or {})
    runs = settings().runs_dir
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{source.stem}-{uuid4().hex[:6]}"
    # Work in a hidden folder and rename at the end: the archive never shows a half-run.
    work = runs / f".incomplete-{run_id}"
    try:
        work.mkdir(parents=True)
    except OSError as exc:
        raise RunArchiveError(
            f"cannot create a run folder under {runs} ({exc.strerror}): fix that folder or set LLMOPS_HOME"
        ) from exc
    output = work / f"{source.stem}.ipynb"
    env_before = {key: os.environ.get(key) for key in ("LLMOPS_HOME", "LLMOPS_RUN_DIR")}
    os.environ["LLMOPS_HOME"] = str(settings().home)  # the kernel inherits an absolute home
    os.environ["LLMOPS_RUN_DIR"] = str(work)  # files a runbook saves there are archived with it
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=values,
            progress_bar=progress_bar,
            execution_timeout=cell_timeout_s,
            cwd=str(source.parent),
        )
        code = ExitCode.OK
    except PapermillExecutionError as exc:
        code = ExitCode.GATE_FAILED if exc.ename == GateFailed.__name__ else ExitCode.INFRASTRUCTURE
        error = f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel death, cell timeout, unwritable output: the run is broken
        code = ExitCode.INFRASTRUCTURE
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result = RunResult(
        run_id=run_id,
        runbook=source.stem,
        source=str(source.resolve()),
        parameters=values,
        exit_code=int(code),
        status=code.name.lower(),
        started=started,
        duration_s=round(time.perf_counter() - clock, 2),
        run_dir=str(runs / run_id),
        error=error,
    )
    try:
        # The run broke before papermill wrote anything, or the notebook must read back whole.
        result.records = records_of(nbformat.read(output, as_version=4)) if output.exists() else {}
        (work / "parameters.json").write_text(json.dumps(values, indent=2) + "\n")
        (work / "summary.json").write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
        for path in work.rglob("*"):  # the record is immutable once archived
            if path.is_file():
                path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        work.rename(runs / run_id)
    except (OSError, ValueError) as exc:  # ValueError: a notebook cut short by a full disk
        shutil.rmtree(work, ignore_errors=True)  # a half-archived run would pass for a record
        reason = exc.strerror if isinstance(exc, OSError) else error or "output notebook incomplete"
        raise RunArchiveError(
            f"could not archive the {source.stem} run under {runs} ({reason}); nothing was kept: free space there and run again"
        ) from exc
    return result
