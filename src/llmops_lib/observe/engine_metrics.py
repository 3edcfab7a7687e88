"""One vocabulary for engine metrics: llama-server's `llamacpp:*`, vLLM's `vllm:*` and the gateway's own.

Each engine names the same quantity differently (generated tokens are `llamacpp:tokens_predicted_total`
on one and `vllm:generation_tokens_total` on the other). Dashboards, the gateway's `/metrics`, the
serving benchmark and the release controller read the common names below, so they work on either
engine unchanged. Samples of a series are summed over their labels (vLLM labels by engine and model).
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import re
from collections import defaultdict

#: Common name -> the series that carry it, by engine, first match wins. A `{k="v"}` suffix keeps
#: only samples with those labels.
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "requests_running": ("llamacpp:requests_processing", "vllm:num_requests_running"),
    "requests_waiting": ("llamacpp:requests_deferred", "vllm:num_requests_waiting", "llmops_gateway_queue_depth"),
    "prompt_tokens_total": (
        "llamacpp:prompt_tokens_total",
        "vllm:prompt_tokens_total",
        'llmops_gateway_tokens_total{direction="in"}',
    ),
    "generation_tokens_total": (
        "llamacpp:tokens_predicted_total",
        "vllm:generation_tokens_total",
        'llmops_gateway_tokens_total{direction="out"}',
    ),
    "prompt_seconds_total": ("llamacpp:prompt_seconds_total", "vllm:request_prefill_time_seconds_sum"),
    "generation_seconds_total": ("llamacpp:tokens_predicted_seconds_total", "vllm:request_decode_time_seconds_sum"),
    "kv_cache_usage_ratio": ("llamacpp:kv_cache_usage_ratio", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prefix_cache_queries_total": ("vllm:prefix_cache_queries_total",),
    "prefix_cache_hits_total": ("vllm:prefix_cache_hits_total",),
    "requests_finished_total": ("vllm:request_success_total", "llmops_gateway_requests_total"),
    "ttft_seconds_sum": ("vllm:time_to_first_token_seconds_sum", "llmops_gateway_ttft_seconds_sum"),
    "ttft_seconds_count": ("vllm:time_to_first_token_seconds_count", "llmops_gateway_ttft_seconds_count"),
    "e2e_seconds_sum": ("vllm:e2e_request_latency_seconds_sum", "llmops_gateway_e2e_seconds_sum"),
    "e2e_seconds_count": ("vllm:e2e_request_latency_seconds_count", "llmops_gateway_e2e_seconds_count"),
}

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus exposition by name (labels kept in the name), comments skipped."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue  # a comment, a blank or a malformed line is not a sample
        try:
            value = float(match["value"])
        except ValueError:
            continue
        samples[match["name"] + (f"{{{match['labels']}}}" if match["labels"] is not None else "")] = value
    return samples


def _split(sample: str) -> tuple[str, dict[str, str]]:
    name, _, labels = sample.partition("{")
    return name, dict(_LABEL.findall(labels))


def common_samples(text: str) -> dict[str, float]:
    """The exposition `text` of any engine (or the gateway) under `COMMON_NAMES`, summed over labels.

    A common name the engine does not report is absent (llama-server has no prefix-cache counter).
    """
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for sample, value in parse_metrics(text).items():
        name, labels = _split(sample)
        by_name[name].append((labels, value))
    result = {}
    for common, series in COMMON_NAMES.items():
        for spec in series:
            name, wanted = _split(spec)
            values = [value for labels, value in by_name.get(name, ()) if wanted.items() <= labels.items()]
            if values:
                result[common] = sum(values)
                break
    return result


def engine_of(text: str) -> str | None:
    """Which engine wrote this exposition: "vllm", "llamacpp", "gateway", or None."""
    for prefix, engine in (("vllm:", "vllm"), ("llamacpp:", "llamacpp"), ("llmops_gateway_", "gateway")):
        if any(line.startswith(prefix) for line in text.splitlines()):
            return engine
    return None
