"""Serving metrics of a set of requests, named and defined as vLLM's `bench serve` does.

One definition of each metric, used by the sequential health check and by the load generator:

- TTFT: time to the first streamed token; E2EL: end-to-end latency of a request.
- TPOT = (E2EL − TTFT) / (output tokens − 1), over requests with more than one output token
  (`facts.tpot_s`); percentiles are `facts.percentile` (numpy's).
- ITL: every gap between consecutive streamed tokens, pooled over all requests.
- throughputs: completed requests, output tokens, and input + output tokens per second of the
  whole run (first send to last answer);
- goodput: completed requests per second that met every SLO given (`ttft`, `tpot`, `e2el`, in
  milliseconds; a one-token request counts as TPOT 0, as in vLLM).

Statistics are in milliseconds; with no completed request they are 0, as vLLM reports them.

Explained in: book/chapters/01_mlops_to_llmops (TTFT and tokens/s) and
book/chapters/02_optimization/batching (serving metrics under load).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from llmops_lib.engines.base import Completion
from llmops_lib.errors import SpecError
from llmops_lib.facts import percentile

SLO_METRICS = ("ttft", "tpot", "e2el")
STATISTICS = ("mean", "median", "p95", "p99")


def check_slos(slos: Mapping[str, float]) -> dict[str, float]:
    """Validate SLOs in milliseconds by metric name; returns them as floats."""
    unknown = sorted(set(slos) - set(SLO_METRICS))
    if unknown:
        raise SpecError(f"unknown SLO {', '.join(map(repr, unknown))}; use {', '.join(SLO_METRICS)} (milliseconds)")
    for name, limit in slos.items():
        if not float(limit) > 0:
            raise SpecError(f"SLO {name} must be a positive number of milliseconds, got {limit}")
    return {name: float(limit) for name, limit in slos.items()}


def parse_slos(pairs: Sequence[str]) -> dict[str, float]:
    """`["ttft:500", "tpot:50"]` → `{"ttft": 500.0, "tpot": 50.0}` (vLLM's `--goodput` syntax)."""
    slos = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        try:
            slos[name.strip()] = float(value if sep else "missing")
        except ValueError:
            raise SpecError(f"SLO {pair!r} is not of the form name:milliseconds (e.g. ttft:500)") from None
    return check_slos(slos)


def _statistics(values_s: Sequence[float]) -> dict[str, float]:
    """Mean, median, p95, p99 in milliseconds (0 for no values, as vLLM)."""
    if not values_s:
        return dict.fromkeys(STATISTICS, 0.0)
    ms = [v * 1000 for v in values_s]
    return {
        "mean": sum(ms) / len(ms),
        "median": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
    }


def meets_slos(completion: Completion, slos: Mapping[str, float]) -> bool:
    """Whether one completed request met every SLO (milliseconds)."""
    measured = {"ttft": completion.ttft_s, "tpot": completion.tpot_s, "e2el": completion.latency_s}
    return all(measured[name] * 1000 <= limit for name, limit in slos.items())


@dataclass(frozen=True)
class ServingMetrics:
    """vLLM `bench serve`'s result, field by field (times in ms, throughputs per second)."""

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    request_goodput: float | None
    """Requests per second that met every SLO; None when no SLO was given."""
    output_throughput: float
    total_token_throughput: float
    mean_ttft_ms: float
    median_ttft_ms: float
    p95_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p95_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p95_itl_ms: float
    p99_itl_ms: float
    mean_e2el_ms: float
    median_e2el_ms: float
    p95_e2el_ms: float
    p99_e2el_ms: float

    @classmethod
    def of(
        cls,
        completions: Sequence[Completion],
        duration_s: float,
        *,
        failed: int = 0,
        slos: Mapping[str, float] | None = None,
    ) -> ServingMetrics:
        """Metrics of the completed requests of a run that lasted `duration_s` (wall clock).

        Args:
            completions: the requests that completed.
            duration_s: from the first request sent to the last answer received.
            failed: how many requests failed (they count in no other metric).
            slos: limits in milliseconds by metric (`ttft`, `tpot`, `e2el`) for goodput.
        """
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        slos = check_slos(slos or {})
        input_tokens = sum(c.prompt_tokens for c in completions)
        output_tokens = sum(c.completion_tokens for c in completions)
        stats = {
            "ttft": _statistics([c.ttft_s for c in completions]),
            "tpot": _statistics([c.tpot_s for c in completions if c.completion_tokens > 1]),
            "itl": _statistics([gap for c in completions for gap in c.itl_s]),
            "e2el": _statistics([c.latency_s for c in completions]),
        }
        good = sum(meets_slos(c, slos) for c in completions)
        return cls(
            completed=len(completions),
            failed=failed,
            duration_s=duration_s,
            total_input_tokens=input_tokens,
            total_output_tokens=output_tokens,
            request_throughput=len(completions) / duration_s,
            request_goodput=good / duration_s if slos else None,
            output_throughput=output_tokens / duration_s,
            total_token_throughput=(input_tokens + output_tokens) / duration_s,
            **{f"{stat}_{metric}_ms": value for metric, values in stats.items() for stat, value in values.items()},
        )

    @property
    def slo_attainment(self) -> float | None:
        """Share of all requests sent, failed ones included, that completed within every SLO
        (None when no SLO was given): the fraction an operator's target is written against."""
        if self.request_goodput is None:
            return None
        sent = self.completed + self.failed
        return self.request_goodput * self.duration_s / sent if sent else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self) | {"slo_attainment": self.slo_attainment}

    def report(self) -> str:
        """The result as `vllm bench serve` prints it, one aligned line per number."""
        rows: list[tuple[str, object]] = [
            ("Successful requests", self.completed),
            ("Failed requests", self.failed),
            ("Benchmark duration (s)", f"{self.duration_s:.2f}"),
            ("Total input tokens", self.total_input_tokens),
            ("Total generated tokens", self.total_output_tokens),
            ("Request throughput (req/s)", f"{self.request_throughput:.2f}"),
        ]
        if self.request_goodput is not None:
            rows.append(("Request goodput (req/s)", f"{self.request_goodput:.2f}"))
        rows += [
            ("Output token throughput (tok/s)", f"{self.output_throughput:.2f}"),
            ("Total token throughput (tok/s)", f"{self.total_token_throughput:.2f}"),
        ]
        for metric, title in (
            ("ttft", "Time to First Token"),
            ("tpot", "Time per Output Token (excl. 1st token)"),
            ("itl", "Inter-token Latency"),
            ("e2el", "End-to-end Latency"),
        ):
            rows.append((f"-- {title} --", ""))
            for stat in STATISTICS:
                label = stat.capitalize() if stat in ("mean", "median") else stat.upper()
                rows.append((f"{label} {metric.upper()} (ms)", f"{getattr(self, f'{stat}_{metric}_ms'):.2f}"))
        return "\n".join(f"{name:<42}{value}" if value != "" else name for name, value in rows)
