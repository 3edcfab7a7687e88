"""Engine metrics under common names: parsing, the mapping of each engine, and a real llama-server."""

from __future__ import annotations

import httpx
import pytest

from llmops_lib.engines.metrics import COMMON_NAMES, common_samples, engine_of, parse_metrics
from llmops_lib.errors import EngineError

VLLM_TEXT = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="gemma"} 2.0
vllm:generation_tokens_total{engine="0",model_name="gemma"} 120.0
vllm:generation_tokens_total{engine="1",model_name="gemma"} 30.0
vllm:prefix_cache_hits_total{engine="0",model_name="gemma"} 1344.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="gemma"} 0.75 1700000000000
"""
LLAMA_TEXT = """# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 42
llamacpp:requests_processing 1
"""
GATEWAY_TEXT = """llmops_gateway_tokens_total{model="m",deployment="a",direction="in"} 7.0
llmops_gateway_tokens_total{model="m",deployment="a",direction="out"} 5.0
"""


def test_parse_keeps_labels_skips_comments_and_reads_timestamped_samples():
    samples = parse_metrics(VLLM_TEXT + 'path_hits{path="a\\"b"} 3\n')
    assert samples['vllm:num_requests_running{engine="0",model_name="gemma"}'] == 2.0
    assert samples['vllm:time_to_first_token_seconds_sum{engine="0",model_name="gemma"}'] == 0.75
    assert samples['path_hits{path="a\\"b"}'] == 3.0, "an escaped quote in a label value stays escaped"
    assert len(samples) == 6 and not any(name.startswith("#") for name in samples)


@pytest.mark.parametrize("line", ["garbage line here", 'bad{x="1"} notanumber', 'unclosed{x="1" 2'])
def test_a_malformed_exposition_is_refused_whole(line):
    with pytest.raises(EngineError, match="not a Prometheus text exposition"):
        parse_metrics(VLLM_TEXT + line + "\n")
    with pytest.raises(EngineError, match="not a Prometheus text exposition"):
        common_samples(line + "\n")


@pytest.mark.parametrize(
    "text, engine, expected",
    [
        (
            VLLM_TEXT,
            "vllm",
            {
                "requests_running": 2.0,
                "generation_tokens_total": 150.0,
                "prefix_cache_hits_total": 1344.0,
                "ttft_seconds_sum": 0.75,
            },
        ),
        (LLAMA_TEXT, "llamacpp", {"generation_tokens_total": 42.0, "requests_running": 1.0}),
        (GATEWAY_TEXT, "gateway", {"prompt_tokens_total": 7.0, "generation_tokens_total": 5.0}),
    ],
)
def test_each_engine_reads_the_same_under_common_names(text, engine, expected):
    assert engine_of(text) == engine
    assert common_samples(text) == expected, "summed over labels, label filters applied, absent names absent"


@pytest.mark.parametrize(
    "common, series", [(common, series) for common, group in COMMON_NAMES.items() for series in group]
)
def test_every_listed_series_is_read_under_its_common_name(common, series):
    """Each series of the mapping, alone in an exposition (its label filter as the sample's labels),
    reads as its common name and no other; that the engines really export these names is checked
    against real servers (below and in tests/test_vllm.py)."""
    assert common_samples(f"{series} 3\n") == {common: 3.0}
    name, label_filter, _ = series.partition("{")
    if label_filter:
        assert common_samples(f'{name}{{other="x"}} 3\n') == {}, "a sample without the filter's label is not read"


def test_text_of_no_engine_has_no_engine():
    assert engine_of("# nothing\n") is None


@pytest.mark.engine
def test_real_llama_server_reports_common_names(server):
    server.client.complete("The sky is", max_tokens=4)
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    samples = common_samples(text)
    assert engine_of(text) == "llamacpp"
    assert samples["generation_tokens_total"] >= 4 and samples["prompt_tokens_total"] > 0
    assert {"requests_running", "requests_waiting", "generation_seconds_total"} <= set(samples)
