"""Deterministic scorers: an output and an expectation in, 1.0 (right) or 0.0 (wrong) out.

Binary on purpose: a paired comparison of two prompt versions then counts the cases only one got
right (McNemar), and a live split compares two success rates. Text is compared after `normalise`
(case, accents, surrounding whitespace and quotes, trailing punctuation), so "Bogota." scores as
"Bogotá" but "Bogota is big" does not, unless the task's scorer is `contains`.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import jsonschema

from llmops_lib.errors import SpecError
from llmops_lib.evals.tasks import Case, Task

_TRAILING = " \t\r\n.,;:!?\"'`"
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def normalise(text: str) -> str:
    """Casefolded, accents removed, whitespace collapsed, surrounding quotes and trailing punctuation cut."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split()).rstrip(_TRAILING).lstrip(" \"'`")


def exact(output: str, expected: Any) -> float:
    """The whole output is the expected answer (after `normalise`)."""
    return float(normalise(output) == normalise(str(expected)))


def contains(output: str, expected: Any) -> float:
    """The expected answer appears in the output as whole words (after `normalise`): "Rome" not in "Romeo"."""
    wanted = normalise(str(expected))
    return float(bool(wanted) and re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", normalise(output)) is not None)


def regex(output: str, expected: Any, pattern: str | None = None) -> float:
    """`pattern` (else the expected value, taken as a pattern) is found in the output."""
    try:
        return float(re.search(pattern or str(expected), output) is not None)
    except re.error as exc:
        raise SpecError(f"regex scorer: {pattern or expected!r} is not a valid pattern ({exc})") from exc


def first_json_object(output: str) -> dict | None:
    """The first JSON object in the text (models wrap JSON in prose or code fences), or None."""
    decoder = json.JSONDecoder()
    for start in (match.start() for match in re.finditer(r"\{", output)):
        try:
            value, _ = decoder.raw_decode(output, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def json_schema(output: str, expected: Any, schema: dict) -> float:
    """The first JSON object of the output validates against `schema` and, when a dict is expected, has
    each expected field equal to it (strings compared after `normalise`)."""
    value = first_json_object(output)
    if value is None or not jsonschema.Draft202012Validator(schema).is_valid(value):
        return 0.0
    if not isinstance(expected, dict):
        return 1.0

    def same(got: Any, want: Any) -> bool:
        if isinstance(want, str) and isinstance(got, str):
            return normalise(got) == normalise(want)
        return type(got) is type(want) and got == want

    return float(all(key in value and same(value[key], want) for key, want in expected.items()))


def numeric(output: str, expected: Any, tolerance: float = 0.0) -> float:
    """The first number in the output is within `tolerance` (absolute) of the expected number."""
    match = _NUMBER.search(output)
    return float(match is not None and abs(float(match.group().replace(",", "")) - float(expected)) <= tolerance)


SCORERS: dict[str, Callable[..., float]] = {
    "exact": exact,
    "contains": contains,
    "regex": regex,
    "json_schema": json_schema,
    "numeric": numeric,
}


def score(task: Task, case: Case, output: str) -> float:
    """The task's scorer applied to one output: 1.0 or 0.0."""
    if task.scorer not in SCORERS:
        raise SpecError(f"task {task.name!r} names unknown scorer {task.scorer!r}: choose one of {', '.join(SCORERS)}")
    return SCORERS[task.scorer](output, case.expected, **task.scorer_args)
