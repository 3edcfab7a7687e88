"""Prompt optimization: the candidate and demo construction on literal data, and the search on the real
Gemma engine with a tiny budget: it chooses on dev only (the test split reaches the scorer in the final
two runs and nowhere else, and another test split leaves the choice unchanged), and the winner is
registered with its scores and the `candidate` alias."""

from __future__ import annotations

import dataclasses

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint, OutputCache
from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import Task, load_task
from llmops_lib.prompts.optimize import Candidate, Demo, candidates, demo_sets, optimize
from llmops_lib.prompts.registry import PromptRegistry

CAPITALS = [("France", "Paris"), ("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi")]
POOL = tuple(Demo(f"c{i}", {"country": country}, capital) for i, (country, capital) in enumerate(CAPITALS))
QUESTION = "Q: What is the capital of {{country}}?\nA:"


def test_text_template_puts_instruction_demos_then_question():
    candidate = Candidate("Answer with the city only.", (POOL[0], POOL[1]))
    assert candidate.template(QUESTION, chat=False) == (
        "Answer with the city only.\n\n"
        "Q: What is the capital of France?\nA: Paris\n\n"
        "Q: What is the capital of Peru?\nA: Lima\n\n"
        "Q: What is the capital of {{country}}?\nA:"
    )
    assert Candidate("", ()).template(QUESTION, chat=False) == QUESTION


def test_chat_template_has_system_then_demo_turns_then_question():
    assert Candidate("Be brief.", (POOL[2],)).template("Capital of {{country}}?", chat=True) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of Japan?"},
        {"role": "assistant", "content": "Tokyo"},
        {"role": "user", "content": "Capital of {{country}}?"},
    ]
    assert Candidate("", ()).template("Capital of {{country}}?", chat=True) == [
        {"role": "user", "content": "Capital of {{country}}?"}
    ]


def test_demo_sets_are_distinct_seeded_draws_of_each_size():
    sets = demo_sets(POOL, shots=(0, 2, 9), sets_per_size=3, seed=1)
    assert sets[0] == ()
    pairs = sets[1:]
    assert len(pairs) == 3 and len(set(pairs)) == 3  # 9 > pool: skipped
    assert all(len(s) == 2 and set(s) <= set(POOL) for s in pairs)
    assert all(list(s) == sorted(s, key=lambda d: d.case_id) for s in pairs)
    assert demo_sets(POOL, shots=(0, 2, 9), sets_per_size=3, seed=1) == sets
    # 4 demos hold only 1 set of 4: asking for 3 gives the 1 there is
    assert demo_sets(POOL, shots=(4,), sets_per_size=3) == [POOL]
    with pytest.raises(SpecError, match="shots must be"):
        demo_sets(POOL, shots=(-1,), sets_per_size=1)


def test_candidates_are_the_grid_or_a_seeded_sample_of_it_in_grid_order():
    sets = [(), (POOL[0],), (POOL[1], POOL[2])]
    grid = candidates(["", "Be brief."], sets, max_candidates=10)
    expected = [("", 0), ("", 1), ("", 2), ("Be brief.", 0), ("Be brief.", 1), ("Be brief.", 2)]
    assert [(c.instruction, len(c.demos)) for c in grid] == expected
    sample = candidates(["", "Be brief."], sets, max_candidates=4, seed=3)
    assert len(sample) == 4 and len(set(sample)) == 4
    assert [grid.index(c) for c in sample] == sorted(grid.index(c) for c in sample)
    with pytest.raises(SpecError, match="max_candidates"):
        candidates(["x"], sets, max_candidates=0)


def _small_capitals(test_offset: int) -> Task:
    """The shipped capitals set cut down to a tiny budget: 8 train, 6 dev, 6 test (from `test_offset`)."""
    task = load_task("capitals")
    cases = task.split("train")[:8] + task.split("dev")[:6] + task.split("test")[test_offset : test_offset + 6]
    return dataclasses.replace(task, cases=tuple(cases))


def test_search_on_gemma_chooses_on_dev_only_and_registers_the_winner(server, tmp_path):
    registry = PromptRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    cache = OutputCache(tmp_path / "outputs.sqlite")
    task = _small_capitals(0)
    search = dict(
        question=QUESTION,
        instructions=("", "Answer with the city only."),
        shots=(0, 2),
        sets_per_size=1,
        max_candidates=3,
        teacher_shots=2,
        cache=cache,
        progress=False,
    )
    with Endpoint(server.base_url, max_tokens=8, stop=["\n"]) as endpoint:
        result = optimize(task, endpoint, registry=registry, register_as="capital-opt", **search)
        other = optimize(_small_capitals(6), endpoint, **search)

    test_ids = {case.id for case in task.split("test")}
    dev_ids = [case.id for case in task.split("dev")]
    *searching, final_baseline, final_winner = result.runs
    for record in searching:  # the test split never reached the scorer while searching
        assert record.split in ("train", "dev")
        assert not {row.case_id for row in record.run.rows} & test_ids
    assert [r.split for r in (final_baseline, final_winner)] == ["test", "test"]
    assert [row.case_id for row in final_winner.run.rows] == [case.id for case in task.split("test")]
    assert len(result.scored) == 3
    for scored in result.scored:
        assert [row.case_id for row in scored.dev.rows] == dev_ids

    # The winner has the best dev accuracy (rescored here by the task's scorer from the dev outputs).
    cases = {case.id: case for case in task.cases}

    def dev_accuracy(scored) -> float:
        return sum(score(task, cases[row.case_id], row.output) for row in scored.dev.rows) / len(dev_ids)

    assert dev_accuracy(result.winner) == max(dev_accuracy(s) for s in result.scored)
    # Another test split changes the report, never the choice.
    assert other.winner.template == result.winner.template

    version = result.registered
    assert version is not None and version.template == result.winner.template
    loaded = registry.load("capital-opt@candidate")
    assert loaded.version == version.version and loaded.template == result.winner.template
    winner_test = sum(row.score for row in final_winner.run.rows) / 6
    assert float(loaded.tags["test_accuracy"]) == pytest.approx(winner_test, abs=1e-4)
    assert float(loaded.tags["dev_accuracy"]) == pytest.approx(dev_accuracy(result.winner), abs=1e-4)
    assert "McNemar p=" in loaded.commit_message and "test_mcnemar_p" in loaded.tags
    assert loaded.model_config == {"temperature": 0.0, "max_tokens": 8, "stop": ["\n"]}


def test_register_needs_a_name_and_a_registry(tmp_path):
    with pytest.raises(SpecError, match="registry and register_as"):
        optimize(load_task("capitals"), Endpoint("http://127.0.0.1:9"), question=QUESTION, register_as="x")
