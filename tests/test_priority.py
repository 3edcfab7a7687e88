"""Request priority measured: latency per priority class from the request log, and mixed traffic
through a real gateway of one slot (interactive requests overtake the batch backlog)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmops_lib.bench import LoadPlan, Workload
from llmops_lib.errors import SpecError
from llmops_lib.facts import PRIORITY_HEADER
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.observe.priority import TrafficClass, latency_by_priority, priority_client, run_classes
from llmops_lib.observe.request_log import RequestLogReader


def _row(i: int, priority: str | None, ttft: float, *, status: int = 200, cache_hit: int = 0) -> dict:
    return {
        "request_id": f"r{i}",
        "started_at": 1.0,
        "finished_at": 2.0,
        "priority": priority,
        "ttft_s": ttft,
        "latency_s": ttft + 1,
        "http_status": status,
        "error_type": None,
        "cache_hit": cache_hit,
    }


def test_latency_by_priority_over_answered_upstream_requests_in_priority_order():
    rows = [_row(i, "batch", 0.1 * i) for i in range(1, 11)] + [
        _row(20 + i, "interactive", 0.01 * i) for i in range(1, 5)
    ]
    rows += [_row(90, "batch", 99.0, status=502), _row(91, "interactive", 0.0, cache_hit=1), _row(92, None, 0.02)]
    result = latency_by_priority(rows)
    assert list(result) == ["interactive", "batch"], (
        "interactive first; a row without priority is interactive (the gateway's default)"
    )
    # p95 of 100, 200, …, 1000 ms: rank 0.95 × 9 = 8.55, so 900 + 0.55 × 100 (numpy's linear interpolation)
    assert result["batch"].requests == 10 and result["batch"].p95_ms == pytest.approx(955.0)
    assert result["interactive"].requests == 5 and result["interactive"].p50_ms == pytest.approx(20.0)
    assert latency_by_priority(rows, "latency_s")["batch"].mean_ms == pytest.approx(1000 * (1 + 0.55))
    with pytest.raises(SpecError, match="no answered request"):
        latency_by_priority([_row(1, "batch", 1.0, status=429)])


def test_unknown_priorities_and_duplicate_classes_are_refused():
    workload, plan = Workload(), LoadPlan(num_requests=1)
    with pytest.raises(SpecError, match="unknown priority 'urgent'"):
        TrafficClass("a", "urgent", workload, plan)
    with pytest.raises(SpecError, match="unknown priority"):
        priority_client("http://127.0.0.1:9", "low")
    with pytest.raises(SpecError, match="unique"):
        run_classes("http://127.0.0.1:9", [TrafficClass("a", "batch", workload, plan)] * 2)


def test_priority_client_sends_its_priority_with_every_request():
    """What goes over the wire, seen by a real HTTP server that records the header and ends the stream."""
    seen: list[str | None] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.headers.get(PRIORITY_HEADER))
            body = b"data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the assertion says what went wrong."""

    with ThreadingHTTPServer(("127.0.0.1", 0), Recorder) as http:
        threading.Thread(target=http.serve_forever, daemon=True).start()
        client = priority_client(f"http://127.0.0.1:{http.server_address[1]}", "batch")
        try:
            for _ in range(2):
                assert list(client.stream_events("x", max_tokens=1)) == []
        finally:
            client.close()
            http.shutdown()
    assert seen == ["batch", "batch"]


@pytest.mark.engine
def test_interactive_requests_overtake_the_batch_backlog(server, tmp_path):
    log = tmp_path / "requests.sqlite"
    config = GatewayConfig(
        routes=[Route(model="gemma", deployments=[Deployment(name="live", url=server.base_url)])],
        request_log=str(log),
        concurrency=1,
    )
    workload = Workload(output_tokens=(12, 12))
    classes = [
        TrafficClass("batch job", "batch", workload, LoadPlan(concurrency=4, num_requests=16)),
        TrafficClass("users", "interactive", workload, LoadPlan(concurrency=1, num_requests=6)),
    ]
    with GatewayServer(config) as gw:
        results = run_classes(gw.base_url, classes, model="gemma")
    assert {name: (r.metrics.completed, r.metrics.failed) for name, r in results.items()} == {
        "batch job": (16, 0),
        "users": (6, 0),
    }
    with RequestLogReader(log) as reader:
        by_priority = latency_by_priority(reader.rows())
    assert {p: c.requests for p, c in by_priority.items()} == {"interactive": 6, "batch": 16}
    # Structural, not a speed: with one slot an interactive request waits for at most the request
    # running, a batch request for the whole backlog ahead of it.
    assert by_priority["interactive"].p50_ms < by_priority["batch"].p50_ms
