"""Evaluation sets, scorers and A/B statistics (no engine): statistics checked against scipy and
published values, scorers on literal outputs, the shipped data against its generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from llmops_lib.errors import SpecError
from llmops_lib.evals import scorers
from llmops_lib.evals.run import Endpoint, Generation, OutputCache
from llmops_lib.evals.stats import (
    discordant_pairs,
    fisher_exact,
    mcnemar_exact,
    paired_bootstrap,
    proportion_interval,
    sample_size,
    srm_p,
    two_proportions,
)
from llmops_lib.evals.tasks import SPLITS, TASKS, Case, Reference, Task, load_task, parse_cases

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "llmops_lib" / "evals" / "data"


# --- statistics ---------------------------------------------------------------------------------------------


def test_mcnemar_matches_a_published_value_and_the_exact_binomial_test():
    assert mcnemar_exact(10, 2) == pytest.approx(0.0386, abs=5e-5)  # 2 · P(X ≤ 2), X ~ Bin(12, ½)
    for b, c in [(0, 5), (3, 3), (45, 0), (7, 19), (120, 95)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    assert mcnemar_exact(0, 0) == 1.0  # the versions agree on every case: no evidence of a difference


def test_fisher_exact_matches_scipy_two_sided():
    for table in [(8, 2, 1, 5), (3, 1, 1, 3), (0, 10, 10, 0), (12, 38, 20, 30), (5, 0, 0, 0), (1, 9, 11, 3)]:
        a, b, c, d = table
        assert fisher_exact(*table) == pytest.approx(stats.fisher_exact([[a, b], [c, d]]).pvalue, rel=1e-9), table


def test_two_proportions_matches_newcombe_and_the_chi_square_test():
    # Newcombe (1998), Stat. Med. 17:873, example (a): 56/70 vs 48/80, method 10 → 0.0524 to 0.3339
    result = two_proportions(48, 80, 56, 70)
    assert result.diff == pytest.approx(0.2)
    assert (round(result.low, 4), round(result.high, 4)) == (0.0524, 0.3339)
    # the pooled z test is the 2×2 chi-square test without continuity correction
    for x1, n1, x2, n2 in [(48, 80, 56, 70), (5, 58, 50, 58), (30, 60, 31, 60)]:
        table = [[x1, n1 - x1], [x2, n2 - x2]]
        expected = stats.chi2_contingency(table, correction=False).pvalue
        assert two_proportions(x1, n1, x2, n2).p == pytest.approx(expected, rel=1e-9)
    same = two_proportions(0, 10, 0, 12)
    assert same.p == 1.0 and same.diff == 0.0


def test_srm_matches_scipy_chisquare_for_two_and_more_arms():
    for counts, weights in [([5000, 5200], [50, 50]), ([480, 520], [1, 1]), ([900, 80, 20], [90, 8, 2])]:
        total = sum(counts)
        expected = [total * w / sum(weights) for w in weights]
        assert srm_p(counts, weights) == pytest.approx(stats.chisquare(counts, expected).pvalue, rel=1e-9)
    for arms in range(2, 8):
        counts = list(range(40, 40 + 7 * arms, 7))
        assert srm_p(counts, [1] * arms) == pytest.approx(stats.chisquare(counts).pvalue, rel=1e-9)
    assert srm_p([50, 50], [1, 1]) == 1.0


def test_sample_size_matches_the_textbook_formula():
    # Fleiss eq. 4.14 without continuity correction: 10 % → 15 % at α = 0.05, power 0.8 needs 686 per arm
    assert sample_size(0.10, 0.05) == 686
    assert sample_size(0.50, 0.10) == 388
    z_a, z_b = stats.norm.ppf(0.995), stats.norm.ppf(0.9)
    p1, p2 = 0.3, 0.2
    n = (z_a * np.sqrt(2 * 0.25 * 0.75) + z_b * np.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / 0.01
    assert sample_size(0.3, -0.1, alpha=0.01, power=0.9) == int(np.ceil(n))


def test_paired_bootstrap_measures_the_mean_difference_on_pairs():
    a = [0.0] * 30 + [1.0] * 30
    b = [1.0] * 60
    interval = paired_bootstrap(a, b)
    assert interval.estimate == 0.5 and interval.contains(0.5) and not interval.contains(0.0)
    same = paired_bootstrap(b, b)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_discordant_pairs_count_the_cases_only_one_version_got_right():
    assert discordant_pairs([1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 0, 0]) == (2, 2)
    assert discordant_pairs([0.0] * 5, [1.0] * 5) == (0, 5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: mcnemar_exact(-1, 3),
        lambda: mcnemar_exact(2.5, 3),
        lambda: fisher_exact(0, 0, 0, 0),
        lambda: fisher_exact(1, -2, 3, 4),
        lambda: two_proportions(1, 0, 1, 10),
        lambda: two_proportions(11, 10, 1, 10),
        lambda: two_proportions(1, 10, 1, 10, confidence=1.5),
        lambda: srm_p([0, 0], [1, 1]),
        lambda: srm_p([10, 10], [1, 0]),
        lambda: srm_p([10], [1]),
        lambda: srm_p([10, 10, 10], [1, 1]),
        lambda: sample_size(0.9, 0.2),
        lambda: sample_size(0.5, 0.0),
        lambda: sample_size(0.5, 0.1, power=1.0),
        lambda: paired_bootstrap([1.0, 0.0], [1.0]),
        lambda: discordant_pairs([1.0, 0.0], [1.0]),
        lambda: Endpoint("http://127.0.0.1:9", max_tokens=0),
    ],
)
def test_statistics_refuse_bad_input(call):
    with pytest.raises(SpecError):
        call()


# --- scorers ------------------------------------------------------------------------------------------------


def task_of(scorer: str, **args) -> Task:
    return Task("t", "test", scorer, args, (), Reference("{{x}}", max_tokens=1))


def case_of(expected) -> Case:
    return Case(id="c", inputs={}, expected=expected, split="test")


@pytest.mark.parametrize(
    ("scorer", "args", "expected", "output", "value"),
    [
        ("exact", {}, "Bogotá", " bogota.\n", 1.0),
        ("exact", {}, "positive", '"Positive!"', 1.0),
        ("exact", {}, "Paris", "Paris is the capital", 0.0),
        ("contains", {}, "Paris", "The capital is Paris.", 1.0),
        ("contains", {}, "Rome", "Romeo", 0.0),
        ("contains", {}, "San José", "It is san jose, I think", 1.0),
        ("regex", {}, r"^\s*(yes|no)\b", " yes, of course", 1.0),
        ("regex", {"pattern": r"\d{4}"}, "ignored", "in 199", 0.0),
        ("numeric", {"tolerance": 0.0}, 16, "The answer is 16 apples (not 17).", 1.0),
        ("numeric", {"tolerance": 0.0}, 16, "17, not 16", 0.0),
        ("numeric", {"tolerance": 0.0}, 1200, "1,200", 1.0),
        ("numeric", {"tolerance": 0.5}, -3, "x = -3.4", 1.0),
        ("numeric", {"tolerance": 0.0}, 3, "three", 0.0),
    ],
)
def test_text_scorers(scorer, args, expected, output, value):
    assert scorers.score(task_of(scorer, **args), case_of(expected), output) == value


def test_json_schema_scorer_validates_the_first_object_and_compares_fields():
    task = load_task("extraction")
    case = case_of({"name": "Lena", "age": 48, "city": "Dublin"})
    assert scorers.score(task, case, 'Sure! ```json\n{"name": "Lena", "age": 48, "city": "dublin"}\n``` {"x": 1}') == 1
    assert scorers.score(task, case, '{"name": "Lena", "age": "48", "city": "Dublin"}') == 0  # schema: integer
    assert scorers.score(task, case, '{"name": "Lena", "age": 47, "city": "Dublin"}') == 0  # a wrong field
    assert scorers.score(task, case, '{"name": "Lena", "age": 48}') == 0  # schema: city required
    assert scorers.score(task, case, "name: Lena, age: 48") == 0  # no JSON at all
    assert scorers.first_json_object('[1, 2] then {"a": {"b": 2}} and {"c": 3}') == {"a": {"b": 2}}


def test_unknown_scorer_and_bad_pattern_are_refused():
    with pytest.raises(SpecError, match="unknown scorer"):
        scorers.score(task_of("bleu"), case_of("x"), "x")
    with pytest.raises(SpecError, match="not a valid pattern"):
        scorers.score(task_of("regex"), case_of("(unclosed"), "x")


# --- the shipped task sets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_shipped_sets_have_disjoint_splits_and_unique_inputs(name):
    task = load_task(name)
    assert len(task.cases) >= 100
    ids = [case.id for case in task.cases]
    inputs = [tuple(sorted(case.inputs.items())) for case in task.cases]
    assert len(set(ids)) == len(ids) and len(set(inputs)) == len(inputs)
    sizes = {split: len(task.split(split)) for split in SPLITS}
    assert sum(sizes.values()) == len(task.cases)  # every case in exactly one split
    assert sizes["train"] == sizes["dev"] == round(0.3 * len(task.cases))
    # every case is answered right by the task's own scorer when the output is the expectation itself
    for case in task.cases:
        answer = case.expected if isinstance(case.expected, str | int) else json.dumps(case.expected)
        assert scorers.score(task, case, str(answer)) == 1.0, case.id


def test_sentiment_labels_are_balanced_and_every_set_has_the_documented_size():
    labels = [case.expected for case in load_task("sentiment").cases]
    assert labels.count("positive") == labels.count("negative") == 60
    assert {name: len(load_task(name).cases) for name in TASKS} == {
        "capitals": 146,
        "arithmetic": 120,
        "sentiment": 120,
        "extraction": 100,
    }


def test_the_generator_reproduces_the_committed_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_eval_sets.py"), "--out", str(tmp_path)], check=True)
    for name in TASKS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DATA / f"{name}.jsonl").read_bytes(), name
        yaml = f"lm_eval/llmops_{name}.yaml"
        assert (tmp_path / yaml).read_bytes() == (DATA / yaml).read_bytes(), yaml


def test_unknown_task_split_and_bad_lines_are_refused():
    with pytest.raises(SpecError, match="unknown task"):
        load_task("trivia")
    with pytest.raises(SpecError, match="unknown split"):
        load_task("capitals").split("validation")
    with pytest.raises(SpecError, match="line 2 is not a valid case: split"):
        parse_cases('{"id": "a", "inputs": {}, "expected": "x", "split": "dev"}\n'
                    '{"id": "b", "inputs": {}, "expected": "x", "split": "holdout"}', "f.jsonl")  # fmt: skip
    with pytest.raises(SpecError, match="line 1 is not JSON"):
        parse_cases("{oops", "f.jsonl")


def test_output_cache_keys_on_identity_and_prompt(tmp_path):
    cache = OutputCache(tmp_path / "evals" / "cache.sqlite")
    identity = {"served": [{"id": "m.gguf"}], "call": "complete", "max_tokens": 8}
    cache.put(OutputCache.key(identity, "Q: France?\nA:"), Generation(" Paris", 7, 2, 0.25))
    assert OutputCache(cache.path).get(OutputCache.key(identity, "Q: France?\nA:")) == (" Paris", 7, 2, 0.25)
    assert cache.get(OutputCache.key(identity, "Q: Spain?\nA:")) is None
    assert cache.get(OutputCache.key({**identity, "max_tokens": 9}, "Q: France?\nA:")) is None
    messages = [{"role": "user", "content": "Q: France?\nA:"}]
    assert OutputCache.key(identity, messages) != OutputCache.key(identity, "Q: France?\nA:")


@pytest.mark.parametrize(
    "successes, n, low, high",
    # Wilson score intervals at 95 %: Newcombe (1998), Table I (81/263), and the textbook 0/10 and 8/10 cases
    [(0, 10, 0.0, 0.2775), (8, 10, 0.4902, 0.9433), (81, 263, 0.2553, 0.3662)],
)
def test_proportion_interval_is_wilsons(successes, n, low, high):
    interval = proportion_interval(successes, n)
    assert interval.estimate == successes / n
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


def test_proportion_interval_refuses_impossible_counts():
    with pytest.raises(SpecError, match="trials > 0"):
        proportion_interval(3, 2)
