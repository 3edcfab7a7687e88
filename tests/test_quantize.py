"""Quantization, measured: the math on hand-made numbers, then llama.cpp's quantizer on the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmops_lib.errors import ModelError, SpecError
from llmops_lib.optimize.perplexity import eval_text, kl_divergence, log_softmax, perplexity, scored_windows, top_k
from llmops_lib.optimize.quantize import (
    Quantizer,
    QuantSettings,
    Variant,
    cache_key,
    parse_variants,
    quantize,
)

SHORT_TEXT = " ".join(eval_text().split()[:150])  # ~180 tokens: two windows of 64 at test settings
TEST_SETTINGS = QuantSettings(n_ctx=64, threads=1, prompt_chars=200, generate_tokens=8)


# --- pure logic ---------------------------------------------------------------------------------


def test_cache_key_changes_when_any_input_changes():
    base = dict(source="a" * 64, variant="Q4_0", text="t" * 64, settings={"n_ctx": 512})
    key = cache_key(**base)
    assert key == cache_key(**dict(reversed(base.items()))), "the key does not depend on argument order"
    for name, other in [("source", "b" * 64), ("variant", "Q8_0"), ("text", "u" * 64), ("settings", {"n_ctx": 256})]:
        assert cache_key(**base | {name: other}) != key, name


def test_perplexity_of_hand_made_logits_matches_a_direct_computation():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    targets = [0, 2, 1]
    direct = []
    for row, target in zip(logits.tolist(), targets, strict=True):
        direct.append(math.log(math.exp(row[target]) / sum(math.exp(v) for v in row)))
    logprobs = log_softmax(logits)[np.arange(3), targets]
    np.testing.assert_allclose(logprobs, direct, rtol=1e-6)
    assert perplexity(logprobs) == pytest.approx(math.exp(-sum(direct) / 3), rel=1e-6)
    assert perplexity(np.log(np.full(5, 0.25))) == pytest.approx(4.0), "uniform over 4 tokens: perplexity 4"


def test_kl_of_identical_distributions_is_zero_and_grows_with_a_difference():
    rng = np.random.default_rng(0)
    reference = log_softmax(rng.normal(size=(6, 200)))
    ids, values = top_k(reference, 8)
    assert np.all(np.diff(values, axis=1) <= 0), "top-k is sorted, most likely first"
    np.testing.assert_allclose(kl_divergence(ids, values, reference), 0.0, atol=1e-9)
    other = log_softmax(np.log(np.exp(reference) + 0.01))
    kl = kl_divergence(ids, values, other)
    full = (np.exp(reference) * (reference - other)).sum(axis=1)
    assert np.all(kl > 0) and np.all(kl <= full + 1e-9), "top-k plus one bucket: positive, at most the full KL"


def test_unknown_types_and_short_texts_are_refused_clearly():
    with pytest.raises(SpecError, match="unknown quantization type 'Q7_X'; use one of Q8_0, Q6_K, Q5_K_M"):
        Variant.parse("Q7_X")
    with pytest.raises(SpecError, match="token-embedding type 'Q4_K'"):
        Variant.parse("Q4_K_M/embd:Q4_K")
    assert [v.label for v in parse_variants("q8_0, Q4_K_M/embd:q4_0, bf16")] == ["Q8_0", "Q4_K_M/embd:Q4_0", "BF16"]
    with pytest.raises(SpecError, match="fewer than one window"):
        scored_windows(100, 512)


# --- the real model -------------------------------------------------------------------------------


def test_a_non_gguf_source_is_a_model_error(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    with pytest.raises(ModelError, match="not a GGUF file"):
        Quantizer(fake)


@pytest.fixture(scope="module")
def quantizer(model_path, tmp_path_factory) -> Quantizer:
    """The real model, a short text and a fresh cache, so the first measurement really computes."""
    return Quantizer(model_path, text=SHORT_TEXT, quant_settings=TEST_SETTINGS, cache=tmp_path_factory.mktemp("cache"))


@pytest.mark.engine
def test_quantized_models_load_generate_and_lose_quality_in_order(quantizer):
    reference, q8, q4 = quantizer.compare(["Q8_0", "Q4_0"], progress=False)
    assert reference.variant == "F16" and reference.delta_ppl == 0 and reference.kl_divergence == 0
    for result in (reference, q8, q4):
        assert math.isfinite(result.perplexity) and result.perplexity > 1
        assert result.generation_tokens_per_s > 0, f"{result.variant} loaded and generated"
        assert result.scored_tokens == 2 * 31  # two windows of 64; positions 32…62 predict the next token
    assert q4.file_bytes < q8.file_bytes < reference.file_bytes
    # Q4_0 loses far more than Q8_0 on this model (measured: KL ~100×); noise cannot flip that.
    assert abs(q8.delta_ppl) < q4.delta_ppl and q8.kl_divergence < q4.kl_divergence / 5


@pytest.mark.engine
def test_a_second_measurement_comes_from_the_cache(quantizer):
    first = quantizer.measure("Q8_0")
    again = quantizer.measure("Q8_0")
    assert again.cached and again.perplexity == first.perplexity and again.sha256 == first.sha256
    other_text = Quantizer(
        quantizer.source,
        text=SHORT_TEXT + " And one more sentence.",
        quant_settings=TEST_SETTINGS,
        cache=quantizer.cache,
    )
    measured = other_text.measure("Q8_0")
    assert not measured.cached, "another text is another cache key: measured anew"


@pytest.mark.engine
def test_the_token_embedding_type_can_be_set(quantizer):
    from llmops_lib.models import inspect_gguf

    path = quantize(quantizer.reference_path(), Variant.parse("Q4_K_M/embd:Q4_0"))
    assert inspect_gguf(path).tensor_types["token_embd"] == "Q4_0"


@pytest.mark.engine
def test_a_full_disk_leaves_no_partial_quantized_file(small_disk, quantizer, monkeypatch):
    disk = small_disk(40)
    reference = quantizer.reference_path()
    monkeypatch.setenv("LLMOPS_HOME", str(disk))
    with pytest.raises(ModelError, match="no space left .* free space or point LLMOPS_HOME elsewhere"):
        quantize(reference, Variant("Q4_0"), threads=1)
    assert list((disk / "models" / "quantized").iterdir()) == [], "no partial file left behind"
