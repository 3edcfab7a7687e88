"""Server-sent events of an OpenAI-compatible stream, parsed in one place.

Every reader of a stream goes through here: the timing client (`engines.client`), the in-process
llama.cpp engine, and the gateway that relays the engine's bytes. The network cuts a stream into
chunks anywhere, even inside `data: `, so `SSEDecoder` keeps the unfinished line until its end
arrives; it does not buffer whole events beyond that, so the time an event is seen is the time
its last byte came (what TTFT and ITL measure).
Explained in: book/chapters/01_mlops_to_llmops (serving the model)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping

from llmops_lib.engines.base import StreamEvent

#: The payload that ends an OpenAI stream.
DONE = "[DONE]"


class SSEDecoder:
    """Feed it the bytes of a stream as they come; it returns each complete event's `data`.

    Follows the SSE rules that OpenAI-style servers use: lines end with LF or CRLF, a blank line
    ends an event, `data:` lines (one optional space after the colon) of one event join with a
    newline, other fields (`event:`, `id:`) and comments (`:`) are skipped.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that `chunk` completes (none while a line is still open)."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode(errors="replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[6:] if line.startswith("data: ") else line[5:])
        return events

    def payloads(self, chunks: Iterable[bytes]) -> Iterator[str]:
        """The data of every event of a whole stream of `chunks`."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.close()

    def close(self) -> list[str]:
        """The data of an event the stream ended without a blank line after (servers do that)."""
        events = self.feed(b"\n\n") if self._partial or self._data else []
        self._partial, self._data = b"", []
        return events


def iter_events(chunks: Iterable[bytes]) -> Iterator[dict]:
    """The decoded events of a stream's byte chunks, up to `[DONE]` or the end of the stream."""
    decoder = SSEDecoder()
    for payload in decoder.payloads(chunks):
        event = decode(payload)
        if event is None:
            return
        yield event


def decode(payload: str) -> dict | None:
    """The JSON object of one event's data; None for the closing `[DONE]`.

    Raises:
        ValueError: the data is not a JSON object (a server that does not speak OpenAI SSE).
    """
    if payload.strip() == DONE:
        return None
    event = json.loads(payload)
    if not isinstance(event, dict):
        raise ValueError(f"a stream event is a JSON object, got {payload[:80]!r}")
    return event


def choice_text(choice: Mapping) -> str:
    """The text one choice carries: completions' `text`, chat's `delta.content` (or `message.content`)."""
    if "text" in choice:
        return choice.get("text") or ""
    return (choice.get("delta") or choice.get("message") or {}).get("content") or ""


def stream_events(event: Mapping) -> Iterator[StreamEvent]:
    """The `StreamEvent`s of one decoded chunk, one per choice (a usage-only chunk gives one without text)."""
    for choice in event.get("choices") or [{}]:
        yield StreamEvent(choice_text(choice), choice.get("finish_reason"), event.get("usage"))
