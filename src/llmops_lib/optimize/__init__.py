"""Inference optimization: what a serving choice costs in memory, speed and quality."""

from llmops_lib.optimize.kv_cache import KV_BYTES_PER_ELEMENT, kv_cache_bytes

__all__ = ["KV_BYTES_PER_ELEMENT", "kv_cache_bytes"]
