"""Inspect AI task over an llmops task: the reference prompt of each case, judged by the library's scorer.

    inspect eval inspect_tasks.py@llmops -T task=capitals -T cases=CASES.jsonl \
        --model openai-api-completions/llmops/MODEL --model-base-url URL/v1

`cases` is the JSONL `llmops_lib.evals.harness` writes for lm-eval too (one row per case of the chosen
split: its id, task and inputs), so both harnesses read the same file; the prompt is `Task.render(case)`
and generation uses the task's `Reference` (temperature 0, max tokens, stop sequences), as every harness
does. Runs inside `.venv-evals` with the library on PYTHONPATH (tasks and scorers need only pydantic
and jsonschema).

Explained in: book/chapters/05_quality/evaluation.
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import Sample, json_dataset
from inspect_ai.model import GenerateConfig
from inspect_ai.scorer import Score, Scorer, Target, accuracy, scorer, stderr
from inspect_ai.solver import TaskState, generate

from llmops_lib.evals import scorers, tasks


@scorer(metrics=[accuracy(), stderr()])
def llmops_scorer(name: str) -> Scorer:
    """The task's own scorer (`llmops_lib.evals.scorers.score`) on the completion: 1.0 or 0.0."""
    loaded = tasks.load_task(name)
    cases = {case.id: case for case in loaded.cases}

    async def judge(state: TaskState, target: Target) -> Score:
        output = state.output.completion
        return Score(value=scorers.score(loaded, cases[str(state.sample_id)], output), answer=output)

    return judge


@task
def llmops(task: str, cases: str) -> Task:
    """The cases in `cases` (a JSONL path) of llmops task `task`, with its reference prompt."""
    loaded = tasks.load_task(task)
    by_id = {case.id: case for case in loaded.cases}

    def to_sample(row: dict) -> Sample:
        case = by_id[row["id"]]
        return Sample(id=case.id, input=loaded.render(case), target=row["target"])

    reference = loaded.reference
    return Task(
        dataset=json_dataset(cases, to_sample),
        solver=generate(),
        scorer=llmops_scorer(task),
        config=GenerateConfig(temperature=0, max_tokens=reference.max_tokens, stop_seqs=list(reference.stop)),
    )
