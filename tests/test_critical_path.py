"""The critical path of a request: literal splits, and one real request through a real gateway."""

from __future__ import annotations

import httpx
import pytest

from llmops_lib.engines.llamacpp import ServerTimings
from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.observe.critical_path import CriticalPath, critical_path, mean_path, paths_of, send_timed
from llmops_lib.observe.request_log import RequestLogReader


def test_split_of_a_logged_request():
    row = {"request_id": "req-1", "latency_s": 1.5, "queue_s": 0.25}
    path = critical_path(row, ServerTimings(prompt_n=100, prompt_ms=200.0, predicted_n=32, predicted_ms=1000.0))
    assert path == CriticalPath(queue_ms=250.0, prefill_ms=200.0, decode_ms=1000.0, other_ms=50.0)
    assert path.total_ms == 1500.0
    assert path.dominant == "decode"


def test_mean_path_and_join_by_request_id():
    rows = [
        {"request_id": "a", "latency_s": 1.0, "queue_s": 0.0},
        {"request_id": "b", "latency_s": 3.0, "queue_s": 2.0},
        {"request_id": "not timed", "latency_s": 9.0, "queue_s": 9.0},
    ]
    timings = {"a": ServerTimings(prompt_ms=600.0, predicted_ms=390.0), "b": ServerTimings(prompt_ms=200.0)}
    paths = paths_of(rows, timings)
    assert [p.other_ms for p in paths] == [10.0, 800.0]
    assert mean_path(paths) == CriticalPath(queue_ms=1000.0, prefill_ms=400.0, decode_ms=195.0, other_ms=405.0)
    assert mean_path(paths).dominant == "queue"


def test_a_cache_hit_or_an_old_log_row_is_refused():
    with pytest.raises(SpecError, match="queue_s"):
        critical_path({"request_id": "req-2", "latency_s": 0.001, "queue_s": None}, ServerTimings())
    with pytest.raises(SpecError, match="no requests"):
        mean_path([])


def test_one_request_through_the_gateway_adds_up(server, tmp_path):
    route = Route(model="gemma", deployments=[Deployment(name="engine", url=server.base_url)])
    config = GatewayConfig(routes=[route], request_log=str(tmp_path / "requests.sqlite"), cache_size=0)
    body = {"model": "gemma", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    with GatewayServer(config) as gateway, httpx.Client(base_url=gateway.base_url, timeout=120) as http:
        request_id, timings = send_timed(http, body | {"ignore_eos": True})
        with RequestLogReader(config.request_log) as reader:
            row = next(r for r in reader.rows_including([request_id]) if r["request_id"] == request_id)
    assert timings.predicted_n == 8 and timings.prompt_n + timings.cache_n > 0
    path = critical_path(row, timings)
    assert path.queue_ms >= 0 and path.other_ms > 0  # nothing waited ahead; the HTTP hops take some time
    assert path.total_ms == pytest.approx(row["latency_s"] * 1000)
