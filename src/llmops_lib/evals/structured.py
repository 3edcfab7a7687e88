"""Post-output validation: JSON that must match a schema, got three ways, with what each costs.

- free: the reference prompt, free decoding; whatever comes out.
- constrained: the same request with the schema as a decoding constraint, so the engine can only
  sample tokens that keep the output a prefix of a valid document. The field differs per engine
  (`CONSTRAINTS`): llama-server takes `json_schema` on `/v1/completions` (this build ignores
  `response_format` there and honours it only on chat), vLLM takes `structured_outputs: {"json": …}`
  (or `response_format` of type `json_schema`).
- retry: free decoding, then a validator; an invalid output is asked again (sampled, a new seed per
  attempt) up to `retries` times. The first attempt is the free request itself, so this way's cost
  is the free one plus the extra requests it needed.

Valid means what a program that consumes the answer needs: the whole output (spaces stripped) parses
as one JSON object that validates against the schema. Correct is the task's scorer (field equality).
`compare` sends the three ways case by case, interleaved, so load on a shared machine falls on all
three alike.

Explained in: book/chapters/05_quality/quality_assurance.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import jsonschema

from llmops_lib.bench.stats import Interval
from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint
from llmops_lib.evals.scorers import score
from llmops_lib.evals.stats import proportion_interval
from llmops_lib.evals.tasks import Case, Task

#: The request field that constrains decoding to a JSON schema, per engine (OpenAI-compatible completions).
CONSTRAINTS: dict[str, Callable[[dict], dict]] = {
    "llama-server": lambda schema: {"json_schema": schema},
    "vllm": lambda schema: {"structured_outputs": {"json": schema}},
}
#: The request field that keeps a request off the engine's prompt cache, per engine: the ways send
#: the same prompt one after the other, and the second would otherwise skip the prompt's processing.
UNCACHED: dict[str, Callable[[], dict]] = {
    "llama-server": lambda: {"cache_prompt": False},
    "vllm": lambda: {"cache_salt": uuid.uuid4().hex},
}
WAYS = ("free", "constrained", "retry")
#: An extraction prompt without demonstrations: the base model then rarely writes JSON on its own,
#: which is where a constraint earns its keep (the reference prompt's two demos already teach the format).
INSTRUCTION_ONLY = "Text: {{text}}\nThe same as JSON with name, age and city:"


def without_demos(task: Task, template: str = INSTRUCTION_ONLY) -> Task:
    """The task with its reference prompt replaced by an instruction-only `template` (same variables)."""
    return replace(task, reference=replace(task.reference, template=template))


def valid(output: str, schema: dict) -> bool:
    """The whole output is one JSON object that validates against `schema`."""
    try:
        value = json.loads(output.strip())
    except ValueError:
        return False
    return isinstance(value, dict) and jsonschema.Draft202012Validator(schema).is_valid(value)


@dataclass(frozen=True)
class Attempt:
    """One request: its output, whether it validated, its latency and generated tokens."""

    text: str
    valid: bool
    latency_s: float
    completion_tokens: int


@dataclass(frozen=True)
class Outcome:
    """One case answered one way: the attempts it took (the last one is the answer) and its score."""

    case_id: str
    way: str
    attempts: tuple[Attempt, ...]
    correct: float

    @property
    def valid(self) -> bool:
        return self.attempts[-1].valid

    @property
    def latency_s(self) -> float:
        return sum(attempt.latency_s for attempt in self.attempts)


@dataclass(frozen=True)
class WayResult:
    """One way over the cases: validity and accuracy (Wilson intervals), latency, extra requests."""

    way: str
    n: int
    validity: Interval
    accuracy: Interval
    median_latency_s: float
    latency_ratio: float  # median latency / free decoding's
    extra_requests: int  # requests beyond one per case
    completion_tokens: int
    outcomes: tuple[Outcome, ...]

    def row(self) -> dict:
        """The table row: numbers only."""
        return {
            "way": self.way,
            "n": self.n,
            "valid": self.validity.estimate,
            "valid_low": self.validity.low,
            "valid_high": self.validity.high,
            "accuracy": self.accuracy.estimate,
            "accuracy_low": self.accuracy.low,
            "accuracy_high": self.accuracy.high,
            "median_latency_s": self.median_latency_s,
            "latency_ratio": self.latency_ratio,
            "extra_requests": self.extra_requests,
            "completion_tokens": self.completion_tokens,
        }


class Extractor:
    """Sends a task's reference prompt to a completions endpoint, free or constrained by the task's schema."""

    def __init__(
        self, endpoint: Endpoint, task: Task, engine: str = "llama-server", *, cache_prompt: bool = False
    ) -> None:
        if engine not in CONSTRAINTS:
            raise SpecError(
                f"unknown engine {engine!r} for constrained decoding: choose one of {', '.join(CONSTRAINTS)}"
            )
        self.schema = task.scorer_args.get("schema")
        if not isinstance(self.schema, dict):
            raise SpecError(f"task {task.name!r} has no JSON schema to validate against: use the extraction task")
        self.endpoint, self.task, self.engine, self.cache_prompt = endpoint, task, engine, cache_prompt

    def attempt(
        self, case: Case, *, constrained: bool = False, seed: int | None = None, temperature: float = 0.0
    ) -> Attempt:
        """One request for the case; `seed` and `temperature` for a sampled retry."""
        body: dict = {
            **self.endpoint.params(),
            "prompt": self.task.render(case),
            "max_tokens": self.task.reference.max_tokens,
            "stop": list(self.task.reference.stop),
            "temperature": temperature,
        }
        if constrained:
            body |= CONSTRAINTS[self.engine](self.schema)
        if seed is not None:
            body["seed"] = seed
        if not self.cache_prompt:
            body |= UNCACHED[self.engine]()
        start = time.perf_counter()
        answer = self.endpoint.request("POST", "/v1/completions", body)
        latency = time.perf_counter() - start
        text = answer["choices"][0]["text"]
        tokens = answer.get("usage", {}).get("completion_tokens", 0)
        return Attempt(text, valid(text, self.schema), latency, tokens)

    def outcome(self, case: Case, way: str, attempts: Sequence[Attempt]) -> Outcome:
        return Outcome(case.id, way, tuple(attempts), score(self.task, case, attempts[-1].text))


def compare(
    endpoint: Endpoint,
    task: Task,
    cases: Sequence[Case],
    *,
    engine: str = "llama-server",
    retries: int = 2,
    retry_temperature: float = 0.7,
    cache_prompt: bool = False,
) -> list[WayResult]:
    """Free, constrained and validator-plus-retry decoding on the same cases, one result per way.

    Args:
        endpoint: an OpenAI-compatible server (llama-server, vLLM, the gateway in front of either).
        task: a task whose scorer has a JSON `schema` (extraction).
        engine: which constraint field the server understands (`CONSTRAINTS`).
        retries: extra attempts the validator may ask for after an invalid output.
        retry_temperature: a retry samples (seed = attempt number): at temperature 0 it would repeat itself.
        cache_prompt: let the engine reuse the prompt's cache across the ways (off: each request pays
            for its prompt, as a new request would; `UNCACHED`; a gateway must pass that field through).
    """
    if not cases:
        raise SpecError("compare needs at least one case")
    if retries < 0 or retry_temperature <= 0:
        raise SpecError(f"need retries ≥ 0 and retry_temperature > 0, got {retries} and {retry_temperature}")
    extractor = Extractor(endpoint, task, engine, cache_prompt=cache_prompt)
    outcomes: dict[str, list[Outcome]] = {way: [] for way in WAYS}
    for case in cases:
        free = extractor.attempt(case)
        outcomes["free"].append(extractor.outcome(case, "free", [free]))
        outcomes["constrained"].append(
            extractor.outcome(case, "constrained", [extractor.attempt(case, constrained=True)])
        )
        attempts = [free]
        while not attempts[-1].valid and len(attempts) <= retries:
            attempts.append(extractor.attempt(case, seed=len(attempts), temperature=retry_temperature))
        outcomes["retry"].append(extractor.outcome(case, "retry", attempts))
    free_median = statistics.median(o.latency_s for o in outcomes["free"])
    return [_summary(way, outcomes[way], free_median) for way in WAYS]


def _summary(way: str, outcomes: list[Outcome], free_median: float) -> WayResult:
    n = len(outcomes)
    median = statistics.median(o.latency_s for o in outcomes)
    return WayResult(
        way=way,
        n=n,
        validity=proportion_interval(sum(o.valid for o in outcomes), n),
        accuracy=proportion_interval(int(sum(o.correct for o in outcomes)), n),
        median_latency_s=median,
        latency_ratio=median / free_median,
        extra_requests=sum(len(o.attempts) - 1 for o in outcomes),
        completion_tokens=sum(a.completion_tokens for o in outcomes for a in o.attempts),
        outcomes=tuple(outcomes),
    )
