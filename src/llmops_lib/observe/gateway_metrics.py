"""The gateway's own Prometheus metrics ("ours" beside the engines' common names).

One registry per gateway app, so several gateways in one process (tests, notebooks) do not clash.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Guards take microseconds (rules) to tens of milliseconds (Presidio, a whole stream's checks).
_GUARD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class GatewayMetrics:
    """Request count, latencies (TTFT, TPOT, end-to-end), tokens, cache, queue, upstream errors, guards."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmops_gateway_requests", "Requests answered", ["model", "deployment", "status"], registry=r
        )
        self.ttft = Histogram(
            "llmops_gateway_ttft_seconds",
            "Time to first token",
            ["model", "deployment"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "llmops_gateway_tpot_seconds",
            "Time per output token after the first",
            ["model", "deployment"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "llmops_gateway_e2e_seconds",
            "End-to-end request latency",
            ["model", "deployment"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llmops_gateway_tokens", "Tokens in and out", ["model", "deployment", "direction"], registry=r
        )
        self.cache_hits = Counter("llmops_gateway_cache_hits", "Responses served from the cache", ["model"], registry=r)
        self.cache_lookups = Counter(
            "llmops_gateway_cache_lookups", "Cacheable requests looked up", ["model"], registry=r
        )
        self.cache_tokens_saved = Counter(
            "llmops_gateway_cache_tokens_saved",
            "Output tokens not generated thanks to the cache",
            ["model"],
            registry=r,
        )
        self.queue_depth = Gauge("llmops_gateway_queue_depth", "Requests waiting for a slot", ["priority"], registry=r)
        self.upstream_errors = Counter(
            "llmops_gateway_upstream_errors", "Upstream failures", ["deployment", "kind"], registry=r
        )
        self.engine = Gauge(
            "llmops_engine",
            "Engine metrics scraped from the upstreams, under common names",
            ["deployment", "name"],
            registry=r,
        )
        self.guard_verdicts = Counter(
            "llmops_gateway_guard_verdicts",
            "Guard verdicts, one per guard, stage and request (outcome: allowed, flagged, redacted, blocked)",
            ["model", "guard", "stage", "outcome"],
            registry=r,
        )
        self.guard_seconds = Histogram(
            "llmops_gateway_guard_seconds",
            "Seconds a request's guards took, per stage (a stream: all its checks)",
            ["stage"],
            buckets=_GUARD_BUCKETS,
            registry=r,
        )
