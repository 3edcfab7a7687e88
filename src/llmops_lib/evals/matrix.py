"""The quality table across serving choices: every task scored on every way of serving the model.

A quantization, another engine, or the gateway in front of one should not change what the model
answers, or should change it by a measured amount. `quality_table` sends each task's reference
prompt (`Task.reference`, temperature 0, its `max_tokens` and `stop`) to each serving choice and
gives one row per choice × task: the score with its bootstrap interval, the number of cases and the
median latency. Outputs are cached like any `run_cases` run (keyed by what the server says it
serves), so a rebuilt chapter asks no model twice.

Explained in: book/chapters/05_quality/evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from llmops_lib import viz
from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint, OutputCache, run_cases
from llmops_lib.evals.tasks import load_task


@dataclass(frozen=True)
class Serving:
    """Where one serving choice answers: an OpenAI-compatible base URL and the model name to ask for
    (a gateway's route name; an engine serving one model accepts any)."""

    base_url: str
    model: str = "default"


def quality_table(
    endpoints: Mapping[str, str | Serving],
    tasks: Sequence[str],
    *,
    split: str = "test",
    limit: int | None = None,
    workers: int = 1,
    cache: bool | OutputCache = True,
) -> list[dict[str, Any]]:
    """Score each task on each serving choice; one row per choice × task, choices in the given order.

    Args:
        endpoints: serving-choice name → its base URL (model "default") or a `Serving`.
        tasks: task names (`evals.tasks.TASKS`).
        limit: the first `limit` cases of the split only (a quick look; the book uses the whole split).
        workers: requests in flight at once; above 1 the latencies include queueing in the server.
        cache: as in `run_cases` (False: ask every server again).

    Returns:
        rows `{serving, task, score, ci_low, ci_high, n, median_latency_s}`.
    """
    if not endpoints:
        raise SpecError("no serving choices to compare: give at least one name → base URL")
    if not tasks:
        raise SpecError("no tasks to score: name at least one of the shipped tasks")
    if limit is not None and limit < 1:
        raise SpecError(f"limit must be at least 1 case, got {limit}")
    loaded = [load_task(name) for name in tasks]  # an unknown task is refused before any request
    rows = []
    for serving, where in endpoints.items():
        target = Serving(where) if isinstance(where, str) else where
        for task in loaded:
            cases = task.split(split)[:limit]
            reference = task.reference
            with Endpoint(target.base_url, target.model, reference.max_tokens, 0.0, reference.stop) as endpoint:
                run = run_cases(task, cases, task.render, endpoint.complete, cache=cache, workers=workers)
            interval = run.interval()
            rows.append(
                {
                    "serving": serving,
                    "task": task.name,
                    "score": run.accuracy,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "n": len(run.rows),
                    "median_latency_s": run.cost()["median_latency_s"],
                }
            )
    return rows


def quality_figure(rows: Sequence[Mapping[str, Any]], *, title: str = "Score by serving choice") -> go.Figure:
    """Grouped bars of a `quality_table`: tasks along x, one bar per serving choice, 95 % intervals as error bars."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    choices = list(dict.fromkeys(row["serving"] for row in rows))
    cell = {(row["serving"], row["task"]): row for row in rows}
    series = {c: [cell[c, t]["score"] for t in tasks] for c in choices}
    errors = {c: ([cell[c, t]["ci_low"] for t in tasks], [cell[c, t]["ci_high"] for t in tasks]) for c in choices}
    return viz.bars(tasks, series, errors=errors, title=title, x_title="task", y_title="score (share correct)")
