"""`dashboards.summary`: a whole run's numbers from request-log rows, checked against hand-computed values."""

from __future__ import annotations

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.observe.dashboards import summary


def row(started: float, finished: float, status: int = 200, **columns: object) -> dict:
    return {
        "started_at": started,
        "finished_at": finished,
        "http_status": status,
        "latency_s": finished - started,
    } | columns


ROWS = [
    row(100.0, 100.5, deployment="small", ttft_s=0.1, gen_ai_usage_output_tokens=10, cost_usd=0.001),
    row(100.25, 101.25, deployment="large", ttft_s=0.2, gen_ai_usage_output_tokens=20, cost_usd=0.004),
    row(101.0, 101.25, deployment="cache", ttft_s=None, gen_ai_usage_output_tokens=5, cost_usd=0.0, cache_hit=1),
    row(102.0, 102.0, 429, deployment=None, gen_ai_usage_output_tokens=None, cost_usd=None),
    row(103.0, 104.0, 500, deployment="large", gen_ai_usage_output_tokens=3, cost_usd=0.0005),
]
FEEDBACK = [{"created_at": 101.0, "score": 1.0}, {"created_at": 102.0, "score": 0.5}]


def test_summary_of_a_run_matches_the_hand_computed_values():
    s = summary(ROWS, FEEDBACK)
    assert (s.requests, s.answered) == (5, 3)
    assert s.outcomes == {"ok": 3, "rejected": 1, "server_error": 1}
    assert s.by_deployment == {"small": 1, "large": 2, "cache": 1, "(none: refused)": 1}
    # answered latencies 500, 1000, 250 ms: numpy's linear p50 = 500, p95 = 500 + 0.9 * 500 = 950
    assert s.latency_ms == pytest.approx({50: 500.0, 95: 950.0})
    assert s.latency_count == 3
    # TTFT recorded by two answered requests, 100 and 200 ms: p50 = 150, p95 = 100 + 0.95 * 100 = 195
    assert s.ttft_ms == pytest.approx({50: 150.0, 95: 195.0})
    assert s.ttft_count == 2
    assert s.span_s == pytest.approx(4.0)  # first start 100.0, last finish 104.0
    assert s.output_tokens == 35  # the failed request's 3 tokens are not delivered output
    assert s.output_tokens_per_s == pytest.approx(8.75)
    assert s.cache_hits == 1
    assert s.cache_hit_ratio == pytest.approx(1 / 3)
    assert s.spend_usd == pytest.approx(0.0055)
    assert (s.ratings, s.mean_rating) == (2, pytest.approx(0.75))


def test_table_puts_the_sample_count_beside_each_percentile():
    table = summary(ROWS, FEEDBACK).as_table()
    assert table["p50 / p95 end-to-end (ms)"] == "500 / 950 (n = 3)"
    assert table["p50 / p95 TTFT (ms)"] == "150 / 195 (n = 2)"
    assert table["cache hit ratio"] == "33.3% of 3 answered"
    assert table["mean rating"] == "0.75 over 2 ratings"


def test_a_run_without_answers_or_feedback_says_so_instead_of_failing():
    s = summary([row(1.0, 2.0, 503, deployment="large")], quantiles=(99,))
    assert (s.answered, s.latency_ms, s.ttft_ms, s.mean_rating) == (0, {}, {}, None)
    assert s.output_tokens_per_s == 0.0 and s.cache_hit_ratio == 0.0
    table = s.as_table()
    assert table["p99 end-to-end (ms)"] == "no answered requests"
    assert table["mean rating"] == "no ratings"


def test_no_rows_is_refused_with_what_to_do():
    with pytest.raises(SpecError, match="no requests to summarise"):
        summary([])
