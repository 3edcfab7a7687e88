"""Quality monitors: a rolling quality metric from user feedback and from sampled automatic checks.

Latency and errors say whether the service answers; they say nothing about whether the answers
are any good. Two signals do, and both are cheap enough to run on live traffic:

- **User feedback** (`POST /v1/feedback`): sparse and late, but it is the users' own verdict.
  `feedback_monitor` turns the scores into a rolling mean over a time window.
- **Automatic checks on a sample** of logged completions (needs the request log's text capture):
  `non_empty` and `no_repetition_loop` catch a broken deployment at once (a wrong chat template,
  a bad quantization, a sampler stuck in a loop); `PerplexityCheck` scores completions with the
  model itself, so a deployment whose outputs turn into noise shows as rising perplexity;
  `ValidJSON` checks validity where answers must be JSON (correctness: `online_eval`).
  `check_monitor` turns the results into a rolling pass rate.

A monitor's status (`status`) is its latest rolling value against a threshold, and says so only
when the window holds enough observations to mean something.

Explained in: book/chapters/03_observability/monitoring
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llmops_lib.errors import SpecError


@dataclass(frozen=True)
class RollingPoint:
    """The rolling value at time `at` (unix s) over the `count` observations in the window before it."""

    at: float
    value: float
    count: int


def rolling_mean(observations: Sequence[tuple[float, float]], window_s: float) -> list[RollingPoint]:
    """At each observation (time, value), the mean of the values in the `window_s` seconds up to it."""
    if not window_s > 0:
        raise SpecError(f"window_s must be a positive number of seconds, got {window_s}")
    window: deque[tuple[float, float]] = deque()
    total = 0.0
    points = []
    for at, value in sorted(observations):
        window.append((at, value))
        total += value
        while window[0][0] <= at - window_s:
            total -= window.popleft()[1]
        points.append(RollingPoint(at, total / len(window), len(window)))
    return points


def feedback_monitor(feedback: Sequence[Mapping], window_s: float) -> list[RollingPoint]:
    """Rolling mean user score from rows of the `feedback` table (`created_at`, `score`)."""
    return rolling_mean([(float(f["created_at"]), float(f["score"])) for f in feedback], window_s)


# --- automatic checks on sampled completions ------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One check of one logged request: whether it passed, and the measured value behind it."""

    request_id: str
    at: float
    check: str
    passed: bool
    value: float


class Check(Protocol):
    """A check of one completion: (passed, measured value)."""

    name: str

    def __call__(self, prompt: str, completion: str) -> tuple[bool, float]: ...


@dataclass(frozen=True)
class NonEmpty:
    """The completion holds visible text: an empty answer is the cheapest sign of a broken
    deployment (wrong template, a stop sequence hit at once, an upstream that returns nothing)."""

    name: str = "non_empty"

    def __call__(self, prompt: str, completion: str) -> tuple[bool, float]:
        length = len(completion.strip())
        return length > 0, float(length)


@dataclass(frozen=True)
class NoRepetitionLoop:
    """The completion does not loop: the share of its word n-grams that repeat an earlier one stays
    at most `max_repeated_share`. Small models decoding greedily fall into loops ("the the the",
    a line over and over); that is a quality failure users see, and no latency metric shows it."""

    n: int = 3
    max_repeated_share: float = 0.5
    name: str = "no_repetition_loop"

    def __call__(self, prompt: str, completion: str) -> tuple[bool, float]:
        share = repeated_ngram_share(completion, self.n)
        return share <= self.max_repeated_share, share


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word n-grams of `text` that already occurred earlier in it (0 for short text)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


@dataclass(frozen=True)
class ValidJSON:
    """The completion is one JSON value, valid against `schema` when one is given: for a route whose
    clients parse its answers, an invalid one is a failed request whatever its latency."""

    schema: dict | None = None
    name: str = "valid_json"

    def __call__(self, prompt: str, completion: str) -> tuple[bool, float]:
        import jsonschema

        try:
            value = json.loads(completion)
        except ValueError:
            return False, 0.0
        valid = self.schema is None or jsonschema.Draft202012Validator(self.schema).is_valid(value)
        return valid, float(valid)


class PerplexityCheck:
    """The model's own perplexity of a completion given its prompt stays at most `max_perplexity`.

    A completion the serving model would itself find unlikely is noise: a broken quantization, a
    mismatched tokenizer or a sampler misconfiguration in a deployment show as rising perplexity
    long before users complain. Scoring costs a forward pass over prompt and completion, which is
    why it runs on a sample. The scorer is llama.cpp in-process on `model` (a GGUF), loaded once.
    """

    name = "perplexity"

    def __init__(self, model: Path, *, max_perplexity: float, n_ctx: int = 1024, threads: int = 1) -> None:
        from llama_cpp import Llama

        if not max_perplexity > 1:
            raise SpecError(f"max_perplexity must be above 1 (the perplexity of a certain text), got {max_perplexity}")
        self.max_perplexity = max_perplexity
        self._llama = Llama(str(model), n_ctx=n_ctx, n_threads=threads, n_batch=min(512, n_ctx), verbose=False)

    def __call__(self, prompt: str, completion: str) -> tuple[bool, float]:
        from llmops_lib.optimize.perplexity import continuation_logprobs, perplexity

        if not completion:
            return False, float("inf")
        value = perplexity(continuation_logprobs(self._llama, prompt, completion))
        return value <= self.max_perplexity, value

    def close(self) -> None:
        self._llama.close()


DEFAULT_CHECKS: tuple[Check, ...] = (NonEmpty(), NoRepetitionLoop())


def in_sample(request_id: str, rate: float) -> bool:
    """Whether a request falls in a `rate` sample, decided by its id alone (as trace sampling does):
    the same request is always in or out, whoever asks and in whatever order."""
    if not 0 < rate <= 1:
        raise SpecError(f"the sample rate must be within (0, 1], got {rate}")
    digest = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return digest / 2**64 < rate


def run_checks(
    rows: Sequence[Mapping], checks: Sequence[Check] = DEFAULT_CHECKS, *, rate: float = 1.0
) -> list[CheckResult]:
    """Run `checks` on the sampled, answered requests of the log that carry their text.

    Raises:
        SpecError: no sampled request has its text (the gateway's request log must capture text).
    """
    sampled = [r for r in rows if in_sample(str(r["request_id"]), rate) and int(r.get("http_status") or 0) < 400]
    with_text = [r for r in sampled if r.get("completion") is not None]
    if sampled and not with_text:
        raise SpecError(
            "the request log holds no completion text: start the gateway with text capture on "
            "(request log capture_text=True) to run quality checks"
        )
    return [
        CheckResult(
            str(r["request_id"]),
            float(r.get("finished_at") or r["started_at"]),
            check.name,
            *check(r.get("prompt") or "", r["completion"]),
        )
        for r in with_text
        for check in checks
    ]


def check_monitor(results: Sequence[CheckResult], window_s: float) -> dict[str, list[RollingPoint]]:
    """Rolling pass rate of each check over time."""
    by_check: dict[str, list[tuple[float, float]]] = {}
    for result in results:
        by_check.setdefault(result.check, []).append((result.at, float(result.passed)))
    return {name: rolling_mean(observations, window_s) for name, observations in by_check.items()}


@dataclass(frozen=True)
class MonitorStatus:
    """A monitor's verdict: the latest rolling value against its threshold."""

    name: str
    value: float | None
    count: int
    threshold: float
    state: str  # "ok", "alert", or "insufficient data"


def status(name: str, points: Sequence[RollingPoint], *, at_least: float, min_count: int = 5) -> MonitorStatus:
    """`alert` when the latest rolling value is below `at_least` over at least `min_count`
    observations; `insufficient data` when the window holds fewer (one bad rating is not a trend)."""
    if not points or points[-1].count < min_count:
        last = points[-1] if points else None
        return MonitorStatus(
            name, last.value if last else None, last.count if last else 0, at_least, "insufficient data"
        )
    last = points[-1]
    return MonitorStatus(name, last.value, last.count, at_least, "ok" if last.value >= at_least else "alert")
