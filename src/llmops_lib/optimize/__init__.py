"""Inference optimization: what a serving choice costs in memory, speed and quality.

Explained in: book/chapters/02_optimization (one section per module).
"""

from llmops_lib.optimize.kv_cache import KV_BYTES_PER_ELEMENT, KVCacheSize, kv_cache_bytes, kv_cache_for, kv_cache_size
from llmops_lib.optimize.perplexity import TOP_K, TextScores, eval_text, kl_divergence, perplexity, score_text
from llmops_lib.optimize.quantize import (
    EMBEDDING_TYPES,
    QUANT_TYPES,
    Quantizer,
    QuantResult,
    QuantSettings,
    Variant,
    dequantize_to_f16,
    parse_variants,
    quantize,
)
from llmops_lib.optimize.speculative import AdaptiveServer, AdaptiveSpeculation, compare, draft_model

__all__ = [
    "AdaptiveServer",
    "AdaptiveSpeculation",
    "KVCacheSize",
    "compare",
    "draft_model",
    "kv_cache_for",
    "kv_cache_size",
    "EMBEDDING_TYPES",
    "KV_BYTES_PER_ELEMENT",
    "QUANT_TYPES",
    "TOP_K",
    "QuantResult",
    "QuantSettings",
    "Quantizer",
    "TextScores",
    "Variant",
    "dequantize_to_f16",
    "eval_text",
    "kl_divergence",
    "kv_cache_bytes",
    "parse_variants",
    "perplexity",
    "quantize",
    "score_text",
]
