"""The load generator: vLLM's metric definitions on hand-made timings, and real load on llama-server."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmops_lib.bench import (
    LoadPlan,
    ServingMetrics,
    Workload,
    engine_generation_speed,
    parse_slos,
    run_load,
)
from llmops_lib.bench.prometheus import OUTPUT_TOKENS, PROMPT_TOKENS, scrape
from llmops_lib.engines import EngineSpec, LlamaServer, OpenAIClient
from llmops_lib.engines.base import Completion, StreamEvent, timed_completion
from llmops_lib.engines.server import free_port
from llmops_lib.errors import ModelError, SpecError
from llmops_lib.facts import percentile

ROOT = Path(__file__).resolve().parents[1]


def completion(ttft_s: float, latency_s: float, tokens: int, itl_s: tuple[float, ...] = ()) -> Completion:
    return Completion(
        "x" * tokens, prompt_tokens=10, completion_tokens=tokens, ttft_s=ttft_s, latency_s=latency_s, itl_s=itl_s
    )


# --- the metric math, on timings made by hand ------------------------------------------------------


def test_percentile_interpolates_linearly():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert percentile([0, 100], 99) == pytest.approx(99)
    assert percentile([300, 1100, 2200], 99) == pytest.approx(2178)  # rank 1.98: 1100 + 0.98 × 1100
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)


@given(
    values=st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=50),
    q=st.floats(min_value=0, max_value=100),
)
def test_percentile_agrees_with_numpy(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


def test_metrics_follow_vllm_definitions():
    done = [
        completion(0.1, 1.1, 11, itl_s=(0.1,) * 10),  # TPOT (1.1 − 0.1) / 10 = 100 ms
        completion(0.3, 0.3, 1),  # one token: no TPOT, no ITL
        completion(0.2, 2.2, 5, itl_s=(0.2, 0.2, 0.8, 0.8)),  # TPOT 2.0 / 4 = 500 ms
    ]
    m = ServingMetrics.of(done, duration_s=4.0, failed=2)
    assert (m.completed, m.failed) == (3, 2)
    assert m.total_input_tokens == 30 and m.total_output_tokens == 17
    assert m.request_throughput == pytest.approx(0.75)
    assert m.output_throughput == pytest.approx(17 / 4) and m.total_token_throughput == pytest.approx(47 / 4)
    assert m.mean_ttft_ms == pytest.approx(200) and m.median_ttft_ms == pytest.approx(200)
    assert m.mean_tpot_ms == pytest.approx(300), "one-token requests have no TPOT"
    assert m.median_itl_ms == pytest.approx(100), "ITL pools every gap of every request"
    assert m.mean_itl_ms == pytest.approx((1.0 + 2.0) / 14 * 1000)
    assert m.p99_e2el_ms == pytest.approx(2178)  # numpy.percentile([1100, 300, 2200], 99)
    assert m.request_goodput is None, "no SLO, no goodput"


def test_goodput_counts_requests_meeting_every_slo():
    done = [completion(0.1, 1.1, 11), completion(0.3, 0.3, 1), completion(0.2, 2.2, 5)]
    m = ServingMetrics.of(done, duration_s=2.0, slos={"ttft": 250, "tpot": 200})
    # TTFT 100 ms and TPOT 100 ms: good; TTFT 300 ms: bad; TPOT 500 ms: bad.
    assert m.request_goodput == pytest.approx(0.5)
    assert ServingMetrics.of(done, 2.0, slos={"tpot": 1}).request_goodput == pytest.approx(0.5), (
        "one token counts as TPOT 0"
    )


def test_no_completed_request_gives_zeros_not_a_crash():
    m = ServingMetrics.of([], duration_s=1.0, failed=3)
    assert m.failed == 3 and m.completed == 0 and m.p99_e2el_ms == 0.0
    assert "Failed requests" in m.report()


def test_streamed_timing_records_inter_token_latencies():
    done = timed_completion(
        [StreamEvent("a"), StreamEvent("b"), StreamEvent(""), StreamEvent("c", "length", {"completion_tokens": 3})],
        start=0.0,
    )
    assert len(done.itl_s) == 2 and all(gap >= 0 for gap in done.itl_s)
    assert done.completion_tokens == 3 and done.text == "abc"


def test_poisson_send_times_are_reproducible_from_the_seed():
    plan = LoadPlan(request_rate=4.0, num_requests=200)
    first, again, other = list(plan.send_offsets(7)), list(plan.send_offsets(7)), list(plan.send_offsets(8))
    assert first == again and first != other
    assert first == sorted(first) and len(first) == 200
    assert 200 / first[-1] == pytest.approx(4.0, rel=0.25), "mean rate near the requested one"
    assert list(LoadPlan(concurrency=2, num_requests=3).send_offsets(0)) == [0.0, 0.0, 0.0]
    assert max(LoadPlan(request_rate=2.0, duration_s=5.0).send_offsets(1)) < 5.0


def test_workload_requests_depend_on_seed_and_index_only():
    workload = Workload.random(32, context_words=20, range_ratio=0.5, seed=3)
    assert [workload.request(i) for i in (5, 1)] == [workload.request(i) for i in (5, 1)]
    lengths = {workload.request(i).max_tokens for i in range(50)}
    assert min(lengths) >= 16 and max(lengths) <= 48 and len(lengths) > 5
    assert workload.request(0) != Workload.random(32, context_words=20, range_ratio=0.5, seed=4).request(0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LoadPlan(concurrency=0, num_requests=1), "concurrency must be at least 1"),
        (lambda: LoadPlan(request_rate=-1.0, num_requests=1), "request_rate must be a positive"),
        (lambda: LoadPlan(concurrency=2), "needs num_requests or duration_s"),
        (lambda: parse_slos(["latency:100"]), "unknown SLO 'latency'; use ttft, tpot, e2el"),
        (lambda: parse_slos(["ttft=100"]), "not of the form name:milliseconds"),
        (lambda: parse_slos(["ttft:-5"]), "must be a positive number of milliseconds"),
        (lambda: Workload(output_tokens=(64, 8)), "low <= high"),
        (lambda: Workload.random(64, range_ratio=1.5), "range_ratio"),
    ],
)
def test_bad_inputs_are_clear_spec_errors(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_refused_endpoint_counts_every_request_as_failed():
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}")
    result = run_load(client, Workload(), LoadPlan(concurrency=2, num_requests=5), progress=False)
    assert result.metrics.failed == 5 and result.metrics.completed == 0
    assert len(result.outcomes) == 5 and sum(result.errors.values()) == 5
    assert "Connection refused" in next(iter(result.errors))


def test_bench_help_explains_itself():
    result = subprocess.run([sys.executable, "-m", "llmops_lib", "bench", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: llmops bench" in result.stdout and "goodput" in result.stdout


def test_bench_bad_input_is_one_error_line():
    result = subprocess.run(
        [sys.executable, "-m", "llmops_lib", "bench", "--concurrency", "0"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: LoadPlan.concurrency must be at least 1 request in flight, got 0"


# --- real load on llama-server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def batching_server(model_path):
    with LlamaServer(EngineSpec(model=model_path, n_ctx=512, threads=1, parallel=4)) as server:
        yield server


@pytest.mark.engine
def test_concurrent_load_completes_and_agrees_with_the_server_counters(batching_server):
    client = batching_server.client
    before = scrape(client)
    workload = Workload.random(16, context_words=20, range_ratio=0.5, seed=1)
    result = run_load(client, workload, LoadPlan(concurrency=4, num_requests=8), slos={"e2el": 600_000}, progress=False)
    after = scrape(client)
    m = result.metrics
    assert (m.completed, m.failed) == (8, 0), result.errors
    assert m.total_output_tokens == sum(o.request.max_tokens for o in result.outcomes), (
        "ignore_eos: exactly max_tokens each"
    )
    assert m.total_output_tokens == before.increase(after, OUTPUT_TOKENS), "client and server count the same tokens"
    assert m.total_input_tokens >= before.increase(after, PROMPT_TOKENS), "the server excludes cached prompt tokens"
    assert m.request_goodput == pytest.approx(m.request_throughput)
    assert 0 < m.median_ttft_ms <= m.median_e2el_ms and m.mean_itl_ms > 0 and m.mean_tpot_ms > 0
    first_end = min(o.sent_at_s + o.completion.latency_s for o in result.outcomes[:4])
    assert all(o.sent_at_s < first_end for o in result.outcomes[:4]), "four requests in flight at once"
    # Each completion's latency is timed inside its call, which starts after the send: sent_at + latency
    # is at most the moment it finished, so these orderings hold exactly, with no tolerance.
    assert result.outcomes[4].sent_at_s >= first_end, "a fifth only when one of them finished"
    assert m.duration_s >= max(o.sent_at_s + o.completion.latency_s for o in result.outcomes)


@pytest.mark.engine
def test_duration_bound_poisson_run_finishes_what_it_sent(batching_server):
    plan = LoadPlan(concurrency=4, request_rate=2.0, duration_s=3.0)
    result = run_load(batching_server.client, Workload.random(8, seed=2), plan, progress=False)
    expected = list(plan.send_offsets(2))
    assert [o.request.index for o in result.outcomes] == list(range(len(expected)))
    assert result.metrics.completed == len(expected) and result.metrics.failed == 0
    # time.sleep sleeps at least as long as asked: only float rounding (1 µs) may show a send "early".
    sent = [(o.sent_at_s, offset) for o, offset in zip(result.outcomes, expected, strict=True)]
    assert all(at >= offset - 1e-6 for at, offset in sent), "never sent early"


@pytest.mark.engine
def test_bench_command_runs_against_an_endpoint(batching_server, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmops_lib",
            "bench",
            "--endpoint",
            batching_server.base_url,
            "--concurrency",
            "2",
            "--num-requests",
            "2",
            "--output-len",
            "4",
            "--goodput",
            "ttft:600000",
            "--json",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^Successful requests\s+2\s*$", result.stdout, re.M) and "Request goodput" in result.stdout
    assert json.loads(out.read_text())["metrics"]["total_output_tokens"] == 8


@pytest.mark.engine
def test_bench_command_starts_its_own_server():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmops_lib",
            "bench",
            "--num-requests",
            "2",
            "--output-len",
            "3",
            "--threads",
            "1",
            "--parallel",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "started llama-server (1 slots, 1 threads)" in result.stderr
    assert re.search(r"^Total generated tokens\s+6\s*$", result.stdout, re.M), result.stdout


@pytest.mark.engine
def test_serving_benchmark_writes_claims(tmp_path):
    out = tmp_path / "serving.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/serving.py",
            "--threads",
            "1",
            "--concurrency",
            "1",
            "2",
            "--rounds",
            "1",
            "--output-len",
            "4",
            "--also",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["claims"]) == {"agreement", "timing_agreement"}, "no concurrency 8: no batching claim"
    assert [r["total_output_tokens"] for r in report["results"]] == [4, 8]
    assert "environment" in report
    one, two = report["results"]
    assert one["engine_output_throughput"] > 0 and two["engine_output_throughput"] > 0
    # The ratios to one stream are the reported throughputs divided, recomputed here from the raw numbers.
    assert two["throughput_vs_single"] == pytest.approx(two["output_throughput"] / one["output_throughput"])
    assert two["engine_vs_single"] == pytest.approx(two["engine_output_throughput"] / one["engine_output_throughput"])
    assert list(report["by_weights"]) == ["Q4_K_M"], "--also with no format: the default model only"


@pytest.mark.engine
def test_engine_alone_decodes_every_batch_size(model_path):
    speeds = engine_generation_speed(EngineSpec(model=model_path, threads=1), [1, 3], prompt_len=4, output_len=4)
    assert set(speeds) == {1, 3} and min(speeds.values()) > 0


def test_engine_alone_refuses_bad_sizes_and_a_broken_model(tmp_path):
    with pytest.raises(SpecError, match="at least 1"):
        engine_generation_speed(EngineSpec(model=tmp_path / "m.gguf"), [0])
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(ModelError):
        engine_generation_speed(EngineSpec(model=broken), [1])


@pytest.mark.engine
def test_load_test_runbook_gate_fails_on_an_unmeetable_slo():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmops_lib",
            "runbook",
            "run",
            "load_test",
            "-p",
            "duration_s=1",
            "-p",
            "output_len=4",
            "-p",
            "slo_ttft_ms=0.001",
            "-p",
            "parallel=2",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 3, result.stderr
    assert "gate 'slo_attainment' failed" in result.stderr and "completed:" in result.stdout
