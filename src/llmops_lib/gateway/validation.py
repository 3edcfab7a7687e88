"""Input validation: every malformed request becomes a 4xx with an OpenAI-style body naming the field.

The gateway checks what it can cheaply before any upstream sees the request; what only the engine can
judge (exact token count) comes back from the engine as its own 4xx, passed through.
Explained in: book/chapters/03_observability/common_challenges.ipynb
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmops_lib.gateway.queue import PRIORITIES

#: A conservative characters-per-token estimate: prompts longer than this many characters per token
#: of context window are rejected before they reach an engine.
CHARS_PER_TOKEN = 4


@dataclass
class ApiError(Exception):
    """An error the client caused (or an upstream failure), rendered as an OpenAI error body."""

    status: int
    message: str
    param: str | None = None
    type: str = "invalid_request_error"
    code: str | None = None

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _number(body: dict, name: str, low: float, high: float, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not (low <= value <= high):
        what = "an integer" if integer else "a number"
        raise ApiError(400, f"{name} must be {what} between {low} and {high}, got {value!r}", param=name)


def prompt_text(operation: str, body: dict) -> str:
    """The prompt as one string (for the length check, routing rules and optional capture)."""
    if operation == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty list of {role, content}", param="messages")
        parts = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ApiError(400, f"messages[{i}] must be an object with a string role", param=f"messages[{i}]")
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(
                    p.get("text", "") if isinstance(p, dict) and isinstance(p.get("text", ""), str) else "\0"
                    for p in content
                )
            if not isinstance(content, str) or "\0" in content:
                raise ApiError(400, f"messages[{i}].content must be a string", param=f"messages[{i}].content")
            parts.append(content)
        return "\n".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    raise ApiError(400, "prompt must be a string (or a list of one string)", param="prompt")


def validate(operation: str, body: dict, models: set[str], context_window: int, max_tokens_limit: int) -> str:
    """Check `body` of a completions (`text_completion`) or chat request; returns the prompt text."""
    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string naming one of the gateway's models", param="model")
    if model not in models:
        raise ApiError(
            404,
            f"unknown model {model!r}: GET /v1/models lists {sorted(models)}",
            param="model",
            code="model_not_found",
        )
    text = prompt_text(operation, body)
    _number(body, "max_tokens", 1, max_tokens_limit, integer=True)
    _number(body, "n", 1, 1, integer=True)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    for flag in ("stream",):
        if flag in body and not isinstance(body[flag], bool):
            raise ApiError(400, f"{flag} must be true or false", param=flag)
    if "priority" in body and body["priority"] not in PRIORITIES:
        raise ApiError(400, f"priority must be one of {sorted(PRIORITIES)}", param="priority")
    if "stop" in body and not (
        body["stop"] is None
        or isinstance(body["stop"], str)
        or (isinstance(body["stop"], list) and all(isinstance(s, str) for s in body["stop"]))
    ):
        raise ApiError(400, "stop must be a string or a list of strings", param="stop")
    estimate = len(text) // CHARS_PER_TOKEN + (body.get("max_tokens") or 0)
    if estimate > context_window:
        raise ApiError(
            400,
            f"the prompt (about {len(text) // CHARS_PER_TOKEN} tokens) plus max_tokens exceeds the context window of {context_window} tokens: shorten it",
            param="prompt" if operation != "chat" else "messages",
            code="context_length_exceeded",
        )
    return text
