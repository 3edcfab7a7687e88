"""Measuring engines: serving metrics with vLLM's names and definitions, a load generator, rooflines."""

from llmops_lib.bench.batched import engine_generation_speed
from llmops_lib.bench.latency import SLO_METRICS, ServingMetrics, parse_slos
from llmops_lib.bench.load import LoadResult, RequestOutcome, run_load, run_sequential
from llmops_lib.bench.roofline import bytes_read_per_token, measure_read_bandwidth, roofline_tokens_per_s
from llmops_lib.bench.sweep import Level, sweep_concurrency
from llmops_lib.bench.traffic import LoadPlan, RequestSpec, Workload
from llmops_lib.bench.workloads import COMPLETION_PROMPTS
from llmops_lib.facts import percentile

__all__ = [
    "COMPLETION_PROMPTS",
    "SLO_METRICS",
    "Level",
    "LoadPlan",
    "LoadResult",
    "RequestOutcome",
    "RequestSpec",
    "ServingMetrics",
    "Workload",
    "bytes_read_per_token",
    "engine_generation_speed",
    "measure_read_bandwidth",
    "parse_slos",
    "percentile",
    "roofline_tokens_per_s",
    "run_load",
    "run_sequential",
    "sweep_concurrency",
]
