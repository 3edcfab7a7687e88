"""`llmops keys create`: a new API key, printed once with the configuration entry that stores its hash.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from llmops_lib.errors import SpecError, fail
from llmops_lib.gateway.access import key_entry, new_key

keys_app = typer.Typer(
    help="API keys of the gateway: scoped to routes, rate-limited, stored hashed.", no_args_is_help=True
)


@keys_app.command("create")
def create(
    id: Annotated[str, typer.Option("--id", help="The key's name, logged as api_key_id (e.g. alice).")],
    routes: Annotated[
        str | None,
        typer.Option(
            "--routes", help="Comma-separated route names or patterns. Default: every route; none with --admin."
        ),
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute (token bucket).")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="Prompt + completion tokens per minute.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="May call /admin (weights, deployments).")] = False,
) -> None:
    """Print a new random key (shown once: only its hash is kept) and the entry for the gateway's `keys:`.

    Example: llmops keys create --id alice --routes chat --rpm 60 --tpm 20000
    """
    raw = new_key()
    scope = [r.strip() for r in routes.split(",") if r.strip()] if routes is not None else ([] if admin else ["*"])
    try:
        entry = key_entry(raw, id, routes=scope, admin=admin, requests_per_minute=rpm, tokens_per_minute=tpm)
    except ValidationError as exc:
        raise fail(
            SpecError(f"--id {id!r}: use letters, digits and '_', '.', '@', '-' ({exc.errors()[0]['msg']})")
        ) from None
    typer.echo(f"key (shown once; give it to {id}, keep it secret): {raw}")
    typer.echo("add under keys: in the gateway configuration:")
    typer.echo(yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False).rstrip())
