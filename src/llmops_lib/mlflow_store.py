"""The one MLflow store behind the model registry and the prompt registry, and its audit trail of alias moves.

Both registries are MLflow's (a model version and a prompt version are registered the same way), so
what they share lives here once: where the store is, how a client is made (telemetry off, MLflow's
and alembic's INFO chatter off), and the alias-move event — who moved which alias from which version
to which, when and why — kept as tags of the registered model or prompt, so the registry is its own audit.

MLflow is imported on first use: its import takes seconds and must stay off the gateway's hot path.
Explained in: book/chapters/04_delivery/canary_release (models) and book/chapters/prompts/version_control (prompts).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from llmops_lib.config import settings
from llmops_lib.errors import SpecError

#: Prefix of the alias-event tags on a registered model or prompt (the suffix is the time in ns).
EVENT = "llmops.alias_event."


def registry_uri() -> str:
    """`LLMOPS_REGISTRY_URI`, else the embedded SQLite store `LLMOPS_HOME/mlflow.db`."""
    if uri := os.environ.get("LLMOPS_REGISTRY_URI"):
        return uri
    settings().home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings().home / 'mlflow.db'}"


def mlflow_client(uri: str) -> Any:
    """An `mlflow.MlflowClient` for tracking and registry at `uri`, with MLflow's telemetry off.

    MLflow resolves its telemetry host on first use unless `MLFLOW_DISABLE_TELEMETRY` is set before
    it is imported (measured: shared/research/prompts-security.md §1); an operator's explicit setting wins.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its alembic migrations log at INFO on first use
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class Store:
    """Base of a registry on one MLflow store: its URI (default `registry_uri()`) and a client made on
    first use, so constructing a registry costs nothing and MLflow's import waits until it is needed."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = tracking_uri or registry_uri()
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The `mlflow.MlflowClient` of this store (`mlflow_client`)."""
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client


@dataclass(frozen=True)
class AliasEvent:
    """An alias moved (or was removed: `to_version` None)."""

    alias: str
    from_version: str | None
    to_version: str | None
    who: str
    when: str
    why: str


def require_reason(why: str) -> None:
    """An alias move without a reason is refused: the reason is part of the audit trail."""
    if not why.strip():
        raise SpecError("say why the alias moves (why=...): the reason is part of the audit trail")


def alias_event(
    alias: str, before: str | None, after: str | None, why: str, who: str | None = None
) -> tuple[str, str, AliasEvent]:
    """The event of one alias move, now, and the (tag key, tag value) that records it."""
    event = AliasEvent(
        alias, before, after, who or getpass.getuser(), datetime.now(UTC).isoformat(timespec="milliseconds"), why
    )
    return f"{EVENT}{time.time_ns()}", json.dumps(asdict(event)), event


def events_in(tags: Mapping[str, str]) -> list[AliasEvent]:
    """The alias events recorded in a registered model's or prompt's tags, oldest first."""
    keys = sorted((k for k in tags if k.startswith(EVENT)), key=lambda k: int(k[len(EVENT) :]))
    return [AliasEvent(**json.loads(tags[key])) for key in keys]
