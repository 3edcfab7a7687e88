"""`llmops privacy …`: delete personal data from a request log, on a user's request or by age.

Exit codes: 0 done · 1 rows deleted but a reader kept the write-ahead log busy (run it again) ·
2 bad input (no log at the path, an empty user, a retention that is not a positive number of days).
Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_lib.errors import LLMOpsError, fail
from llmops_lib.observe import privacy
from llmops_lib.observe.request_log import database_path
from llmops_lib.observe.review_cli import LogOption

privacy_app = typer.Typer(
    help=(
        "Delete personal data from the request log: one user's requests and feedback (right to erasure), "
        "or every request older than a retention. Deleted bytes are overwritten, and each run is audited."
    ),
    no_args_is_help=True,
)


@privacy_app.command("forget")
def forget(
    user: Annotated[str, typer.Option("--user", help="The API key id or the `user` field the requests carried.")],
    log: LogOption = None,
) -> None:
    """Delete every request of one user and the feedback on them; leaves a privacy.forget audit event.

    Example: llmops privacy forget --user alice --log .llmops/requests.sqlite
    """
    try:
        rows = privacy.forget(database_path(log), user)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(f"deleted {rows} request(s) of user {user!r} and their feedback")


@privacy_app.command("retain")
def retain(
    days: Annotated[float, typer.Option("--days", help="Keep this many days; delete every older request.")],
    log: LogOption = None,
) -> None:
    """Delete every request older than DAYS and its feedback; leaves a privacy.retention audit event.
    A gateway with `retention_days` in its configuration does this itself, hourly.

    Example: llmops privacy retain --days 30
    """
    try:
        rows = privacy.retain(database_path(log), days)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(f"deleted {rows} request(s) older than {days:g} day(s)")
