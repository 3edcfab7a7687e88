"""The memory-bandwidth roofline: the fastest a machine can possibly generate with a model.

Generating one token reads every weight the forward pass uses once, so tokens/s can never exceed
bandwidth / bytes read per token. Measured generation speed as a fraction of that bound says how
much an engine leaves on the table.

Explained in: benchmarks/engine_baseline.py (and the optimization chapter).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from llmops_lib.models import GGUFInfo


def bytes_read_per_token(info: GGUFInfo) -> int:
    """Weight bytes one decoding step reads.

    The token embedding is only indexed (one row) unless the model ties it to the output
    projection, as Gemma does; then the whole matrix is read for the logits every step.
    """
    total = sum(info.group_bytes.values())
    tied = "output" not in info.group_bytes
    if not tied:
        total -= info.group_bytes.get("token_embd", 0)
    return total


def measure_read_bandwidth(threads: int = 1, size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Best-of-`repeats` read bandwidth in bytes/s, `threads` threads each summing its own slice.

    numpy releases the GIL in reductions, so threads really read in parallel. The buffer is far
    larger than any cache, so this is DRAM bandwidth.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    data = np.ones(size_bytes // 8, dtype=np.float64)
    slices = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, slices))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def roofline_tokens_per_s(info: GGUFInfo, bandwidth_bytes_per_s: float) -> float:
    """The upper bound on one stream's generation speed on this machine."""
    return bandwidth_bytes_per_s / bytes_read_per_token(info)
