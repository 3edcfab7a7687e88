"""Run a runbook notebook with papermill: typed parameters, an archived record, telling exit codes.

A runbook declares its parameters in a cell tagged `parameters`, each with a type annotation, a
default and a help comment; a number's comment may carry its range, inclusive, either end optional:

    requests: int = 8  # completions to send; range: 1..10000

`run_runbook` refuses any other name, a name given twice, a value that does not parse as the
declared type or lies outside its range *before* anything runs (papermill itself only warns), then
executes the notebook and archives the output notebook, the parameters and a JSON summary under
`LLMOPS_HOME/runs/<run-id>/`. Inside the notebook, `record()` keeps a value for the summary,
`gate()` and `gate_true()` fail the run, and `run_dir()` is the folder archived with it.

Explained in: runbooks/health_check.ipynb and the README ("Run a runbook").
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import nbformat

from llmops_lib import audit
from llmops_lib.atomic import write_text
from llmops_lib.config import settings
from llmops_lib.errors import ExitCode, GateFailed, RunArchiveError, RunbookParameterError

RECORD_MIME = "application/vnd.llmops.record+json"
RUN_DIR_ENV = "LLMOPS_RUN_DIR"

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"\s*;?\s*\brange:\s*(?P<low>{_NUMBER})?\s*\.\.\s*(?P<high>{_NUMBER})?\s*")


@dataclass(frozen=True)
class Parameter:
    """One declared runbook parameter; `low`/`high` bound a number (inclusive, None: unbounded)."""

    name: str
    type_name: str
    default: str
    help: str
    low: float | None = None
    high: float | None = None

    @classmethod
    def declared(cls, name: str, type_name: str, default: str, comment: str) -> Parameter:
        """A parameter from its line in the `parameters` cell; a `range: LOW..HIGH` leaves the help text."""
        match = _RANGE.search(comment)
        if match is None:
            return cls(name, type_name, default, comment.strip())
        if type_name not in ("int", "float"):
            raise RunbookParameterError(
                f"parameter {name!r} is {type_name}: only int and float parameters take a range"
            )
        low, high = (float(v) if v is not None else None for v in match.group("low", "high"))
        text = (comment[: match.start()] + " " + comment[match.end() :]).strip(" ;")
        return cls(name, type_name, default, text, low, high)

    @property
    def range_text(self) -> str:
        """`1..10000`, `0..`, or '' without a range."""
        if self.low is None and self.high is None:
            return ""
        return f"{_number(self.low)}..{_number(self.high)}"

    @property
    def signature(self) -> str:
        """`requests: int = 8 (range 1..10000)`: what `llmops runbook list` shows."""
        bounds = f" (range {self.range_text})" if self.range_text else ""
        return f"{self.name}: {self.type_name} = {self.default}{bounds}"

    def describe(self) -> str:
        """One line for `llmops runbook params`: the signature and the help."""
        return self.signature + (f"    # {self.help}" if self.help else "")

    def parse(self, raw: Any) -> Any:
        """Turn a command-line string (or a Python value) into the declared type, inside its range."""
        value = self._convert(raw if isinstance(raw, str) else str(raw))
        if isinstance(value, float) and math.isnan(value):
            raise RunbookParameterError(f"parameter {self.name!r} must be a number, got {raw!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise RunbookParameterError(f"parameter {self.name!r} must be within {self.range_text}, got {raw!r}")
        return value

    def _convert(self, raw: str) -> Any:
        if self.type_name not in _TYPES:
            raise RunbookParameterError(
                f"parameter {self.name!r} is declared as {self.type_name!r}; runbooks may use int, float, str, bool"
            )
        kind = _TYPES[self.type_name]
        if kind is bool:
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
        else:
            try:
                return kind(raw)
            except ValueError:
                pass
        raise RunbookParameterError(f"parameter {self.name!r} must be {self.type_name}, got {raw!r}")


def _number(bound: float | None) -> str:
    return "" if bound is None else f"{bound:g}"


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
    """The parameters a runbook declares in its `parameters` cell, by name (a default outside its range is refused)."""
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    if not found:
        raise RunbookParameterError(f"{notebook} has no cell tagged 'parameters', so it cannot be run as a runbook")
    declared = {
        name: Parameter.declared(name, str(p["inferred_type_name"]), str(p["default"]), str(p.get("help") or ""))
        for name, p in found.items()
    }
    for parameter in declared.values():
        if parameter.range_text:
            try:
                parameter.parse(parameter.default)
            except RunbookParameterError as exc:
                raise RunbookParameterError(f"{notebook.name} declares a default outside its range: {exc}") from None
    return declared


def validate_parameters(notebook: Path, given: dict[str, Any]) -> dict[str, Any]:
    """Check names, types and ranges against the notebook; return the values converted to their types."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        accepted = ", ".join(f"{p.name}: {p.type_name}" for p in declared.values())
        raise RunbookParameterError(
            f"{notebook.stem} has no parameter {', '.join(map(repr, unknown))}; it accepts {accepted}"
        )
    return {name: declared[name].parse(value) for name, value in given.items()}


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` → `{"a": "1", "b": "x"}` (the CLI's `-p key=value`); a name given twice is refused."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise RunbookParameterError(f"parameter {pair!r} is not of the form key=value")
        if name in result:
            raise RunbookParameterError(
                f"parameter {name!r} is given twice ({result[name]!r} and {value!r}): give it once"
            )
        result[name] = value
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
    limit = " and ".join(
        text for text, bound in ((f"<= {at_most}", at_most), (f">= {at_least}", at_least)) if bound is not None
    )
    record(f"gate.{name}", {"value": value, "limit": limit, "passed": passed})
    if not passed:
        raise GateFailed(f"gate {name!r} failed: {value:.4g} is not {limit}")


def gate_true(name: str, ok: bool, *, detail: str = "") -> None:
    """Record a yes/no gate and fail the run (exit code 3) when `ok` is false; `detail` says what was seen."""
    ok = bool(ok)
    record(f"gate.{name}", {"value": ok, "limit": "true", "passed": ok})
    if not ok:
        raise GateFailed(f"gate {name!r} failed" + (f": {detail}" if detail else ""))


def run_dir() -> Path:
    """The folder of the run in progress, archived with it (`LLMOPS_RUN_DIR`, set by `run_runbook`).

    A runbook opened by hand or run by nbval has no run: it gets one temporary folder per kernel.
    """
    if path := os.environ.get(RUN_DIR_ENV):
        return Path(path)
    return _scratch_dir()


@functools.cache
def _scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="llmops-run-"))


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
        RunbookParameterError: unknown runbook or parameter, or a value of the wrong type or range
            (nothing has run and nothing is archived).
        RunArchiveError: the run could not be archived (e.g. a full disk); nothing is kept.
    """
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
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    code, error = execute(source, work, values, progress_bar=progress_bar, cell_timeout_s=cell_timeout_s)
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
    archive(result, work)
    audit.record(
        "runbook.run",
        runbook=result.runbook,
        run_id=run_id,
        parameters=values,
        exit_code=result.exit_code,
        status=result.status,
        run_dir=result.run_dir,
    )
    return result


def execute(
    source: Path, work: Path, values: dict[str, Any], *, progress_bar: bool = False, cell_timeout_s: int | None = None
) -> tuple[ExitCode, str | None]:
    """Execute `source` with papermill into `work/<name>.ipynb`; the exit code and the error line, if any."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        with _run_environment(work):
            papermill.execute_notebook(
                str(source),
                str(work / f"{source.stem}.ipynb"),
                parameters=values,
                progress_bar=progress_bar,
                execution_timeout=cell_timeout_s,
                cwd=str(source.parent),
            )
    except PapermillExecutionError as exc:
        code = ExitCode.GATE_FAILED if exc.ename == GateFailed.__name__ else ExitCode.INFRASTRUCTURE
        return code, f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel death, cell timeout, unwritable output: the run is broken
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ExitCode.INFRASTRUCTURE, f"{type(exc).__name__}: {first_line}"
    return ExitCode.OK, None


@contextmanager
def _run_environment(work: Path) -> Iterator[None]:
    """The kernel inherits an absolute home and the run folder (files a runbook saves there are archived)."""
    before = {key: os.environ.get(key) for key in ("LLMOPS_HOME", RUN_DIR_ENV)}
    os.environ["LLMOPS_HOME"] = str(settings().home)
    os.environ[RUN_DIR_ENV] = str(work)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def archive(result: RunResult, work: Path) -> None:
    """Add the records, parameters.json and summary.json to `work`, make it read-only, rename it to `result.run_dir`.

    Raises:
        RunArchiveError: anything failed (a full disk); `work` is removed, since a half-archived run
            would pass for a record.
    """
    output = work / f"{result.runbook}.ipynb"
    try:
        # The run broke before papermill wrote anything, or the notebook must read back whole.
        result.records = records_of(nbformat.read(output, as_version=4)) if output.exists() else {}
        write_text(work / "parameters.json", json.dumps(result.parameters, indent=2) + "\n")
        write_text(work / "summary.json", json.dumps(asdict(result), indent=2, default=str) + "\n")
        for path in work.rglob("*"):  # the record is immutable once archived
            if path.is_file():
                path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        work.rename(result.run_dir)
    except (OSError, ValueError) as exc:  # ValueError: a notebook cut short by a full disk
        shutil.rmtree(work, ignore_errors=True)
        reason = exc.strerror if isinstance(exc, OSError) else result.error or "output notebook incomplete"
        raise RunArchiveError(
            f"could not archive the {result.runbook} run under {work.parent} ({reason}); nothing was kept: "
            "free space there and run again"
        ) from exc
