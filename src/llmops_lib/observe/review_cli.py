"""`llmops review …`: the human-review queue of a request log, for the person who works through it.

Exit codes: 0 done · 2 bad input (no log at the path, a labels file that is not a JSON object of
request id → 0 or 1).
Explained in: book/chapters/05_quality/quality_assurance.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from llmops_lib.errors import LLMOpsError, SpecError, fail
from llmops_lib.observe import review
from llmops_lib.observe.request_log import RequestLogReader

review_app = typer.Typer(
    help=(
        "The review queue: answers a route with review_below judged unsure (confidence from token "
        "log-probabilities under its threshold), the review rate, and the accuracy of what was auto-accepted."
    ),
    no_args_is_help=True,
)
LogOption = Annotated[
    Path | None, typer.Option("--log", help="The request log (SQLite). Default: LLMOPS_HOME/requests.sqlite.")
]


@review_app.command("list")
def review_list(
    log: LogOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many, least confident first.")] = 20,
) -> None:
    """List the requests waiting for review, least confident first (the completion when the log keeps text).

    Example: llmops review list --log .llmops/requests.sqlite --limit 10
    """
    try:
        rows = review.queue(RequestLogReader(log).rows())
    except LLMOpsError as exc:
        raise fail(exc) from None
    for row in rows[:limit]:
        text = json.dumps(row.get("completion")) if row.get("completion") is not None else ""
        typer.echo(f"{row['request_id']}  {row['confidence']:.3f}  {row.get('gen_ai_request_model') or ''}  {text}")
    typer.echo(f"{len(rows)} request(s) need review", err=True)


def _labels(path: Path) -> dict[str, float]:
    try:
        labels = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read labels {path}: {exc}; give a JSON object of request id → 0 or 1") from None
    if not isinstance(labels, dict) or any(value not in (0, 1) for value in labels.values()):
        raise SpecError(f"labels {path} must be a JSON object of request id → 0 (wrong) or 1 (right)")
    return {str(key): float(value) for key, value in labels.items()}


@review_app.command("stats")
def review_stats(
    log: LogOption = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="JSON object request id → 1 right / 0 wrong: adds accepted vs reviewed accuracy."
        ),
    ] = None,
) -> None:
    """Print the review rate (and, with --labels, the accuracy of auto-accepted vs reviewed answers) as JSON.

    Example: llmops review stats --log .llmops/requests.sqlite --labels verdicts.json
    """
    try:
        stats = review.stats(RequestLogReader(log).rows(), _labels(labels) if labels else None)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps(asdict(stats) | {"review_rate": stats.review_rate}, indent=2))
