"""GGUF → Hugging Face folder, for engines that cannot read GGUF (vLLM on CPU).

transformers de-quantizes the GGUF (bf16 safetensors, ~544 MB for the default model, about a
minute and a half) in vLLM's own environment, where it is installed. The folder is cached under
`LLMOPS_HOME/models/hf/` keyed by the GGUF's sha256, so the same bytes are exported once, and
written through `atomic.atomic_path` (a temporary folder renamed at the end), so an interrupted or failed export
leaves nothing that looks complete. No hub access: everything comes from the GGUF.

The exported tokenizer adds `<bos>` (checked by the worker), as llama.cpp does. The default model
is a *base* model: it has no chat template and none is added, so serve it with completions (a
chat template would be a deliberate choice of format, not part of the export).

Explained in: book/chapters/02_optimization/choosing_an_engine.ipynb
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.engines.server import check_model_file
from llmops_lib.errors import EngineError, ModelError
from llmops_lib.models import sha256_file

WORKER = Path(__file__).with_name("gguf_to_hf.py")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def vllm_python() -> Path:
    """The Python of vLLM's environment (setting `LLMOPS_VLLM_PYTHON`), refused early if absent."""
    python = settings().vllm_python
    if not python.is_file():
        raise EngineError(
            f"vLLM's environment is missing ({python} not found): run `make vllm`, "
            "or point LLMOPS_VLLM_PYTHON at a Python with vllm installed"
        )
    return python


def hf_export_dir(gguf: Path) -> Path:
    """Where the export of this GGUF lives (whether or not it exists yet)."""
    return settings().models_dir / "hf" / f"{Path(gguf).stem}-{sha256_file(gguf)[:16]}"


def export_hf(gguf: Path, *, timeout_s: float = 900.0) -> Path:
    """The Hugging Face folder of `gguf`, exported on first use and cached by checksum.

    Raises:
        ModelError: the GGUF is missing or not a GGUF, or transformers could not convert it
            (the message carries the end of its output).
        EngineError: vLLM's environment is not installed.
    """
    gguf = Path(gguf)
    check_model_file(gguf)
    target = hf_export_dir(gguf)
    if (target / "config.json").is_file():
        return target
    python = vllm_python()
    try:
        # another process finishing the same export first is harmless: the folder is replaced whole by the same bytes
        with atomic_path(target) as partial:
            done = subprocess.run(
                [str(python), str(WORKER), str(gguf), str(partial)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=os.environ | OFFLINE,
            )
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                raise ModelError(f"exporting {gguf.name} to Hugging Face format failed: {tail}")
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"exporting {gguf.name} took more than {timeout_s:.0f} s; is the machine overloaded?") from exc
    return target
