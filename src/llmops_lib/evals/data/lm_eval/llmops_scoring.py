"""lm-eval's `process_results` for the llmops tasks: each generation judged by the library's own scorer.

The task YAMLs beside this file name it (`!function llmops_scoring.process_results`); lm-eval loads it
from this folder inside `.venv-evals`, where `llmops_lib.evals.harness.run_lm_eval` puts the library on
PYTHONPATH (its tasks and scorers need only pydantic and jsonschema). Scoring with our scorer rather than
lm-eval's `exact_match` is what lets lm-eval, Inspect and the built-in runner be compared case by case.

Explained in: book/chapters/05_quality/evaluation.
"""

from __future__ import annotations

from functools import cache

from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import Case, Task, load_task


@cache
def _cases(task: str) -> tuple[Task, dict[str, Case]]:
    loaded = load_task(task)
    return loaded, {case.id: case for case in loaded.cases}


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """The score of one document's generation (`doc` is a row `run_lm_eval` wrote: its task and case id)."""
    task, cases = _cases(doc["task"])
    return {"score": score(task, cases[doc["id"]], results[0])}
