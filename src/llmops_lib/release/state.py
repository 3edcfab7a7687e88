"""A rollout's persisted state and audit trail, so a controller can die at any moment and be restarted.

Under `LLMOPS_HOME/rollouts/<name>/`:

- `state.json` — where the rollout is (phase, step, weight, analysis counts), replaced atomically
  (`llmops_lib.atomic`: written aside, fsynced, renamed): a reader never sees half of it.
- `audit.jsonl` — every event (weight moved, measurement, decision, hook answer, alias move), one
  JSON object per line, appended and fsynced before the controller acts on the next thing.
- `lock` — held (flock) during each change, so the CLI's promote/abort and a running controller
  never interleave; `controller.lock` — held for a controller's whole life, so two cannot run.

The OS releases both locks when a process dies, which is what makes a restart safe.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.release.phases import Phase


@dataclass
class RolloutState:
    """Where one rollout is. Everything the controller needs to resume is here."""

    name: str
    spec: dict[str, Any]
    phase: Phase
    candidate_version: str
    stable_version: str
    started_at: float
    gateway_url: str = ""
    request_log: str | None = None
    registry_uri: str = ""
    step_index: int = -1
    step_started_at: float | None = None
    canary_weight: int = 0
    pause_reason: str | None = None
    message: str = ""
    analysis_started_at: float | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    controller: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        self.phase = Phase(self.phase)  # read back from JSON as its name

    @property
    def done(self) -> bool:
        return self.phase.done


def rollouts_dir() -> Path:
    return settings().home / "rollouts"


class RolloutStore:
    """The files of one rollout (see the module docstring)."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.dir = (root or rollouts_dir()) / name
        self.state_path = self.dir / "state.json"
        self.audit_path = self.dir / "audit.jsonl"

    def exists(self) -> bool:
        return self.state_path.exists()

    def load(self) -> RolloutState:
        if not self.exists():
            raise SpecError(
                f"no rollout named {self.name!r} under {self.dir.parent}: start one with `llmops rollout run`"
            )
        try:
            return RolloutState(**json.loads(self.state_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise LLMOpsError(
                f"the state of rollout {self.name!r} ({self.state_path}) is unreadable ({exc}): abort it by hand"
            ) from exc

    def save(self, state: RolloutState) -> None:
        """Replace the state file; a save interrupted at any point leaves the previous one."""
        with atomic_path(self.state_path) as partial, partial.open("w") as out:
            json.dump(asdict(state), out, indent=1)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event (stamped with the time and the rollout's name) to the audit trail."""
        self.dir.mkdir(parents=True, exist_ok=True)
        event = {"at": time.time(), "rollout": self.name, **event}
        with self.audit_path.open("a") as out:
            out.write(json.dumps(event, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())
        return event

    def audit(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first (a line cut by a crash mid-write is skipped)."""
        if not self.audit_path.exists():
            return []
        events = []
        for line in self.audit_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def archive(self) -> Path | None:
        """Move a finished rollout's files aside (`history/<started>/`) so the name can be reused."""
        if not self.exists():
            return None
        state = self.load()
        if not state.done:
            raise SpecError(
                f"rollout {self.name!r} is still {state.phase}: promote or abort it before starting another"
            )
        target = self.dir / "history" / f"{state.started_at:.0f}"
        target.mkdir(parents=True, exist_ok=True)
        for path in (self.state_path, self.audit_path):
            if path.exists():
                shutil.move(path, target / path.name)
        return target

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the change lock (blocking): one change at a time, whoever makes it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def controller_lock(self) -> Iterator[None]:
        """Hold the controller lock for a controller's life; refuse if another controller holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "controller.lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LLMOpsError(
                    f"another controller is running rollout {self.name!r}: use `llmops rollout status {self.name}`"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def list_rollouts(root: Path | None = None) -> list[str]:
    base = root or rollouts_dir()
    return sorted(p.parent.name for p in base.glob("*/state.json"))
