"""Token-level agreement of two engines' greedy outputs (bench.engine_compare.greedy_agreement)."""

from __future__ import annotations

import pytest

from llmops_lib.bench.engine_compare import EngineMeasurement, greedy_agreement


def measurement(name: str, texts_by_level: dict[int, list[str | None]]) -> EngineMeasurement:
    levels = tuple({"concurrency": c, "texts": texts} for c, texts in texts_by_level.items())
    return EngineMeasurement(name, 1.0, 1, 1, levels)


def characters(text: str) -> list[int]:  # a tokenizer independent of the code under test
    return [ord(ch) for ch in text]


def test_agreement_counts_tokens_before_the_first_divergence():
    a = measurement("a", {1: ["abcd", "xyz"], 2: ["same", None]})
    b = measurement("b", {1: ["abXd", "xyz!"], 2: ["same", "lost"]})
    found = greedy_agreement(a, b, characters)
    # "abcd"/"abXd": 2 of 4; "xyz"/"xyz!": 3 of 4 (the longer output); "same": 4 of 4; a failed request is skipped
    assert (found.requests, found.identical, found.tokens, found.agreeing) == (3, 1, 12, 9)
    assert found.rate == pytest.approx(0.75)


def test_no_common_request_has_no_rate():
    found = greedy_agreement(measurement("a", {1: [None]}), measurement("b", {1: ["x"]}), characters)
    assert found.requests == 0 and found.rate != found.rate  # nan
