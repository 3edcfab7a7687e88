"""The shipped task sets: cases with inputs, an expectation and a fixed split, and how each task is scored.

The cases are generated in the repository by `scripts/make_eval_sets.py` (seeded, nothing downloaded)
and shipped as package data (`evals/data/<task>.jsonl`). Each case belongs to one split for good:
prompts are tuned on `train` (demonstrations) and `dev` (selection) and reported once on `test`.
`TASK_INFO` is the one place that says what a task asks and which scorer judges it.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import json
import re
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
class Reference:
    """The task's reference prompt for a base model: a few-shot text template and how to generate.

    The one prompt every harness sends for the task (the built-in runner, lm-eval's task YAML, Inspect,
    the eval gate, the quality table), so their scores are comparable. Its demonstrations are cases of
    the `train` split, never of `dev` or `test`. Variables are `{{name}}` (Jinja's syntax, which
    lm-eval's YAML uses too).
    """

    template: str
    max_tokens: int
    stop: tuple[str, ...] = ("\n",)


@dataclass(frozen=True)
class TaskInfo:
    """What a task asks, the scorer that judges an output, its reference prompt, and its label options."""

    description: str
    scorer: str
    reference: Reference
    scorer_args: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()


TASK_INFO: dict[str, TaskInfo] = {
    "capitals": TaskInfo(
        "country → its capital city",
        "contains",
        Reference(
            "Q: What is the capital of Albania?\nA: Tirana\nQ: What is the capital of Argentina?\nA: Buenos Aires\n"
            "Q: What is the capital of {{country}}?\nA:",
            max_tokens=8,
        ),
    ),
    "arithmetic": TaskInfo(
        "one-step word problem → its integer answer",
        "numeric",
        Reference(
            "Q: A box holds 3 shells. How many shells are in 9 boxes?\nA: 27\n"
            "Q: Ines shares 24 pencils equally among 3 friends. How many pencils does each friend get?\nA: 8\n"
            "Q: {{question}}\nA:",
            max_tokens=8,
        ),
        {"tolerance": 0.0},
    ),
    "sentiment": TaskInfo(
        "short product review → positive or negative",
        "exact",
        Reference(
            "Review: I love this pizza; it is simply delightful.\nSentiment: positive\n"
            "Review: I regret buying this headphones; it is terrible.\nSentiment: negative\n"
            "Review: {{review}}\nSentiment:",
            max_tokens=3,
        ),
        labels=("positive", "negative"),
    ),
    "extraction": TaskInfo(
        "sentence about a person → JSON with name, age, city",
        "json_schema",
        Reference(
            "Text: Ines is 33 years old and lives in Seville.\n"
            'JSON: {"name": "Ines", "age": 33, "city": "Seville"}\n'
            "Text: Meet Anna, a 36-year-old from Denver.\n"
            'JSON: {"name": "Anna", "age": 36, "city": "Denver"}\n'
            "Text: {{text}}\nJSON:",
            max_tokens=40,
        ),
        {"schema": PERSON_SCHEMA},
    ),
}
TASKS: tuple[str, ...] = tuple(TASK_INFO)
_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


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
    reference: Reference
    labels: tuple[str, ...] = ()

    def render(self, case: Case) -> str:
        """The reference prompt filled with the case's inputs."""
        return _VARIABLE.sub(lambda match: case.inputs[match[1]], self.reference.template)

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
    return Task(name, info.description, info.scorer, info.scorer_args, cases, info.reference, info.labels)
