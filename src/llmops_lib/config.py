"""Where the library keeps its state: one home folder, every location overridable.

`LLMOPS_HOME` (default `.llmops/` in the working directory) holds the assembled default model,
engine logs and archived runbook runs. The Makefile points it at the repository's `.llmops/` so
the book, the tests and the runbooks share one copy of the model.

`LLMOPS_VLLM_PYTHON` names the Python of vLLM's own environment (default: the repository's
`.venv-vllm/bin/python`, made by `make vllm`): vLLM pins torch and transformers against ours, so
the library runs it as a subprocess from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
        home=Path(os.environ.get("LLMOPS_HOME", ".llmops")).expanduser().resolve(),
        vllm_python=Path(
            os.environ.get("LLMOPS_VLLM_PYTHON", REPO_ROOT / ".venv-vllm" / "bin" / "python")
        ).expanduser(),
    )
