"""KV-cache size from a GGUF file's own metadata, as llama.cpp allocates it.

Gemma 2 and 3 interleave sliding-window attention (SWA) layers, which only attend to the last
`sliding_window` tokens, with full-attention layers. llama.cpp (with `swa_full` off, its default)
gives the SWA layers a cache of the window plus one micro-batch, not the whole context; for
Gemma 3 that is 5 layers in 6. `kv_cache_size` reproduces llama.cpp's allocation (checked
against the KV buffer sizes llama-server logs); `kv_cache_bytes` keeps the full-context bound.

Explained in: book/chapters/02_optimization/kv_cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmops_lib.engines.llamacpp import LlamaServer
from llmops_lib.engines.spec import KV_BYTES_PER_ELEMENT, EngineSpec
from llmops_lib.errors import SpecError
from llmops_lib.gguf_header import read_header
from llmops_lib.models import GGUFInfo, inspect_gguf

# Every n-th layer attends globally, the others through the sliding window: llama.cpp hard-codes
# the pattern per architecture (`set_swa_pattern` in llama-model.cpp); the GGUF holds the window.
SWA_PATTERN: dict[str, int] = {"gemma2": 2, "gemma3": 6}
CELL_PADDING = 256  # llama.cpp pads the context and the SWA cache to 256 cells
DEFAULT_UBATCH = 512  # llama.cpp's default micro-batch (capped by the batch size)


def _pad(cells: int) -> int:
    return -(-cells // CELL_PADDING) * CELL_PADDING


def _bytes_per_cell(info: GGUFInfo, cache_type_k: str, cache_type_v: str) -> float:
    """K and V bytes one token keeps in one layer."""
    for kind in (cache_type_k, cache_type_v):
        if kind not in KV_BYTES_PER_ELEMENT:
            raise SpecError(f"unknown KV-cache type {kind!r}; use one of {', '.join(KV_BYTES_PER_ELEMENT)}")
    return (
        info.head_count_kv * info.head_dim * (KV_BYTES_PER_ELEMENT[cache_type_k] + KV_BYTES_PER_ELEMENT[cache_type_v])
    )


@lru_cache(maxsize=8)
def sliding_window(path: Path) -> int:
    """The model's attention window in tokens from GGUF metadata (0: no sliding-window layers)."""
    fields = read_header(path).fields
    arch = fields.get("general.architecture")
    return int(fields.get(f"{arch}.attention.sliding_window", 0)) if arch in SWA_PATTERN else 0


@dataclass(frozen=True)
class KVCacheSize:
    """The KV cache llama.cpp allocates, split into full-attention and sliding-window layers."""

    full_layers: int
    full_cells: int
    swa_layers: int
    swa_cells: int
    bytes_per_cell_per_layer: float

    @property
    def full_bytes(self) -> int:
        return round(self.full_layers * self.full_cells * self.bytes_per_cell_per_layer)

    @property
    def swa_bytes(self) -> int:
        return round(self.swa_layers * self.swa_cells * self.bytes_per_cell_per_layer)

    @property
    def total_bytes(self) -> int:
        return self.full_bytes + self.swa_bytes


def kv_cache_size(
    info: GGUFInfo,
    n_ctx: int,
    *,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    swa_full: bool = False,
    n_seq: int = 1,
    n_ubatch: int = DEFAULT_UBATCH,
) -> KVCacheSize:
    """The KV cache for `n_seq` sequences of `n_ctx` tokens each, as llama.cpp allocates it.

    Args:
        info: the model's GGUF metadata (`inspect_gguf`).
        n_ctx: context per sequence, in tokens (llama.cpp pads it to 256).
        cache_type_k, cache_type_v: element types of K and V (`KV_BYTES_PER_ELEMENT`).
        swa_full: sliding-window layers keep the whole context too (needed by nothing here;
            llama-server's default is off).
        n_seq: sequences with their own cache (llama-server's slots without `--kv-unified`).
        n_ubatch: the micro-batch; a sliding-window layer keeps window + one micro-batch.
    """
    per_cell = _bytes_per_cell(info, cache_type_k, cache_type_v)
    for name, value in (("n_ctx", n_ctx), ("n_seq", n_seq), ("n_ubatch", n_ubatch)):
        if value < 1:
            raise SpecError(f"{name} must be at least 1, got {value}")
    cells = _pad(n_ctx)
    window = sliding_window(info.path)
    if not window:
        return KVCacheSize(info.block_count, cells * n_seq, 0, 0, per_cell)
    full_layers = info.block_count // SWA_PATTERN[info.architecture]
    swa_cells = cells if swa_full else _pad(min(cells, window + n_ubatch))
    return KVCacheSize(full_layers, cells * n_seq, info.block_count - full_layers, swa_cells * n_seq, per_cell)


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, *, cache_type_k: str = "f16", cache_type_v: str = "f16") -> int:
    """Bytes of K and V for `n_ctx` tokens when every layer keeps the whole context.

    The upper bound (and llama.cpp's allocation with `swa_full`); for what llama.cpp really
    allocates for Gemma's sliding-window layers, use `kv_cache_size`.
    """
    per_cell = _bytes_per_cell(info, cache_type_k, cache_type_v)
    if n_ctx < 1:
        raise SpecError(f"n_ctx must be at least 1, got {n_ctx}")
    return round(info.block_count * n_ctx * per_cell)


def kv_cache_for(spec: EngineSpec) -> KVCacheSize:
    """The KV cache a `LlamaServer` started from `spec` allocates (one per slot)."""
    return kv_cache_size(
        inspect_gguf(spec.model),
        spec.n_ctx,
        cache_type_k=spec.cache_type_k,
        cache_type_v=spec.cache_type_v,
        swa_full=spec.swa_full,
        n_seq=spec.parallel,
        n_ubatch=min(spec.batch_size, DEFAULT_UBATCH),
    )


_KV_LOG_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB")


def logged_kv_cache_bytes(log_text: str) -> int:
    """The KV buffer llama.cpp reports in its log (summed over its caches), in bytes.

    llama-server logs this at verbosity 4 (`--log-verbosity 4`), in MiB with two decimals, so
    the value is exact to ±0.005 MiB per cache.
    """
    sizes = _KV_LOG_LINE.findall(log_text)
    if not sizes:
        raise SpecError("no 'llama_kv_cache: size =' line in this log; start llama-server with --log-verbosity 4")
    return round(sum(float(size) for size in sizes) * 2**20)


# A long shared prefix (an operations log, ~1,100 tokens) and questions about it: the shape of
# retrieval-augmented and system-prompt-heavy traffic, where every request repeats the same start.
SHARED_PREFIX = (
    "Operations log of the checkout service.\n"
    + "\n".join(
        f"Record {i}: {i * 37 % 1000} requests, median latency {i * 13 % 200} ms, {i % 7} errors." for i in range(48)
    )
    + "\n"
)
PREFIX_QUESTIONS = (
    "Question: Which record had the most errors?\nAnswer:",
    "Question: What was the median latency of record 7?\nAnswer:",
    "Question: How many records are in the log?\nAnswer:",
    "Question: Which service is this log about?\nAnswer:",
)


@dataclass(frozen=True)
class PrefixCacheRun:
    """One question asked after a cold prefix and after a cached one."""

    question: str
    prompt_tokens: int
    cold_ttft_s: float
    warm_ttft_s: float
    warm_cached_tokens: int

    @property
    def ttft_ratio(self) -> float:
        """How many times faster the first token came with the prefix cached."""
        return self.cold_ttft_s / self.warm_ttft_s if self.warm_ttft_s > 0 else 0.0


def measure_prefix_cache(
    server: LlamaServer,
    questions: Sequence[str] = PREFIX_QUESTIONS,
    *,
    prefix: str = SHARED_PREFIX,
    max_tokens: int = 8,
) -> list[PrefixCacheRun]:
    """TTFT of each question after the prefix, uncached and then served from llama-server's cache.

    Cold requests start with a distinct line, so no cached prefix matches; warm requests follow one
    request that put the plain prefix in the slot's cache (llama-server's `cache_prompt`, on by default).
    """
    cold = [
        server.complete_with_timings(f"Copy {i}.\n{prefix}{q}", max_tokens=max_tokens) for i, q in enumerate(questions)
    ]
    server.complete(prefix, max_tokens=1)
    warm = [server.complete_with_timings(prefix + q, max_tokens=max_tokens) for q in questions]
    return [
        PrefixCacheRun(q, w.prompt_tokens, c.ttft_s, w.ttft_s, wt.cache_n)
        for q, (c, _), (w, wt) in zip(questions, cold, warm, strict=True)
    ]
