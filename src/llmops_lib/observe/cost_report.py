"""Cost reports from the request log: per request, per day, per deployment, and what the cache and
the routing rule saved.

The gateway prices every request as it logs it (`cost_usd`, from `observe.cost.PriceTable`). This
module adds what a budget owner asks next (the savings take the gateway's price table, e.g.
`gateway.load_config(path).price_table()`):

- **per day / per deployment**: where the money goes;
- **cache savings**: requests the response cache answered sent no tokens upstream; priced at the
  deployment that would have served them, that is money not spent;
- **routing savings**: what the same answered requests would have cost had all gone to one
  reference deployment (the big model) instead of where the routing rule sent them.

Explained in: book/chapters/03_observability/common_challenges and runbooks/cost_report.ipynb
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import plotly.graph_objects as go

from llmops_lib.errors import SpecError
from llmops_lib.facts import outcome
from llmops_lib.observe.cost import PriceTable
from llmops_lib.observe.request_log import RequestLogReader, database_path


def _tokens(row: Mapping) -> tuple[int, int]:
    return int(row.get("gen_ai_usage_input_tokens") or 0), int(row.get("gen_ai_usage_output_tokens") or 0)


def _cost(row: Mapping) -> float:
    return float(row.get("cost_usd") or 0.0)


def cost_by_day(rows: Sequence[Mapping]) -> dict[str, float]:
    """USD per UTC day (`YYYY-MM-DD`, by when each request started), in date order."""
    days: dict[str, float] = {}
    for row in sorted(rows, key=lambda r: r["started_at"]):
        day = datetime.fromtimestamp(float(row["started_at"]), tz=UTC).strftime("%Y-%m-%d")
        days[day] = days.get(day, 0.0) + _cost(row)
    return days


def cost_by_deployment(rows: Sequence[Mapping]) -> dict[str, float]:
    """USD per deployment, most expensive first."""
    totals: dict[str, float] = {}
    for row in rows:
        totals[str(row.get("deployment"))] = totals.get(str(row.get("deployment")), 0.0) + _cost(row)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class CacheSavings:
    """What the response cache kept from going upstream."""

    hits: int
    input_tokens: int
    output_tokens: int
    usd: float


def cache_savings(rows: Sequence[Mapping], prices: PriceTable) -> CacheSavings:
    """Tokens of cache hits (not sent upstream) priced at the deployment whose answer was cached.

    Raises:
        SpecError: a hit's deployment has no price (give the price table the gateway used).
    """
    hits = [r for r in rows if r.get("cache_hit") and outcome(r) == "ok"]
    tokens = [_tokens(r) for r in hits]
    usd = sum(
        prices.cost(str(r.get("cached_from") or r.get("deployment")), *t) for r, t in zip(hits, tokens, strict=True)
    )
    return CacheSavings(len(hits), sum(t[0] for t in tokens), sum(t[1] for t in tokens), usd)


@dataclass(frozen=True)
class RoutingSavings:
    """Actual cost of the requests served upstream against their cost had all gone to `reference`."""

    reference: str
    requests: int
    actual_usd: float
    all_to_reference_usd: float

    @property
    def usd(self) -> float:
        return self.all_to_reference_usd - self.actual_usd

    @property
    def share(self) -> float:
        """Savings as a share of the all-to-reference cost (0 when that cost is 0)."""
        return self.usd / self.all_to_reference_usd if self.all_to_reference_usd else 0.0


def routing_savings(rows: Sequence[Mapping], prices: PriceTable, reference: str) -> RoutingSavings:
    """Compare what the upstream-served, answered requests cost with the same tokens at `reference`."""
    served = [r for r in rows if not r.get("cache_hit") and outcome(r) == "ok"]
    counterfactual = sum(prices.cost(reference, *_tokens(r)) for r in served)
    return RoutingSavings(reference, len(served), sum(_cost(r) for r in served), counterfactual)


@dataclass(frozen=True)
class CostReport:
    """A period's cost, where it went, and what the cache and routing saved."""

    since: float
    until: float
    requests: int
    total_usd: float
    per_request_usd: float
    by_day: dict[str, float]
    by_deployment: dict[str, float]
    cache: CacheSavings | None
    routing: RoutingSavings | None

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.routing is not None:
            data["routing"] |= {"usd": self.routing.usd, "share": self.routing.share}
        return data


def cost_report(
    rows: Sequence[Mapping], prices: PriceTable | None = None, *, reference: str | None = None
) -> CostReport:
    """The report over `rows` (one period of the request log). Savings need the `prices`;
    routing savings also need the `reference` deployment to compare with.

    Raises:
        SpecError: no rows (nothing to report), or `reference` without `prices`.
    """
    if not rows:
        raise SpecError(
            "no requests in the request log for this period and these deployments: "
            "widen the period or check the log's path"
        )
    if reference is not None and prices is None:
        raise SpecError("routing savings need the price table: give prices together with the reference deployment")
    total = sum(_cost(r) for r in rows)
    return CostReport(
        since=min(float(r["started_at"]) for r in rows),
        until=max(float(r.get("finished_at") or r["started_at"]) for r in rows),
        requests=len(rows),
        total_usd=total,
        per_request_usd=total / len(rows),
        by_day=cost_by_day(rows),
        by_deployment=cost_by_deployment(rows),
        cache=cache_savings(rows, prices) if prices is not None else None,
        routing=routing_savings(rows, prices, reference) if reference is not None and prices is not None else None,
    )


@dataclass(frozen=True)
class Period:
    """The request-log rows of one reporting period."""

    url: str
    since: float
    until: float
    deployments: tuple[str, ...]
    rows: list[dict]

    def describe(self) -> str:
        span = " to ".join(
            datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") for t in (self.since, self.until)
        )
        return span + (f", deployments {', '.join(self.deployments)}" if self.deployments else ", all deployments")


def _utc(text: str, name: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"{name}={text!r} is not an ISO 8601 time: write it as 2026-01-31T00:00 (UTC)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def load_period(
    request_log: str = "", *, hours: float = 24.0, since: str = "", until: str = "", deployments: str = ""
) -> Period:
    """The rows of the request log at `request_log` (path or `sqlite:///` URL; empty: LLMOPS_HOME's)
    for the last `hours`, or `since`…`until` (ISO 8601, UTC), for the comma-separated `deployments`.

    Raises:
        SpecError: a bad period, a log that does not exist, or no request in the period.
    """
    path = database_path(request_log or None)
    if not path.is_file():
        raise SpecError(
            f"no request log at {path}: run the gateway with a request log first, or point request_log at one"
        )
    end = _utc(until, "until") if until else time.time()
    start = _utc(since, "since") if since else end - hours * 3600
    if not (hours > 0 or since) or start >= end:
        raise SpecError(
            f"the period must have a positive length: since {since or f'{hours} hours back'} until {until or 'now'}"
        )
    names = tuple(name.strip() for name in deployments.split(",") if name.strip())
    log = RequestLogReader(path)
    rows = [r for name in (names or (None,)) for r in log.rows(since=start, until=end, deployment=name)]
    period = Period(str(path), start, end, names, rows)
    if not rows:
        raise SpecError(
            f"the request log {path} has no request from {period.describe()}: widen the period or check the deployments"
        )
    return period


def savings_figure(report: CostReport) -> go.Figure:
    """Actual spend beside what it would have been without the cache, and with everything on the reference."""
    bars = {"actual": report.total_usd}
    if report.cache is not None:
        bars["without the cache"] = report.total_usd + report.cache.usd
    if report.routing is not None:
        bars[f"all to {report.routing.reference}"] = report.total_usd + report.routing.usd
    fig = go.Figure(
        go.Bar(x=list(bars), y=list(bars.values()), text=[f"${v:.4g}" for v in bars.values()], textposition="outside")
    )
    fig.update_layout(title=f"Spend over {report.requests} requests, and the counterfactuals", yaxis_title="USD")
    return fig
