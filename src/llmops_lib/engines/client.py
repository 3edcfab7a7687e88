"""A small OpenAI-compatible HTTP client that times what it streams.

httpx rather than the `openai` package: the timing of each server-sent event is the measurement,
so the client must not buffer or retry behind our back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import httpx

from llmops_lib.engines.base import Completion, timed_completion
from llmops_lib.engines.sse import iter_events, stream_events
from llmops_lib.errors import EngineError


class OpenAIClient:
    """Talks `/v1/completions` (streaming) to llama-server, vLLM, or the gateway."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "default",
        timeout_s: float = 300.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers` go with every request (e.g. a gateway's `x-llmops-priority`, `authorization`)."""
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=5.0), headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def stream_events(
        self,
        prompt: str,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        ignore_eos: bool = False,
    ) -> Iterator[dict]:
        """Yield each streamed completion chunk as a dict (closing the iterator disconnects)."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if stop:
            body["stop"] = stop
        if ignore_eos:
            body["ignore_eos"] = True  # llama-server and vLLM extension
        try:
            with self._http.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise EngineError(f"{self.base_url} answered {response.status_code}: {response.text[:300]}")
                for event in iter_events(response.iter_bytes()):
                    if "error" in event:
                        raise EngineError(f"{self.base_url} failed mid-stream: {event['error']}")
                    yield event
        except httpx.HTTPError as exc:
            raise EngineError(
                f"request to {self.base_url} failed ({type(exc).__name__}: {exc}); is the engine running?"
            ) from exc

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        ignore_eos: bool = False,
    ) -> Completion:
        """Stream one completion and time it (see `timed_completion`)."""
        start = time.perf_counter()
        stream = self.stream_events(
            prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, ignore_eos=ignore_eos
        )
        return timed_completion((piece for event in stream for piece in stream_events(event)), start=start)

    def get(self, path: str) -> httpx.Response:
        """GET a path of the server (health, metrics, slots)."""
        return self._http.get(path)
