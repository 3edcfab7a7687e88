"""The library's exception types, and how a command reports one: a single `error: …` line and an exit code.

Every error a user can cause or meet carries a one-line message that names what was wrong and
what to do about it, so the CLI and the runbooks can print it as it is. `fail()` is the one way
the `llmops` commands (`cli.py`, `release/cli.py`) print it and choose the exit code.

Explained in: README.md ("Run a runbook": the exit codes) and runbooks/health_check.ipynb.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer


class LLMOpsError(Exception):
    """Base of every error the library raises on purpose."""


class ModelError(LLMOpsError):
    """A model file is missing, unreadable, or not the file it claims to be."""


class EngineError(LLMOpsError):
    """An engine could not start, died, or did not answer."""


class SpecError(LLMOpsError, ValueError):
    """A spec (engine, runbook parameters, …) holds a value outside what is accepted."""


class UnknownModelError(ModelError, SpecError):
    """A model name that the catalogue (`models.MODELS`) does not hold: bad input."""


class PromptError(SpecError):
    """A prompt template, reference, model config or alias move is malformed, or a variable is missing."""


class PromptNotFound(PromptError):
    """No such prompt, version or alias in the registry (the message lists what exists).

    `public` is the part a gateway may tell its clients: the message for operators names the
    registry's location and every prompt in it, which callers of an API should not learn.
    """

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


class RunbookParameterError(SpecError):
    """A runbook was given a parameter it does not declare, or a value of the wrong type."""


class GateFailed(LLMOpsError):
    """A runbook's gate found the measured system outside its threshold (not a crash)."""


class RunArchiveError(LLMOpsError):
    """A runbook run could not be archived (full disk, no permission); nothing half-written is kept."""


class AuditError(LLMOpsError):
    """The audit log could not be written or read, or its signing key is missing or exposed."""


class ExitCode(IntEnum):
    """What the `llmops` commands exit with, so cron and CI can tell a failed gate from a broken run."""

    OK = 0
    ERROR = 1  # a command could not do its job: a bad model file, an engine that would not start
    BAD_PARAMETERS = (
        2  # nothing ran: unknown runbook, unknown or repeated parameter, a value of the wrong type or range
    )
    GATE_FAILED = 3  # the runbook ran and a gate found the system outside its threshold (a rollout rolled back)
    INFRASTRUCTURE = 4  # the run could not finish: an error other than a gate, a timeout, a dead kernel


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code an error means for a runbook or rollout: bad input 2, a failed gate 3, anything else 4."""
    if isinstance(error, SpecError):
        return ExitCode.BAD_PARAMETERS
    if isinstance(error, GateFailed):
        return ExitCode.GATE_FAILED
    return ExitCode.INFRASTRUCTURE


def fail(error: str | BaseException, code: int | None = None) -> typer.Exit:
    """Print `error: <message>` as one line on stderr; return the `typer.Exit` to raise.

    `code` defaults to `exit_code_for(error)` for an exception and to 1 (`ExitCode.ERROR`) for a message.
    """
    import typer

    if code is None:
        code = exit_code_for(error) if isinstance(error, BaseException) else ExitCode.ERROR
    message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))
