"""The library's exception types.

Every error a user can cause or meet carries a one-line message that names what was wrong and
what to do about it, so the CLI and the runbooks can print it as it is.
"""


class LLMOpsError(Exception):
    """Base of every error the library raises on purpose."""


class ModelError(LLMOpsError):
    """A model file is missing, unreadable, or not the file it claims to be."""


class EngineError(LLMOpsError):
    """An engine could not start, died, or did not answer."""


class SpecError(LLMOpsError, ValueError):
    """A spec (engine, runbook parameters, …) holds a value outside what is accepted."""


class RunbookParameterError(SpecError):
    """A runbook was given a parameter it does not declare, or a value of the wrong type."""


class GateFailed(LLMOpsError):
    """A runbook's gate found the measured system outside its threshold (not a crash)."""


class RunArchiveError(LLMOpsError):
    """A runbook run could not be archived (full disk, no permission); nothing half-written is kept."""
