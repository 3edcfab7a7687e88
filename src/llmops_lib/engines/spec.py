"""The typed engine spec: one description of how to serve a model, whatever the engine.

Explained in: book/chapters/01_mlops_to_llmops (serving the model).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops_lib.errors import SpecError

# KV-cache element types llama.cpp accepts, with bytes per element (ggml's block formats carry
# a scale per 32 elements).
KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "iq4_nl": 18 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
}
KV_CACHE_TYPES = tuple(KV_BYTES_PER_ELEMENT)


def default_threads() -> int:
    """Half the cores (at least one): generation is memory-bound, and on a busy 2-core machine
    llama.cpp's threads spin-wait against each other, so a spare core for the client pays."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class EngineSpec:
    """How to run a model. Invalid values are refused at construction, before anything starts.

    Attributes:
        model: path of the GGUF file.
        n_ctx: context length per request (per server slot), in tokens.
        threads: CPU threads for generation and prompt processing.
        parallel: server slots served at once by continuous batching (HTTP servers only).
        batch_size: tokens per forward pass while processing a prompt.
        cache_type_k, cache_type_v: KV-cache element types; a quantized V cache needs `flash_attn`.
        flash_attn: use flash attention.
        swa_full: keep the whole context in sliding-window layers too (Gemma 3). Off, as in
            llama-server: those layers then cache only their window, a fraction of the memory.
        seed: sampling seed, so temperature > 0 is repeatable on one engine build.
        extra_args: further command-line flags for a server engine, passed through as given.
    """

    model: Path
    n_ctx: int = 2048
    threads: int = field(default_factory=default_threads)
    parallel: int = 1
    batch_size: int = 512
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = False
    swa_full: bool = False
    seed: int = 0
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        for name in ("n_ctx", "threads", "parallel", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise SpecError(f"EngineSpec.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("cache_type_k", "cache_type_v"):
            if getattr(self, name) not in KV_CACHE_TYPES:
                raise SpecError(
                    f"EngineSpec.{name}={getattr(self, name)!r} is not a KV-cache type; "
                    f"use one of {', '.join(KV_CACHE_TYPES)}"
                )
        if self.cache_type_v not in ("f32", "f16", "bf16") and not self.flash_attn:
            raise SpecError(
                f"a quantized V cache (cache_type_v={self.cache_type_v}) needs flash_attn=True in llama.cpp"
            )

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, for run records and benchmark output."""
        data = asdict(self)
        data["model"] = str(self.model)
        data["extra_args"] = list(self.extra_args)
        return data
