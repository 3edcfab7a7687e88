"""The server's own count of what it did, from its Prometheus `/metrics` text.

A second, independent measurement beside the load generator's: the engine counts the tokens it
generated and the time it spent on them, whatever the client saw. Samples are read under the common
names of `engines.metrics`, so llama-server and vLLM are measured alike. Reading the counters
before and after a run and taking the difference is what a Prometheus `increase()` over the run does.

Explained in: book/chapters/02_optimization/batching
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from llmops_lib.engines.client import OpenAIClient
from llmops_lib.engines.metrics import common_samples
from llmops_lib.errors import EngineError

OUTPUT_TOKENS = "generation_tokens_total"
PROMPT_TOKENS = "prompt_tokens_total"
GENERATION_SECONDS = "generation_seconds_total"


@dataclass(frozen=True)
class Scrape:
    """One reading of `/metrics` under the common names, with the client's clock when it was read."""

    at_s: float
    samples: dict[str, float]

    def increase(self, later: Scrape, name: str) -> float:
        """How much counter `name` grew until `later` (EngineError if the server lacks it)."""
        if name not in self.samples or name not in later.samples:
            raise EngineError(
                f"the server's /metrics has no {name}; was the engine started with metrics on (llama-server --metrics)?"
            )
        return later.samples[name] - self.samples[name]


def scrape(client: OpenAIClient) -> Scrape:
    """Read the server's `/metrics` now."""
    try:
        response = client.get("/metrics")
    except httpx.HTTPError as exc:
        raise EngineError(
            f"cannot read {client.base_url}/metrics ({type(exc).__name__}: {exc}); is the server running?"
        ) from exc
    if response.status_code != 200:
        raise EngineError(
            f"{client.base_url}/metrics answered HTTP {response.status_code}: start llama-server with --metrics"
        )
    return Scrape(time.perf_counter(), common_samples(response.text))
