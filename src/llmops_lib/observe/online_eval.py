"""Online evaluation: score a sample of live traffic for correctness and validity, not only proxies.

The checks in `quality` (empty answer, repetition, perplexity) catch a broken deployment but cannot
say whether an answer is *right*. Live traffic can, where a request's prompt is one whose answer is
known: the reference prompt of a shipped task (`Task.render(case)`, the prompt every harness sends)
reaching production, as a canary probe or a golden request, is scored with the task's own scorer.
A sample of the logged requests (the same `in_sample` decision by request id as the other checks;
the request log must capture text) is matched against that reference set; unmatched requests are
left alone, matched ones become `CheckResult`s named `correct.<task>`, which `quality.check_monitor`
turns into a rolling correctness and `quality.status` into an alert. For routes whose answers must
be JSON, `validity_results` checks them with `quality.ValidJSON` (optionally a JSON schema).

Explained in: book/chapters/05_quality/quality_assurance.ipynb
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import TASKS, Case, Task, load_task
from llmops_lib.observe.quality import CheckResult, ValidJSON, run_checks


def reference_set(tasks: Sequence[str] = TASKS) -> dict[str, tuple[Task, Case]]:
    """Every case of `tasks` by its reference prompt: the prompts whose right answer is known."""
    index = {}
    for name in tasks:
        task = load_task(name)
        index |= {task.render(case): (task, case) for case in task.cases}
    return index


@dataclass(frozen=True)
class Correct:
    """A check that a completion of one case's reference prompt is right, by the task's scorer."""

    task: Task
    case: Case

    @property
    def name(self) -> str:
        return f"correct.{self.task.name}"

    def __call__(self, prompt: str, completion: str) -> tuple[bool, float]:
        value = score(self.task, self.case, completion)
        return value == 1.0, value


def correctness_results(
    rows: Sequence[Mapping], reference: Mapping[str, tuple[Task, Case]], *, rate: float = 1.0
) -> list[CheckResult]:
    """Score the sampled, answered requests of the log whose prompt is in `reference`; others are ignored.

    Raises:
        SpecError: sampled requests carry no text (the gateway's request log must capture text).
    """
    run_checks(rows, (), rate=rate)  # no check: only refuses a log without text
    results = []
    for row in rows:
        if (matched := reference.get(row.get("prompt") or "")) is not None:
            results += run_checks([row], [Correct(*matched)], rate=rate)
    return results


def validity_results(
    rows: Sequence[Mapping], routes: Mapping[str, dict | None], *, rate: float = 1.0
) -> list[CheckResult]:
    """Check that the sampled answers of the routes that must answer JSON are valid JSON: `routes` maps
    a route (the model name clients ask for, `gen_ai_request_model`) to a JSON schema, or None for any JSON.

    Raises:
        SpecError: sampled requests carry no text (the gateway's request log must capture text).
    """
    results = []
    for route, schema in routes.items():
        on_route = [row for row in rows if row.get("gen_ai_request_model") == route]
        results += run_checks(on_route, [ValidJSON(schema)], rate=rate)
    return results
