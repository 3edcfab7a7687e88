"""Post-output validation on the real engine: constrained decoding gives schema-valid JSON on every
case where free decoding does not (its rate is printed, not asserted), and the validator's retries
are counted; the validity rule and the refusals on literal input."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint
from llmops_lib.evals.structured import Extractor, compare, valid, without_demos
from llmops_lib.evals.tasks import PERSON_SCHEMA, load_task


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (' {"name": "Ana", "age": 3, "city": "Oslo"}', True),
        ('{"name": "Ana", "age": 3, "city": "Oslo"}\n', True),
        ('{"name": "Ana", "age": "3", "city": "Oslo"}', False),  # age must be an integer
        ('{"name": "Ana", "city": "Oslo"}', False),  # age missing
        ('{"name": "Ana", "age": 3, "city": "Oslo"} and more', False),  # not only JSON
        ('{"name": "Ana", "age": 3, "city": "Os', False),  # cut by max_tokens
        ('["Ana", 3, "Oslo"]', False),
        ("", False),
    ],
)
def test_valid_means_the_whole_output_is_one_schema_valid_object(output, expected):
    assert valid(output, PERSON_SCHEMA) is expected


def test_refusals_name_what_is_wrong():
    with Endpoint("http://127.0.0.1:9") as endpoint:  # refused before any request
        with pytest.raises(SpecError, match="no JSON schema"):
            Extractor(endpoint, load_task("capitals"))
        with pytest.raises(SpecError, match="unknown engine"):
            Extractor(endpoint, load_task("extraction"), engine="tgi")
        with pytest.raises(SpecError, match="retries"):
            compare(endpoint, load_task("extraction"), load_task("extraction").split("dev"), retries=-1)


def test_constrained_decoding_is_schema_valid_where_free_decoding_is_not(server):
    task = without_demos(load_task("extraction"))
    cases = task.split("dev")[:4]
    with Endpoint(server.base_url) as endpoint:
        free, constrained, retry = compare(endpoint, task, cases, retries=1)
    print(
        f"schema-valid: free {free.validity:.2f}, constrained {constrained.validity:.2f}, "
        f"retry {retry.validity:.2f} (+{retry.extra_requests} requests); "
        f"latency ratio constrained/free {constrained.latency_ratio:.2f}"
    )
    assert [w.way for w in (free, constrained, retry)] == ["free", "constrained", "retry"]
    validator = jsonschema.Draft202012Validator(PERSON_SCHEMA)
    for outcome in constrained.outcomes:
        assert validator.is_valid(json.loads(outcome.attempts[-1].text)), outcome.attempts[-1].text
    assert constrained.validity.estimate == 1.0 and constrained.extra_requests == 0
    invalid_free = sum(not validator.is_valid(_parsed(o.attempts[0].text)) for o in free.outcomes)
    assert retry.extra_requests == invalid_free, "one retry per invalid free answer"
    assert [o.attempts[0] for o in retry.outcomes] == [o.attempts[0] for o in free.outcomes]


def _parsed(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None
