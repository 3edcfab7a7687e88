"""What every engine answers with, and the one call all of them share."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Protocol

from llmops_lib.facts import tpot_s


@dataclass(frozen=True)
class Completion:
    """One generated completion with its timing, measured by streaming.

    Definitions follow vLLM's `bench serve`: TTFT is the time to the first streamed token,
    TPOT is `facts.tpot_s`, and the inter-token latencies (ITL) are the
    gaps between consecutive streamed tokens, kept one by one because their tail is what a reader
    of a stream feels as stutter.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    latency_s: float
    finish_reason: str | None = None
    itl_s: tuple[float, ...] = ()

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 when only one token came): `facts.tpot_s`."""
        return tpot_s(self.latency_s, self.ttft_s, self.completion_tokens)

    @property
    def generation_tokens_per_s(self) -> float:
        """Decode speed: tokens after the first, per second after the first."""
        return 1.0 / self.tpot_s if self.tpot_s > 0 else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        """Prompt processing speed, approximated as prompt tokens over TTFT."""
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {
            "tpot_s": self.tpot_s,
            "generation_tokens_per_s": self.generation_tokens_per_s,
            "prompt_tokens_per_s": self.prompt_tokens_per_s,
        }


@dataclass(frozen=True)
class StreamEvent:
    """One streamed piece of a completion, whatever engine sent it."""

    text: str
    finish_reason: str | None = None
    usage: dict | None = None


def timed_completion(events: Iterable[StreamEvent], *, start: float, prompt_tokens: int = 0) -> Completion:
    """Consume a stream and time it: TTFT at the first event that carries text, ITL between them.

    Token counts come from the engine's usage report when it sends one, otherwise from the number
    of text events (one per token for llama.cpp) and the `prompt_tokens` the caller counted.
    """
    arrivals: list[float] = []
    pieces: list[str] = []
    usage: dict = {}
    finish = None
    for event in events:
        if event.text:
            arrivals.append(time.perf_counter())
            pieces.append(event.text)
        usage = event.usage or usage
        finish = event.finish_reason or finish
    latency = time.perf_counter() - start
    return Completion(
        text="".join(pieces),
        prompt_tokens=int(usage.get("prompt_tokens", prompt_tokens)),
        completion_tokens=int(usage.get("completion_tokens", len(pieces))),
        ttft_s=arrivals[0] - start if arrivals else latency,
        latency_s=latency,
        finish_reason=finish,
        itl_s=tuple(later - earlier for earlier, later in pairwise(arrivals)),
    )


class Engine(Protocol):
    """Anything that turns a prompt into a timed completion: in-process or over HTTP."""

    name: str

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        ignore_eos: bool = False,
    ) -> Completion:
        """Generate greedily by default; `ignore_eos` forces exactly `max_tokens` (benchmarks)."""
        ...
