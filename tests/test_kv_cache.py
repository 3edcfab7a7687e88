"""The KV-cache calculator against llama.cpp's own allocation, and prompt caching on llama-server."""

import pytest

from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.errors import SpecError
from llmops_lib.models import inspect_gguf
from llmops_lib.optimize import kv_cache_bytes
from llmops_lib.optimize.kv_cache import (
    PREFIX_QUESTIONS,
    SHARED_PREFIX,
    kv_cache_for,
    kv_cache_size,
    logged_kv_cache_bytes,
    sliding_window,
)

MIB = 2**20


@pytest.fixture(scope="module")
def info(model_path):
    return inspect_gguf(model_path)


def test_gemma3_sliding_window_comes_from_the_gguf(info):
    assert info.architecture == "gemma3" and sliding_window(info.path) == 512


def test_full_bound_is_unchanged_and_sliding_window_layers_keep_only_their_window(info):
    assert kv_cache_bytes(info, 32768) == 576 * MIB  # 18 layers x 32768 tokens x 256 x (K + V) x 2 bytes
    size = kv_cache_size(info, 32768)
    assert (size.full_layers, size.swa_layers) == (3, 15)  # every 6th Gemma 3 layer is global
    assert size.swa_cells == 512 + 512  # window + one micro-batch
    assert size.total_bytes == 111 * MIB
    assert kv_cache_size(info, 32768, swa_full=True).total_bytes == kv_cache_bytes(info, 32768)
    assert kv_cache_size(info, 4096, n_seq=3).total_bytes == 3 * kv_cache_size(info, 4096).total_bytes
    assert kv_cache_size(info, 1000).full_cells == 1024  # llama.cpp pads the context to 256 cells


def test_bad_kv_inputs_are_clear_errors(info):
    with pytest.raises(SpecError, match="unknown KV-cache type 'q3'"):
        kv_cache_size(info, 1024, cache_type_v="q3")
    with pytest.raises(SpecError, match="n_ctx must be at least 1"):
        kv_cache_size(info, 0)
    with pytest.raises(SpecError, match="log-verbosity 4"):
        logged_kv_cache_bytes("no kv lines here")


@pytest.mark.engine
@pytest.mark.parametrize("n_ctx", [1024, 4096])
@pytest.mark.parametrize("cache_type", ["f16", "q8_0"])
def test_calculator_matches_llama_cpp_reported_kv_buffer(model_path, n_ctx, cache_type):
    spec = EngineSpec(
        model=model_path,
        n_ctx=n_ctx,
        threads=1,
        cache_type_k=cache_type,
        cache_type_v=cache_type,
        flash_attn=cache_type != "f16",
        extra_args=("--log-verbosity", "4"),
    )
    with LlamaServer(spec) as server:
        logged = logged_kv_cache_bytes(server.log_path.read_text())
    # llama.cpp logs two caches (global and sliding-window layers) in MiB with two decimals
    assert abs(kv_cache_for(spec).total_bytes - logged) <= 2 * 0.005 * MIB


@pytest.mark.engine
def test_repeated_long_prefix_is_served_from_the_prompt_cache(model_path):
    with LlamaServer(EngineSpec(model=model_path, n_ctx=2048, threads=1)) as server:
        first, cold = server.complete_with_timings(SHARED_PREFIX + PREFIX_QUESTIONS[0], max_tokens=1)
        _, warm = server.complete_with_timings(SHARED_PREFIX + PREFIX_QUESTIONS[1], max_tokens=1)
    assert first.prompt_tokens >= 1000 and cold.cache_n == 0
    prefix_tokens = first.prompt_tokens - 20  # the question is a few tokens at the end
    assert warm.cache_n >= prefix_tokens, "the shared prefix came from the cache"
    assert warm.prompt_n < 30, "only the new question was computed"
