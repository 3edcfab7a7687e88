"""Dashboards from the request log: the operator's six panels, computed from rows.

Each panel is a pure function from request-log rows (dicts with the columns of
`observe.request_log`, OpenTelemetry GenAI names) to named series over time buckets, so it can be
tested on rows a test generates and drawn from a live log alike. `figure()` draws one panel,
`overview()` all of them on one page. A request counts in the bucket in which it *finished*, as a
Prometheus counter would count it.

Explained in: book/chapters/03_observability/monitoring
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmops_lib.errors import SpecError
from llmops_lib.facts import Outcome, outcome, percentile

# Bucket widths a dashboard picks from (seconds): round numbers an operator reads at a glance.
NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


@dataclass(frozen=True)
class Series:
    """One line or bar series of a panel: a value (or None: no data) per bucket start."""

    name: str
    times: tuple[datetime, ...]
    values: tuple[float | None, ...]
    kind: str = "line"  # "line" or "bar"


@dataclass(frozen=True)
class Panel:
    """A titled set of series with the unit of their y axis."""

    title: str
    unit: str
    series: tuple[Series, ...]


def finished_at(row: Mapping) -> float:
    return float(row.get("finished_at") or row["started_at"])


def auto_bucket_s(rows: Sequence[Mapping], buckets: int = 30) -> float:
    """The smallest round bucket width that spreads the rows' time span over at most `buckets` buckets."""
    if not rows:
        return NICE_BUCKETS_S[0]
    ends = [finished_at(r) for r in rows]
    span = max(ends) - min(ends)
    return next((b for b in NICE_BUCKETS_S if span / b <= buckets), NICE_BUCKETS_S[-1])


def bucketize(
    rows: Iterable[Mapping], bucket_s: float, *, time_of: Callable[[Mapping], float] = finished_at
) -> dict[float, list[Mapping]]:
    """Rows by the start of their bucket (unix s), every bucket from the first to the last present."""
    if not bucket_s > 0:
        raise SpecError(f"bucket_s must be a positive number of seconds, got {bucket_s}")
    grouped: dict[float, list[Mapping]] = {}
    for row in rows:
        grouped.setdefault(math.floor(time_of(row) / bucket_s) * bucket_s, []).append(row)
    if not grouped:
        return {}
    first, last = min(grouped), max(grouped)
    return {
        first + i * bucket_s: grouped.get(first + i * bucket_s, []) for i in range(round((last - first) / bucket_s) + 1)
    }


def _times(buckets: Mapping[float, object]) -> tuple[datetime, ...]:
    return tuple(datetime.fromtimestamp(t, tz=UTC) for t in buckets)


def _series(
    name: str,
    buckets: Mapping[float, list[Mapping]],
    value: Callable[[list[Mapping]], float | None],
    kind: str = "line",
) -> Series:
    return Series(name, _times(buckets), tuple(value(rows) for rows in buckets.values()), kind)


def latency_panel(
    rows: Sequence[Mapping], bucket_s: float, *, column: str = "latency_s", quantiles: Sequence[float] = (50, 95, 99)
) -> Panel:
    """Percentiles of `latency_s` (end to end) or `ttft_s` per bucket, in ms, over answered requests.

    Percentiles, not means: a mean hides the slow tail that users complain about and SLOs state."""
    answered = [r for r in rows if outcome(r) == Outcome.OK and r.get(column) is not None]
    buckets = bucketize(answered, bucket_s)

    def at(q: float) -> Callable[[list[Mapping]], float | None]:
        return lambda group: percentile([r[column] * 1000 for r in group], q) if group else None

    label = {"latency_s": "end-to-end latency", "ttft_s": "time to first token"}.get(column, column)
    return Panel(f"{label} percentiles", "ms", tuple(_series(f"p{q:g}", buckets, at(q)) for q in quantiles))


def throughput_panel(rows: Sequence[Mapping], bucket_s: float) -> Panel:
    """Answered requests/s and generated tokens/s per bucket (what the fleet delivers)."""
    buckets = bucketize([r for r in rows if outcome(r) == Outcome.OK], bucket_s)
    tokens = _series(
        "output tokens/s", buckets, lambda g: sum(int(r.get("gen_ai_usage_output_tokens") or 0) for r in g) / bucket_s
    )
    requests = _series("requests/s", buckets, lambda g: len(g) / bucket_s)
    return Panel("throughput", "per second", (tokens, requests))


def error_rate_panel(rows: Sequence[Mapping], bucket_s: float) -> Panel:
    """Share of requests per bucket that did not end `ok`, by outcome (`facts.outcome`)."""
    buckets = bucketize(rows, bucket_s)
    return Panel(
        "error rate",
        "share of requests",
        tuple(
            _series(kind, buckets, lambda g, kind=kind: sum(outcome(r) == kind for r in g) / len(g) if g else None)
            for kind in Outcome
            if kind != Outcome.OK
        ),
    )


def cost_panel(rows: Sequence[Mapping], bucket_s: float) -> Panel:
    """USD per bucket, stacked by deployment (`cost_usd` as the gateway priced each request)."""
    buckets = bucketize(rows, bucket_s)
    deployments = sorted({str(r.get("deployment")) for r in rows})
    return Panel(
        "cost",
        "USD per bucket",
        tuple(
            _series(
                name,
                buckets,
                lambda g, name=name: sum(float(r.get("cost_usd") or 0) for r in g if str(r.get("deployment")) == name),
                "bar",
            )
            for name in deployments
        ),
    )


def cache_hit_panel(rows: Sequence[Mapping], bucket_s: float) -> Panel:
    """Share of answered requests per bucket that the gateway's response cache served."""
    buckets = bucketize([r for r in rows if outcome(r) == Outcome.OK], bucket_s)
    return Panel(
        "cache hit ratio",
        "share of answered requests",
        (_series("hit ratio", buckets, lambda g: sum(bool(r.get("cache_hit")) for r in g) / len(g) if g else None),),
    )


def feedback_panel(feedback: Sequence[Mapping], bucket_s: float) -> Panel:
    """Mean user feedback score per bucket (rows of the `feedback` table, by `created_at`)."""
    buckets = bucketize(feedback, bucket_s, time_of=lambda r: float(r["created_at"]))
    mean = _series("mean score", buckets, lambda g: sum(float(r["score"]) for r in g) / len(g) if g else None)
    count = _series("ratings", buckets, lambda g: float(len(g)), "bar")
    return Panel("user feedback", "score / ratings", (mean, count))


def figure(panel: Panel) -> go.Figure:
    """One panel as its own figure."""
    fig = go.Figure()
    _draw(fig, panel)
    fig.update_layout(title=panel.title, yaxis_title=panel.unit, xaxis_title="time (UTC)", barmode="stack")
    return fig


def overview(
    rows: Sequence[Mapping], feedback: Sequence[Mapping] = (), *, bucket_s: float | None = None, title: str = "Gateway"
) -> go.Figure:
    """All six panels on one figure, bucketed alike (auto width when `bucket_s` is None)."""
    bucket_s = bucket_s or auto_bucket_s([*rows, *({"finished_at": f["created_at"]} for f in feedback)])
    panels = (
        latency_panel(rows, bucket_s),
        latency_panel(rows, bucket_s, column="ttft_s"),
        throughput_panel(rows, bucket_s),
        error_rate_panel(rows, bucket_s),
        cost_panel(rows, bucket_s),
        cache_hit_panel(rows, bucket_s),
        feedback_panel(feedback, bucket_s),
    )
    columns = 2
    grid_rows = math.ceil(len(panels) / columns)
    fig = make_subplots(rows=grid_rows, cols=columns, subplot_titles=[p.title for p in panels], vertical_spacing=0.08)
    for index, panel in enumerate(panels):
        row, col = divmod(index, columns)
        _draw(fig, panel, row=row + 1, col=col + 1)
        fig.update_yaxes(title_text=panel.unit, row=row + 1, col=col + 1)
    fig.update_layout(
        title=f"{title}: {len(rows)} requests, {bucket_s:g} s buckets (UTC)", height=300 * grid_rows, barmode="stack"
    )
    return fig


def _draw(fig: go.Figure, panel: Panel, **where: int) -> None:
    for series in panel.series:
        trace = go.Bar if series.kind == "bar" else go.Scatter
        extra = {} if series.kind == "bar" else {"mode": "lines+markers", "connectgaps": False}
        fig.add_trace(
            trace(
                x=series.times, y=series.values, name=f"{panel.title}: {series.name}", legendgroup=panel.title, **extra
            ),
            **where,
        )


@dataclass(frozen=True)
class RunSummary:
    """The dashboards' numbers for a whole run, one value each: what a chapter or a report prints
    under the panels. Percentiles are over answered requests and carry their sample counts."""

    requests: int
    outcomes: dict[str, int]  # `facts.Outcome` value -> requests
    by_deployment: dict[str, int]  # deployment ("cache", or "(none: refused)") -> requests
    answered: int  # requests whose outcome is ok
    latency_ms: dict[float, float]  # percentile -> end-to-end latency (ms) over answered requests
    latency_count: int  # how many answered requests recorded a latency
    ttft_ms: dict[float, float]  # percentile -> TTFT (ms) over answered requests that recorded one
    ttft_count: int  # how many answered requests recorded a TTFT
    span_s: float  # first start to last finish
    output_tokens: int  # generated by answered requests
    cache_hits: int  # answered requests the response cache served
    spend_usd: float  # as the gateway priced every request
    ratings: int
    mean_rating: float | None  # None without feedback
    quantiles: tuple[float, ...] = (50, 95)  # the percentiles asked for

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.span_s if self.span_s > 0 else 0.0

    @property
    def cache_hit_ratio(self) -> float:
        return self.cache_hits / self.answered if self.answered else 0.0

    def as_table(self) -> dict[str, object]:
        """Rows for `viz.table`: each percentile beside the number of requests it is drawn from."""

        def percentiles(values: dict[float, float], count: int) -> str:
            if not values:
                return "no answered requests"
            return " / ".join(f"{v:.0f}" for v in values.values()) + f" (n = {count})"

        names = " / ".join(f"p{q:g}" for q in self.quantiles)
        rating = f"{self.mean_rating:.2f} over {self.ratings} ratings" if self.mean_rating is not None else "no ratings"
        return {
            "requests": self.requests,
            "outcomes": self.outcomes,
            "by deployment": self.by_deployment,
            f"{names} end-to-end (ms)": percentiles(self.latency_ms, self.latency_count),
            f"{names} TTFT (ms)": percentiles(self.ttft_ms, self.ttft_count),
            "output tokens/s over the run": f"{self.output_tokens_per_s:.1f} "
            f"({self.output_tokens} tokens in {self.span_s:.1f} s)",
            "cache hit ratio": f"{self.cache_hit_ratio:.1%} of {self.answered} answered",
            "spend (USD)": f"{self.spend_usd:.6f}",
            "mean rating": rating,
        }


def summary(
    rows: Sequence[Mapping], feedback: Sequence[Mapping] = (), *, quantiles: Sequence[float] = (50, 95)
) -> RunSummary:
    """One `RunSummary` of request-log rows (and feedback rows) over their whole time span.

    Raises:
        SpecError: there are no rows to summarise.
    """
    if not rows:
        raise SpecError("no requests to summarise: send traffic through the gateway and read its request log first")
    answered = [r for r in rows if outcome(r) == Outcome.OK]
    latencies = [float(r["latency_s"]) * 1000 for r in answered if r.get("latency_s") is not None]
    ttfts = [float(r["ttft_s"]) * 1000 for r in answered if r.get("ttft_s") is not None]
    outcomes: dict[str, int] = {}
    deployments: dict[str, int] = {}
    for row in rows:
        outcomes[str(outcome(row))] = outcomes.get(str(outcome(row)), 0) + 1
        deployment = str(row.get("deployment") or "(none: refused)")  # refused before any routing
        deployments[deployment] = deployments.get(deployment, 0) + 1
    scores = [float(f["score"]) for f in feedback]
    return RunSummary(
        requests=len(rows),
        outcomes=outcomes,
        by_deployment=deployments,
        answered=len(answered),
        latency_ms={q: percentile(latencies, q) for q in quantiles} if latencies else {},
        ttft_ms={q: percentile(ttfts, q) for q in quantiles} if ttfts else {},
        latency_count=len(latencies),
        ttft_count=len(ttfts),
        span_s=max(finished_at(r) for r in rows) - min(float(r["started_at"]) for r in rows),
        output_tokens=sum(int(r.get("gen_ai_usage_output_tokens") or 0) for r in answered),
        cache_hits=sum(bool(r.get("cache_hit")) for r in answered),
        spend_usd=sum(float(r.get("cost_usd") or 0) for r in rows),
        ratings=len(scores),
        mean_rating=sum(scores) / len(scores) if scores else None,
        quantiles=tuple(quantiles),
    )
