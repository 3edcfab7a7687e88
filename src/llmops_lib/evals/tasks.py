"""The shipped task sets: cases with inputs, an expectation and a fixed split, and how each task is scored.

The cases are generated in the repository by `scripts/make_eval_sets.py` (seeded, nothing downloaded)
and shipped as package data (`evals/data/<task>.jsonl`). Each case belongs to one split for good:
prompts are tuned on `train` (demonstrations) and `dev` (selection) and reported once on `test`.
`TASK_INFO` is the one place that says what a task asks and which scorer judges it.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from llmops_lib.errors import SpecError

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")

#: JSON schema of the extraction task's answer (also its scorer's argument).
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}},
    "required": ["name", "age", "city"],
}


@dataclass(frozen=True)
class TaskInfo:
    """What a task asks, the scorer that judges an output, and (for classification) its label options."""

    description: str
    scorer: str
    scorer_args: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()


TASK_INFO: dict[str, TaskInfo] = {
    "capitals": TaskInfo("country → its capital city", "contains"),
    "arithmetic": TaskInfo("one-step word problem → its integer answer", "numeric", {"tolerance": 0.0}),
    "sentiment": TaskInfo("short product review → positive or negative", "exact", labels=("positive", "negative")),
    "extraction": TaskInfo(
        "sentence about a person → JSON with name, age, city", "json_schema", {"schema": PERSON_SCHEMA}
    ),
}
TASKS: tuple[str, ...] = tuple(TASK_INFO)


class Case(BaseModel):
    """One item of a task set: the template variables (`inputs`), the expected answer, its split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    inputs: dict[str, str]
    expected: str | int | float | dict[str, Any]
    split: Split


@dataclass(frozen=True)
class Task:
    """A named set of cases and how its outputs are scored (see `scorers.score`)."""

    name: str
    description: str
    scorer: str
    scorer_args: dict[str, Any]
    cases: tuple[Case, ...]
    labels: tuple[str, ...] = ()

    def split(self, name: str) -> list[Case]:
        """The cases of one split, in file order."""
        if name not in SPLITS:
            raise SpecError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)}")
        return [case for case in self.cases if case.split == name]


def parse_cases(text: str, source: str) -> tuple[Case, ...]:
    """Cases from JSONL text; a bad line is refused with its line number."""
    cases = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cases.append(Case.model_validate(json.loads(line)))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise SpecError(f"{source} line {number} is not a valid case: {where}: {error['msg']}") from exc
        except ValueError as exc:  # not JSON at all
            raise SpecError(f"{source} line {number} is not JSON: {exc}") from exc
    return tuple(cases)


@cache
def load_task(name: str) -> Task:
    """A shipped task by name (`TASKS`), read once per process."""
    if name not in TASK_INFO:
        raise SpecError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    info = TASK_INFO[name]
    data = resources.files("llmops_lib.evals") / "data" / f"{name}.jsonl"
    cases = parse_cases(data.read_text(encoding="utf-8"), f"evals/data/{name}.jsonl")
    return Task(name, info.description, info.scorer, info.scorer_args, cases, info.labels)
