"""Where two outputs part, and the plain model's top-2 logit margin there (optimize.divergence)."""

from __future__ import annotations

import pytest

from llmops_lib.engines import EngineSpec
from llmops_lib.optimize.divergence import first_divergence

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def plain_spec(model_path) -> EngineSpec:
    return EngineSpec(model=model_path, n_ctx=256, threads=1)


def test_the_same_text_does_not_diverge(plain_spec):
    assert first_divergence(plain_spec, PROMPT, " Paris, a city", " Paris, a city") is None


def test_divergence_is_found_at_the_first_different_token_with_a_margin_per_position(plain_spec):
    found = first_divergence(plain_spec, PROMPT, " Paris, a city of light", " Paris, a town of light")
    assert found is not None and found.position >= 2, "' Paris' and ',' agree"
    assert "city" in found.plain_token and "town" in found.other_token
    assert len(found.margins) >= found.position + 1
    assert found.margin == found.margins[found.position] and 0 <= found.rank <= 1


def test_a_prefix_diverges_where_the_shorter_output_ends(plain_spec):
    found = first_divergence(plain_spec, PROMPT, " Paris", " Paris, a city")
    assert found.other_token == "," and found.plain_token == "(end)"
