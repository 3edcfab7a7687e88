"""Where the library keeps its state: one home folder, every location overridable.

`LLMOPS_HOME` holds the assembled default model, measurement caches, engine logs and archived
runbook runs. Its default is the checkout's `.llmops/` when the library runs from a git checkout
(as `pip install -e .` and `make` set it up), so the book, the tests, the runbooks and a lab
started from any folder (`jupyter lab labs/`) share one copy of the model and its caches;
installed elsewhere, `.llmops/` in the working directory.

`LLMOPS_VLLM_PYTHON` names the Python of vLLM's own environment (default: the repository's
`.venv-vllm/bin/python`, made by `make vllm`): vLLM pins torch and transformers against ours, so
the library runs it as a subprocess from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_home() -> Path:
    """The checkout's `.llmops/` when this package lives in a git checkout, else `./.llmops`."""
    if (REPO_ROOT / ".git").exists():  # a folder, or a file in a git worktree
        return REPO_ROOT / ".llmops"
    return Path(".llmops")


@dataclass(frozen=True)
class Settings:
    """Resolved locations. Build with `settings()` so environment overrides apply."""

    home: Path
    vllm_python: Path

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


def settings() -> Settings:
    """Read the settings from the environment now (tests change `LLMOPS_HOME` per test)."""
    return Settings(
        home=Path(os.environ.get("LLMOPS_HOME") or default_home()).expanduser().resolve(),
        vllm_python=Path(
            os.environ.get("LLMOPS_VLLM_PYTHON", REPO_ROOT / ".venv-vllm" / "bin" / "python")
        ).expanduser(),
    )
