"""A synthetic labelled PII set, and the recall of a scanner on it per entity type.

The sentences are presidio-evaluator 0.3.2's templates (read from its pinned wheel, see `data.wheel`),
e.g. "My IBAN is {{iban}}", filled with values that Faker generates from our seed, so every span of
personal data is known by construction: an oracle independent of the scanner under test. The set is
stratified: for each entity type, `per_type` sentences drawn from the templates that hold a
placeholder of that type (every placeholder of a drawn template is filled and labelled).

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import csv
import functools
import io
import random
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from llmops_lib.bench.stats import Interval
from llmops_lib.errors import SpecError
from llmops_lib.evals.stats import proportion_interval
from llmops_lib.guards import data
from llmops_lib.guards.base import Scanner

_RAW = "presidio_evaluator/data_generator/raw_data/"

#: template placeholder -> the entity type we label it with (Presidio's names; GPE-like places are LOCATION)
LABELS: dict[str, str] = {
    "email": "EMAIL_ADDRESS",
    "iban": "IBAN_CODE",
    "ip_address": "IP_ADDRESS",
    "ssn": "US_SSN",
    "credit_card_number": "CREDIT_CARD",
    "phone_number": "PHONE_NUMBER",
    **dict.fromkeys(
        (
            "person", "name", "name_male", "name_female", "first_name", "first_name_male", "first_name_female",
            "first_name_nonbinary", "last_name", "last_name_male", "last_name_female",
        ),
        "PERSON",
    ),
    **dict.fromkeys(("city", "country", "state"), "LOCATION"),
}  # fmt: skip

#: placeholders that are not Faker method names -> the Faker method (the others are called by their name)
_FAKER_NAMES = {"person": "name", "organization": "company"}


@dataclass(frozen=True)
class Span:
    """One labelled piece of personal data: its type, where it is, and the value (the text there)."""

    entity: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class Sample:
    """One generated sentence, the index of its template, and its labelled spans."""

    text: str
    template: int
    spans: tuple[Span, ...]


def templates() -> list[str]:
    """presidio-evaluator's sentence templates (`\\n` written as two characters there, made newlines here)."""
    with zipfile.ZipFile(data.wheel("presidio-evaluator")) as wheel:
        text = wheel.read(_RAW + "templates.txt").decode("utf-8")
    return [line.strip().replace("\\n", "\n") for line in text.splitlines() if line.strip()]


def _nationalities() -> list[dict[str, str]]:
    with zipfile.ZipFile(data.wheel("presidio-evaluator")) as wheel:
        text = wheel.read(_RAW + "nationalities.csv").decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _providers(seed: int) -> Callable[[str], str]:
    """placeholder -> a fresh value, from one Faker (en_US) seeded with `seed`."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    nations = _nationalities()
    # Faker's dates are relative to today by default: fixed bounds keep the set the same every day
    moment = functools.partial(fake.date_time_between, datetime(1950, 1, 1), datetime(2020, 1, 1))
    special: dict[str, Callable[[], str]] = {
        "date_time": lambda: str(moment()),
        "date_of_birth": lambda: str(moment().date()),
        "year": lambda: str(moment().year),
        "day_of_week": lambda: moment().strftime("%A"),
        "age": lambda: str(fake.random_int(18, 95)),
        "ip_address": lambda: fake.ipv6() if fake.boolean(25) else fake.ipv4(),
        "nationality": lambda: fake.random_element(nations)["nationality"],
        "nation_man": lambda: fake.random_element(nations)["man"],
        "nation_woman": lambda: fake.random_element(nations)["woman"],
        "nation_plural": lambda: fake.random_element(nations)["plural"],
        "us_driver_license": lambda: fake.bothify("?#######").upper(),
    }

    def value(placeholder: str) -> str:
        if placeholder in special:
            return special[placeholder]()
        return str(getattr(fake, _FAKER_NAMES.get(placeholder, placeholder))())

    return value


def fill(template: str, value: Callable[[str], str], index: int = -1) -> Sample:
    """`template` with each placeholder replaced by `value(placeholder)`, the labelled ones as spans."""
    text, spans, end = "", [], 0
    for match in _PLACEHOLDER.finditer(template):
        text += template[end : match.start()]
        filled = value(match.group(1))
        if match.group(1) in LABELS:
            spans.append(Span(LABELS[match.group(1)], len(text), len(text) + len(filled), filled))
        text += filled
        end = match.end()
    return Sample(text + template[end:], index, tuple(spans))


def generate(entities: Sequence[str], per_type: int = 50, seed: int = 42) -> list[Sample]:
    """`per_type` sentences for each entity type of `entities`, from the templates holding one of its
    placeholders, drawn and filled with `seed` (same seed, same set)."""
    pool = templates()
    draw = random.Random(seed)
    value = _providers(seed)
    samples = []
    for entity in entities:
        holding = [i for i, t in enumerate(pool) if any(LABELS.get(p) == entity for p in _PLACEHOLDER.findall(t))]
        if not holding:
            raise SpecError(f"no template holds an entity of type {entity}; known: {sorted(set(LABELS.values()))}")
        for _ in range(per_type):
            index = draw.choice(holding)
            samples.append(fill(pool[index], value, index))
    return samples


@dataclass(frozen=True)
class Recall:
    """Labelled spans of one type the scanner found (a finding of that type overlapping the span)."""

    entity: str
    found: int
    total: int
    interval: Interval
    missed: tuple[str, ...]  # the values it missed, to read why


def recall(scanner: Scanner, samples: Sequence[Sample]) -> dict[str, Recall]:
    """Per entity type: how many labelled spans a finding of the same type overlaps."""
    found: dict[str, int] = {}
    total: dict[str, int] = {}
    missed: dict[str, list[str]] = {}
    for sample in samples:
        findings = scanner.scan(sample.text).findings
        for span in sample.spans:
            hit = any(
                f.kind == span.entity and f.start is not None and f.end is not None
                and f.start < span.end and f.end > span.start
                for f in findings
            )  # fmt: skip
            total[span.entity] = total.get(span.entity, 0) + 1
            found[span.entity] = found.get(span.entity, 0) + hit
            if not hit:
                missed.setdefault(span.entity, []).append(span.value)
    return {
        entity: Recall(entity, found[entity], total[entity], proportion_interval(found[entity], total[entity]),
                       tuple(missed.get(entity, ())))
        for entity in sorted(total)
    }  # fmt: skip
