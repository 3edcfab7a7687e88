"""`llmops audit verify | show | checkpoint`: the tamper-evident audit log from the command line.

Exit codes: 0 the log verifies · 3 it does not (one `error:` line naming the first bad record) ·
2 bad input (no log at the path) · 4 the log or its key could not be read.
Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llmops_lib.audit import AuditLog, default_path
from llmops_lib.errors import ExitCode, LLMOpsError, SpecError, fail

audit_app = typer.Typer(
    help=(
        "The tamper-evident audit log (alias moves, rollout decisions, runbook runs, admin calls, guard "
        "blocks, privacy deletions): a SHA-256 hash chain with Ed25519-signed checkpoints."
    ),
    no_args_is_help=True,
)
LogOption = Annotated[
    Path | None,
    typer.Option(
        "--log", help="The audit log (SQLite). Default: LLMOPS_AUDIT_HOME or LLMOPS_HOME, audit/audit.sqlite."
    ),
]


def _existing(path: Path | None) -> AuditLog:
    log = AuditLog(path)
    if not log.path.is_file():
        raise fail(SpecError(f"no audit log at {log.path}: give --log PATH (default {default_path()})"))
    return log


@audit_app.command("verify")
def verify(
    log: LogOption = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="The trusted public key (PEM). Default: the one beside the signing key."),
    ] = None,
) -> None:
    """Check every record's hash and link, and every signed checkpoint; exit 3 naming the first bad record.

    Example: llmops audit verify --log .llmops/audit/audit.sqlite
    """
    audit = _existing(log)
    try:
        result = audit.verify(public_key)
    except LLMOpsError as exc:
        raise fail(exc) from None
    if not result.ok:
        raise fail(
            f"audit log {audit.path}: first bad record {result.first_bad}: {result.reason}", ExitCode.GATE_FAILED
        )
    typer.echo(f"ok: {result.reason}")


@audit_app.command("show")
def show(
    log: LogOption = None,
    event: Annotated[str | None, typer.Option("--event", help="Only this event, e.g. model.alias.")] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="Show the last N records.")] = 20,
) -> None:
    """Print the last records: seq, time, event, fields (JSON).

    Example: llmops audit show --event rollout.decision --last 5
    """
    audit = _existing(log)
    try:
        entries = audit.entries(event=event, last=last)
    except LLMOpsError as exc:
        raise fail(exc) from None
    for entry in entries:
        typer.echo(f"{entry.seq}  {entry.ts}  {entry.event}  {json.dumps(entry.fields, ensure_ascii=False)}")


@audit_app.command("checkpoint")
def checkpoint(log: LogOption = None) -> None:
    """Sign the log's head now (e.g. from cron, so the tail covered by the chain alone stays short).

    Example: llmops audit checkpoint
    """
    audit = _existing(log)
    try:
        signed = audit.checkpoint()
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(f"checkpoint: size {signed.size}, head {signed.head}, key {signed.key_id} -> {audit.checkpoints_path}")
