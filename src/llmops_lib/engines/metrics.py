"""One vocabulary for engine metrics: llama-server's `llamacpp:*`, vLLM's `vllm:*`, Ray's and the gateway's own.

Each engine names the same quantity differently (generated tokens are `llamacpp:tokens_predicted_total`
on one and `vllm:generation_tokens_total` on the other). Dashboards, the gateway's `/metrics`, the
serving benchmark and the release controller read the common names below, so they work on either
engine unchanged. Samples of a series are summed over their labels (vLLM labels by engine and model).
On a Ray cluster vLLM reports through Ray (`ray_vllm_*`, Ray Serve LLM) beside Serve's own `ray_serve_*`,
on each node's metrics endpoint (`scale.metrics` sums the nodes).
The text is parsed by `prometheus_client.parser`, as Prometheus reads it: a malformed exposition is
refused whole, as a Prometheus scrape of it would fail.

Explained in: book/chapters/03_observability/monitoring
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from llmops_lib.errors import EngineError

#: Common name -> the series that carry it, by engine, first match wins. A `{k="v"}` suffix keeps
#: only samples with those labels.
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "requests_running": (
        "llamacpp:requests_processing",
        "vllm:num_requests_running",
        "ray_vllm_num_requests_running",
        "ray_serve_replica_processing_queries",
    ),
    "requests_waiting": (
        "llamacpp:requests_deferred",
        "vllm:num_requests_waiting",
        "ray_vllm_num_requests_waiting",
        "ray_serve_deployment_queued_queries",
        "llmops_gateway_queue_depth",
    ),
    "prompt_tokens_total": (
        "llamacpp:prompt_tokens_total",
        "vllm:prompt_tokens_total",
        "ray_vllm_prompt_tokens_total",
        'llmops_gateway_tokens_total{direction="in"}',
    ),
    "generation_tokens_total": (
        "llamacpp:tokens_predicted_total",
        "vllm:generation_tokens_total",
        "ray_vllm_generation_tokens_total",
        'llmops_gateway_tokens_total{direction="out"}',
    ),
    "prompt_seconds_total": (
        "llamacpp:prompt_seconds_total",
        "vllm:request_prefill_time_seconds_sum",
        "ray_vllm_request_prefill_time_seconds_sum",
    ),
    "generation_seconds_total": (
        "llamacpp:tokens_predicted_seconds_total",
        "vllm:request_decode_time_seconds_sum",
        "ray_vllm_request_decode_time_seconds_sum",
    ),
    "kv_cache_usage_ratio": (
        "llamacpp:kv_cache_usage_ratio",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "ray_vllm_kv_cache_usage_perc",
    ),
    "prefix_cache_queries_total": ("vllm:prefix_cache_queries_total", "ray_vllm_prefix_cache_queries_total"),
    "prefix_cache_hits_total": ("vllm:prefix_cache_hits_total", "ray_vllm_prefix_cache_hits_total"),
    "requests_finished_total": (
        "vllm:request_success_total",
        "ray_vllm_request_success_total",
        "ray_serve_deployment_request_counter_total",
        "llmops_gateway_requests_total",
    ),
    "ttft_seconds_sum": (
        "vllm:time_to_first_token_seconds_sum",
        "ray_vllm_time_to_first_token_seconds_sum",
        "llmops_gateway_ttft_seconds_sum",
    ),
    "ttft_seconds_count": (
        "vllm:time_to_first_token_seconds_count",
        "ray_vllm_time_to_first_token_seconds_count",
        "llmops_gateway_ttft_seconds_count",
    ),
    "e2e_seconds_sum": (
        "vllm:e2e_request_latency_seconds_sum",
        "ray_vllm_e2e_request_latency_seconds_sum",
        "llmops_gateway_e2e_seconds_sum",
    ),
    "e2e_seconds_count": (
        "vllm:e2e_request_latency_seconds_count",
        "ray_vllm_e2e_request_latency_seconds_count",
        "llmops_gateway_e2e_seconds_count",
    ),
}

_ENGINE_PREFIXES = (
    ("vllm:", "vllm"),
    ("ray_vllm_", "vllm"),
    ("llamacpp:", "llamacpp"),
    ("llmops_gateway_", "gateway"),
    ("ray_serve_", "ray"),
)


def _samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of the exposition `text`.

    Raises:
        EngineError: the text is not a Prometheus text exposition.
    """
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                yield sample.name, dict(sample.labels), float(sample.value)
    except ValueError as exc:
        raise EngineError(
            f"not a Prometheus text exposition ({exc}): read /metrics of an engine or gateway started with metrics on"
        ) from None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus exposition by `name{label="value",...}` (labels as written), comments skipped.

    Raises:
        EngineError: the text is not a Prometheus text exposition.
    """
    return {
        name + ("{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""): value
        for name, labels, value in _samples(text)
    }


def _selector(series: str) -> tuple[str, dict[str, str]]:
    """`name{k="v"}` of `COMMON_NAMES` as (name, labels), read by the same parser as the samples."""
    ((name, labels, _),) = _samples(series + " 0\n")
    return name, labels


_SELECTORS = {common: tuple(map(_selector, series)) for common, series in COMMON_NAMES.items()}


def common_samples(text: str) -> dict[str, float]:
    """The exposition `text` of any engine (or the gateway) under `COMMON_NAMES`, summed over labels.

    A common name the engine does not report is absent (llama-server has no prefix-cache counter).

    Raises:
        EngineError: the text is not a Prometheus text exposition.
    """
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels, value in _samples(text):
        by_name[name].append((labels, value))
    result = {}
    for common, selectors in _SELECTORS.items():
        for name, wanted in selectors:
            values = [value for labels, value in by_name.get(name, ()) if wanted.items() <= labels.items()]
            if values:
                result[common] = sum(values)
                break
    return result


def engine_of(text: str) -> str | None:
    """Which engine wrote this exposition: "vllm", "llamacpp", "gateway", "ray" (Serve alone), or None.

    Raises:
        EngineError: the text is not a Prometheus text exposition.
    """
    names = {name for name, _, _ in _samples(text)}
    for prefix, engine in _ENGINE_PREFIXES:
        if any(name.startswith(prefix) for name in names):
            return engine
    return None
