"""Observability on top of the request log: dashboards and quality monitors.

Unit tests run on rows generated here (columns of `observe.request_log`); the engine test scores
completions with the real model.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from llmops_lib.errors import SpecError
from llmops_lib.facts import outcome
from llmops_lib.observe import dashboards, quality

T0 = 1_767_225_570.0  # 2025-12-31 23:59:30 UTC: the generated traffic crosses a day boundary

USD_PER_1K = {"small": (0.1, 0.2), "big": (1.0, 2.0)}  # (input, output) tokens, by deployment


def row(
    i: int,
    at: float,
    *,
    deployment: str = "small",
    status: int = 200,
    cache_hit: bool = False,
    latency: float = 0.5,
    ttft: float = 0.1,
    tokens: tuple[int, int] = (100, 50),
    error_type: str | None = None,
    completion: str | None = None,
) -> dict:
    """One request-log row as the gateway writes it (priced with USD_PER_1K, cache hits free)."""
    cost = (
        0.0
        if cache_hit or status >= 400
        else (tokens[0] * USD_PER_1K[deployment][0] + tokens[1] * USD_PER_1K[deployment][1]) / 1000
    )
    return {
        "request_id": f"req-{i}",
        "started_at": at - latency,
        "finished_at": at,
        "deployment": deployment,
        "http_status": status,
        "error_type": error_type,
        "ttft_s": ttft,
        "latency_s": latency,
        "cache_hit": int(cache_hit),
        "cost_usd": cost,
        "gen_ai_usage_input_tokens": tokens[0],
        "gen_ai_usage_output_tokens": tokens[1],
        "prompt": "Q:" if completion is not None else None,
        "completion": completion,
    }


@pytest.fixture
def rows() -> list[dict]:
    draw = random.Random(0)
    return [
        row(i, T0 + i, latency=draw.uniform(0.1, 2.0), deployment=draw.choice(["small", "big"]), cache_hit=i % 4 == 0)
        for i in range(60)
    ]


def test_outcomes_separate_the_callers_fault_from_ours():
    assert [outcome(row(0, T0, status=s)) for s in (200, 400, 429, 502)] == [
        "ok",
        "client_error",
        "rejected",
        "server_error",
    ]
    assert outcome(row(0, T0, error_type="upstream_disconnected")) == "server_error", (
        "an error after a 200 started is still ours"
    )


def test_buckets_are_contiguous_and_keep_every_row():
    sparse = [row(0, T0), row(1, T0 + 1), row(2, T0 + 35)]
    buckets = dashboards.bucketize(sparse, 10)
    assert list(buckets) == [math.floor(T0 / 10) * 10 + 10 * k for k in range(len(buckets))]
    assert sum(map(len, buckets.values())) == 3 and [] in buckets.values(), "the quiet buckets are there, empty"
    with pytest.raises(SpecError, match="bucket_s"):
        dashboards.bucketize(sparse, 0)


def test_latency_percentiles_are_those_of_each_buckets_answered_requests(rows):
    rows = rows + [row(99, T0 + 5, status=500, latency=100.0)]  # a failure must not count as a latency
    panel = dashboards.latency_panel(rows, 30)
    answered: dict[int, list[float]] = {}  # grouped by hand, percentiles by numpy: an independent oracle
    for r in rows:
        if r["http_status"] == 200:
            answered.setdefault(math.floor(r["finished_at"] / 30), []).append(r["latency_s"] * 1000)
    p95 = next(s for s in panel.series if s.name == "p95")
    assert len(answered) == 2, "60 s of traffic starting on a 30 s boundary"
    assert list(p95.values) == pytest.approx([np.percentile(answered[k], 95) for k in sorted(answered)])


def test_throughput_error_rate_cost_and_cache_panels(rows):
    rows = [dict(r, finished_at=r["finished_at"] + 30) for r in rows]  # all within one minute
    rows += [row(100, T0 + 31, status=429), row(101, T0 + 32, status=503)]
    bucket = 60
    tokens = next(s for s in dashboards.throughput_panel(rows, bucket).series if s.name == "output tokens/s")
    assert sum(tokens.values) * bucket == sum(r["gen_ai_usage_output_tokens"] for r in rows if r["http_status"] == 200)
    errors = {s.name: s.values for s in dashboards.error_rate_panel(rows, bucket).series}
    assert (
        errors["rejected"][0] == pytest.approx(1 / 62)
        and errors["server_error"][0] == pytest.approx(1 / 62)
        and errors["client_error"][0] == 0
    )
    cost = dashboards.cost_panel(rows, bucket)
    assert {s.name for s in cost.series} == {"small", "big"}
    assert sum(sum(s.values) for s in cost.series) == pytest.approx(sum(r["cost_usd"] for r in rows))
    (hits,) = dashboards.cache_hit_panel(rows, bucket).series
    assert hits.values[0] == pytest.approx(15 / 60)


def test_feedback_panel_and_overview(rows):
    feedback = [{"request_id": f"req-{i}", "created_at": T0 + i, "score": i % 2} for i in range(10)]
    mean, count = dashboards.feedback_panel(feedback, 5).series
    assert mean.values == (0.4, 0.6) and count.values == (5, 5)
    fig = dashboards.overview(rows, feedback)
    assert len(fig.data) >= 7 and "60 requests" in fig.layout.title.text
    assert dashboards.auto_bucket_s(rows) == 2, "59 s of traffic in at most 30 buckets"


def test_rolling_mean_forgets_what_left_the_window():
    points = quality.rolling_mean([(0, 1.0), (1, 0.0), (5, 0.0), (10, 1.0)], window_s=5)
    assert [(p.value, p.count) for p in points] == [(1.0, 1), (0.5, 2), (0.0, 2), (1.0, 1)], (
        "the window is (t - 5 s, t]"
    )
    with pytest.raises(SpecError, match="window_s"):
        quality.rolling_mean([], 0)


def test_monitor_status_needs_enough_observations():
    points = quality.rolling_mean([(t, 0.0) for t in range(3)], 60)
    assert quality.status("feedback", points, at_least=0.5).state == "insufficient data"
    assert quality.status("feedback", points, at_least=0.5, min_count=3).state == "alert"
    assert (
        quality.status("feedback", quality.rolling_mean([(t, 1.0) for t in range(9)], 60), at_least=0.5).state == "ok"
    )


def test_repetition_loop_check():
    loop = "the cat sat on the mat " * 10
    assert quality.repeated_ngram_share(loop) > 0.8 and quality.repeated_ngram_share("one two three four five") == 0
    assert quality.NoRepetitionLoop()("", loop)[0] is False
    assert quality.NoRepetitionLoop()("", "Paris is the capital of France.")[0] is True
    assert quality.NonEmpty()("", "  \n") == (False, 0.0)


def test_sampling_is_by_request_id_and_near_the_rate():
    ids = [f"req-{i}" for i in range(4000)]
    chosen = [i for i in ids if quality.in_sample(i, 0.25)]
    assert chosen == [i for i in ids if quality.in_sample(i, 0.25)], "the same ids every time"
    assert 0.2 < len(chosen) / len(ids) < 0.3
    assert set(chosen) <= {i for i in ids if quality.in_sample(i, 0.5)}, "a bigger sample contains the smaller one"
    with pytest.raises(SpecError, match="sample rate"):
        quality.in_sample("x", 0)


def test_checks_run_on_the_logged_text_and_need_it():
    logged = [row(i, T0 + i, completion=text) for i, text in enumerate(["Paris.", "", "go go go go go go go go"])]
    results = quality.run_checks(logged)
    failed = {(r.request_id, r.check) for r in results if not r.passed}
    assert failed == {("req-1", "non_empty"), ("req-2", "no_repetition_loop")}
    rates = quality.check_monitor(results, 60)
    assert rates["non_empty"][-1].value == pytest.approx(2 / 3)
    with pytest.raises(SpecError, match="capture"):
        quality.run_checks([row(0, T0)])


@pytest.mark.engine
def test_the_model_finds_its_own_answer_likelier_than_noise(model_path):
    """The perplexity check on the real model: the model's own greedy continuation scores far below
    shuffled words of the same text, and a too-strict limit fails it."""
    from llmops_lib.engines import EngineSpec, InProcessEngine

    prompt = "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Japan?\nA:"
    with InProcessEngine(EngineSpec(model=model_path, n_ctx=256, threads=1)) as engine:
        answer = engine.complete(prompt, max_tokens=12).text
    noise = " ".join(sorted(answer.split() + ["lamp", "of", "ninety"], key=lambda w: w[::-1]))
    check = quality.PerplexityCheck(model_path, max_perplexity=20.0, n_ctx=256)
    try:
        passed, own = check(prompt, answer)
        noisy_passed, noisy = check(prompt, noise)
    finally:
        check.close()
    assert passed and own < noisy and not noisy_passed, (answer, own, noise, noisy)
    with pytest.raises(SpecError, match="above 1"):
        quality.PerplexityCheck(model_path, max_perplexity=1.0)
