"""What a load test sends (the workload) and when (the load plan), reproducible from one seed.

Request `i` is drawn from its own seeded generator, so it is the same request whatever order
threads pick requests in; Poisson arrival times come from the seed too, so two runs with one seed
send the same requests at the same offsets.

Explained in: book/chapters/02_optimization/batching
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from llmops_lib.bench.workloads import COMPLETION_PROMPTS
from llmops_lib.errors import SpecError

# Filler for longer prompts: the words are sampled, so prompts differ and no prefix cache helps.
CONTEXT_WORDS = tuple(
    [
        "service",
        "latency",
        "memory",
        "throughput",
        "request",
        "model",
        "token",
        "cache",
        "batch",
        "queue",
        "server",
        "client",
        "deploy",
        "release",
        "metric",
        "alert",
        "budget",
        "capacity",
        "replica",
        "traffic",
        "region",
        "version",
        "rollout",
        "incident",
        "review",
        "prompt",
        "answer",
        "window",
        "context",
        "engine",
        "thread",
        "core",
        "bandwidth",
        "storage",
        "network",
        "error",
        "retry",
    ]
)


def _range(name: str, bounds: tuple[int, int], minimum: int) -> tuple[int, int]:
    low, high = (int(b) for b in bounds)
    if not minimum <= low <= high:
        raise SpecError(f"Workload.{name} must be (low, high) with {minimum} <= low <= high, got {bounds}")
    return low, high


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: its place in the run, its prompt and how many tokens it asks for."""

    index: int
    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class Workload:
    """The requests of a load test.

    Attributes:
        prompts: base prompts, used in turn (request i gets prompt i mod len).
        output_tokens: (low, high): each request's `max_tokens`, uniform in that range.
        context_words: (low, high): filler words put before the prompt, uniform in that range
            (a word is about 1.3 tokens), for a prompt-length distribution.
        ignore_eos: generate exactly `max_tokens` (so the output-length distribution holds).
        seed: fixes every draw (and the Poisson arrivals of a `LoadPlan`).
    """

    prompts: tuple[str, ...] = COMPLETION_PROMPTS
    output_tokens: tuple[int, int] = (64, 64)
    context_words: tuple[int, int] = (0, 0)
    ignore_eos: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.prompts:
            raise SpecError("Workload.prompts is empty: give at least one prompt")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "output_tokens", _range("output_tokens", self.output_tokens, 1))
        object.__setattr__(self, "context_words", _range("context_words", self.context_words, 0))

    @classmethod
    def random(cls, output_len: int, *, context_words: int = 0, range_ratio: float = 0.0, seed: int = 0) -> Workload:
        """Lengths uniform within ±`range_ratio` of the given ones, as vLLM's random dataset draws them."""
        if not 0 <= range_ratio < 1:
            raise SpecError(f"range_ratio must be within [0, 1), got {range_ratio}")

        def spread(length: int) -> tuple[int, int]:
            return round(length * (1 - range_ratio)), round(length * (1 + range_ratio))

        return cls(output_tokens=spread(output_len), context_words=spread(context_words), seed=seed)

    def request(self, index: int) -> RequestSpec:
        """Request number `index` (the same for a given seed, whoever asks first)."""
        draw = random.Random(f"{self.seed}:{index}")
        words = draw.randint(*self.context_words)
        context = " ".join(draw.choice(CONTEXT_WORDS) for _ in range(words))
        prompt = self.prompts[index % len(self.prompts)]
        return RequestSpec(index, f"{context}\n\n{prompt}" if context else prompt, draw.randint(*self.output_tokens))

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"prompts": len(self.prompts)}


@dataclass(frozen=True)
class LoadPlan:
    """How hard and how long to push.

    Attributes:
        concurrency: requests in flight at most. With an infinite `request_rate` it is a closed
            loop: a new request leaves as soon as one finishes (vLLM's `--max-concurrency`).
        request_rate: mean requests per second of Poisson arrivals (`math.inf`: no pacing).
        num_requests: stop sending after this many (None: no count limit).
        duration_s: stop sending after this many seconds (None: no time limit). Requests in
            flight then still finish and count; nothing is cut off or dropped.
    """

    concurrency: int = 1
    request_rate: float = math.inf
    num_requests: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if int(self.concurrency) < 1:
            raise SpecError(f"LoadPlan.concurrency must be at least 1 request in flight, got {self.concurrency}")
        if not float(self.request_rate) > 0:
            raise SpecError(
                f"LoadPlan.request_rate must be a positive number of requests/s (or inf), got {self.request_rate}"
            )
        if self.num_requests is None and self.duration_s is None:
            raise SpecError("LoadPlan needs num_requests or duration_s, else the load would never stop")
        if self.num_requests is not None and int(self.num_requests) < 1:
            raise SpecError(f"LoadPlan.num_requests must be at least 1, got {self.num_requests}")
        if self.duration_s is not None and not float(self.duration_s) > 0:
            raise SpecError(f"LoadPlan.duration_s must be positive seconds, got {self.duration_s}")

    def send_offsets(self, seed: int) -> Iterator[float]:
        """Seconds after the start at which request 0, 1, 2, … is due: 0 for all without a rate,
        else the cumulative sum of exponential gaps (a Poisson process) drawn from `seed`."""
        draw = random.Random(seed)
        offset = 0.0
        index = 0
        while self.num_requests is None or index < self.num_requests:
            if math.isfinite(self.request_rate):
                offset += draw.expovariate(self.request_rate)
            if self.duration_s is not None and offset >= self.duration_s:
                return
            yield offset
            index += 1

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        return data
