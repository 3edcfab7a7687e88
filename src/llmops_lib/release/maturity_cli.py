"""`llmops maturity`: the level a running deployment has reached on the start-small roadmap.

Exit codes: 0 the level is at least `--require` · 2 bad input (a configuration, rollout spec or
rule file that does not load; nothing inspected) · 3 the deployment is below `--require`.
Explained in: book/chapters/08_roadmap/start_small.ipynb
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llmops_lib.errors import ExitCode, LLMOpsError, fail
from llmops_lib.release import maturity

_LEVELS = "\n\n".join(
    f"{level.number}. {level.name}: {level.check} (owner: {level.owner})." for level in maturity.LEVELS
)

#: the command's --help: what it does and the levels (registered in cli.py with this help)
HELP = (
    "The level a running deployment has reached on the start-small roadmap: each level is one check of the "
    "running system, and counts only when every level below it holds. Prints each check's evidence and what the "
    f"next level lacks.\n\n{_LEVELS}\n\n"
    "Example: llmops maturity --gateway-config deploy/gateway.example.yaml --url http://127.0.0.1:8000 --require 1"
)


def maturity_command(
    gateway_config: Annotated[
        Path, typer.Option("--gateway-config", help="The gateway's YAML configuration (its request log and routes).")
    ],
    url: Annotated[
        str | None, typer.Option("--url", help="The running gateway, e.g. http://127.0.0.1:8000 (level 1 needs it).")
    ] = None,
    rollout: Annotated[
        list[Path] | None, typer.Option("--rollout", help="A rollout spec of the deployment (repeat for several).")
    ] = None,
    alerts: Annotated[
        Path | None,
        typer.Option("--alerts", help="The Prometheus rule file. Default: deploy/alerts.yml found upwards."),
    ] = None,
    require: Annotated[
        int, typer.Option("--require", min=0, max=len(maturity.LEVELS), help="Exit 3 when below this level.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a running deployment level by level (see HELP)."""
    try:
        report = maturity.check(gateway_config, url=url, rollouts=rollout or (), alert_rules=alerts)
    except LLMOpsError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for row in report.rows():
            typer.echo(
                f"{'pass' if row['passed'] else 'FAIL'}  {row['level']}: {row['requirement']}: {row['evidence']}"
            )
        typer.echo(f"level {report.level} of {len(maturity.LEVELS)}")
        for line in report.missing:
            typer.echo(f"next level needs: {line}")
    if report.level < require:
        typer.echo(f"error: level {report.level} is below the required {require}", err=True)
        raise typer.Exit(int(ExitCode.GATE_FAILED))
