"""Measuring engines: request timing summaries with vLLM's metric names and definitions."""

from llmops_lib.bench.latency import LatencySummary, percentile, run_sequential
from llmops_lib.bench.roofline import bytes_read_per_token, measure_read_bandwidth, roofline_tokens_per_s
from llmops_lib.bench.workloads import COMPLETION_PROMPTS

__all__ = [
    "COMPLETION_PROMPTS",
    "LatencySummary",
    "bytes_read_per_token",
    "measure_read_bandwidth",
    "percentile",
    "roofline_tokens_per_s",
    "run_sequential",
]
