"""KV-cache size from a GGUF file's own metadata.

Explained in: book/chapters/01_mlops_to_llmops (memory of long contexts).
"""

from __future__ import annotations

from llmops_lib.engines.spec import KV_BYTES_PER_ELEMENT
from llmops_lib.errors import SpecError
from llmops_lib.models import GGUFInfo


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, *, cache_type_k: str = "f16", cache_type_v: str = "f16") -> int:
    """Bytes of K and V cached for `n_ctx` tokens in every layer, all layers at full context.

    Models with sliding-window layers (Gemma 3) can keep less; this is the full-cache bound that
    llama.cpp allocates when every layer keeps the whole context.
    """
    for kind in (cache_type_k, cache_type_v):
        if kind not in KV_BYTES_PER_ELEMENT:
            raise SpecError(f"unknown KV-cache type {kind!r}; use one of {', '.join(KV_BYTES_PER_ELEMENT)}")
    if n_ctx < 1:
        raise SpecError(f"n_ctx must be at least 1, got {n_ctx}")
    per_token_per_layer = info.head_count_kv * info.head_dim
    per_element = KV_BYTES_PER_ELEMENT[cache_type_k] + KV_BYTES_PER_ELEMENT[cache_type_v]
    return round(info.block_count * n_ctx * per_token_per_layer * per_element)
