"""The concurrency sweep (bench.sweep_concurrency) against a real llama-server."""

from __future__ import annotations

import numpy as np
import pytest

from llmops_lib.bench import Workload, sweep_concurrency
from llmops_lib.bench.prometheus import OUTPUT_TOKENS
from llmops_lib.bench.sweep import requests_at
from llmops_lib.errors import EngineError, SpecError


def test_requests_per_level_are_rounds_per_slot_or_the_minimum():
    assert [requests_at(c, rounds=2, min_requests=5) for c in (1, 2, 4)] == [5, 5, 8]


@pytest.mark.engine
def test_each_level_sends_its_requests_and_the_server_counts_the_same_tokens(server):
    levels = sweep_concurrency(server, Workload.random(4, seed=2), [2, 1], rounds=1, min_requests=3)
    assert [level.concurrency for level in levels] == [1, 2], "ascending, whatever the order given"
    for level in levels:
        assert (level.requests, level.metrics.completed, level.metrics.total_output_tokens) == (3, 3, 12)
        assert level.increase(OUTPUT_TOKENS) == 12, "3 requests × 4 tokens, as the server counted them"
        latencies_ms = [c.latency_s * 1000 for c in level.load.completions]
        assert level.percentile_ms("e2el", 100) == pytest.approx(np.max(latencies_ms))
        assert level.percentile_ms("ttft", 50) == pytest.approx(
            np.median([c.ttft_s * 1000 for c in level.load.completions])
        )
        row = level.as_dict()
        assert row["concurrency"] == level.concurrency and row["server_output_tokens"] == 12 and row["errors"] == {}


@pytest.mark.engine
def test_without_counters_there_is_no_server_account(server):
    (level,) = sweep_concurrency(server, Workload.random(2), [1], rounds=1, counters=False, warm_up=False)
    assert level.counters is None and "server_output_tokens" not in level.as_dict()
    with pytest.raises(EngineError, match="counters=True"):
        level.increase(OUTPUT_TOKENS)
    with pytest.raises(SpecError, match="unknown metric"):
        level.percentile_ms("itl", 50)


@pytest.mark.parametrize("levels, options", [([], {}), ([0, 1], {}), ([1], {"rounds": 0}), ([1], {"min_requests": -1})])
def test_bad_levels_are_refused_before_anything_is_sent(levels, options):
    with pytest.raises(SpecError):
        sweep_concurrency(None, Workload.random(2), levels, **options)
