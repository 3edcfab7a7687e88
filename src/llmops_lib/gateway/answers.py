"""What the gateway changes in an engine's answer before the client sees it.

The `model` field names the model (route) the client asked for, not the engine's file path or
upstream name, so a client, a harness or a trace sees the name it sent; the request log keeps the
engine's in `gen_ai_response_model`. On a route with `review_below` a request is sent upstream with
token log-probabilities, its confidence (`evals.confidence`) goes into the request log with
`needs_review`, and the log-probabilities the client did not ask for are taken out again. A stream's
are gathered chunk by chunk and reviewed when it ends (a stream the client left early: what it got).
The answers to the prompts of a list, each sent as its own request, are merged into the one answer
OpenAI gives for a list (`merged`).
Explained in: book/chapters/05_quality/quality_assurance.ipynb
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops_lib.evals.confidence import confidence_of_choice
from llmops_lib.gateway.protocol import CHAT_PATH
from llmops_lib.observe.request_log import RequestRecord

#: The token counts of a `usage`, summed over the prompts of a list.
USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True)
class Reply:
    """How the answer to one request is shaped: its model name, the review threshold (None: no
    review), and whether the client asked for the log-probabilities."""

    model: str
    review_below: float | None = None
    keep_logprobs: bool = True

    @classmethod
    def of(cls, path: str, body: dict, review_below: float | None) -> tuple[Reply, dict]:
        """The reply to the request `body` (as the client sent it) and the body to send upstream:
        with log-probabilities asked for when the answer is to be reviewed."""
        if review_below is None:
            return cls(body["model"]), body
        if path == CHAT_PATH:
            asked, upstream = body.get("logprobs") is True, {**body, "logprobs": True}
        else:
            asked = body.get("logprobs") is not None
            upstream = body if asked else {**body, "logprobs": 1}
        return cls(body["model"], review_below, asked), upstream

    def named(self, data: dict) -> dict:
        """`data` (an answer or a stream chunk) under the client's model name."""
        if "model" in data:
            data["model"] = self.model
        return data

    def review(self, data: dict, record: RequestRecord) -> None:
        """Log the answer's confidence and whether it needs review. A list of prompts is as
        confident as its least confident choice; an answer without log-probabilities gets NULL."""
        if self.review_below is None:
            return
        confidences = [confidence_of_choice(choice) for choice in data.get("choices") or []]
        if not confidences or None in confidences:
            return
        record.confidence = min(confidences)
        record.needs_review = int(record.confidence < self.review_below)

    def chunk(self, event: dict, gathered: dict[int, list[dict]]) -> dict:
        """A stream chunk under the client's model name, its log-probabilities added to `gathered`
        (choice index -> token entries, for `review_stream`) and taken out when not asked for."""
        self.named(event)
        if self.review_below is None:
            return event
        for choice in event.get("choices") or []:
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                entries = gathered.setdefault(choice.get("index", 0), [])
                if isinstance(logprobs.get("content"), list):
                    entries.extend(logprobs["content"])
                elif isinstance(logprobs.get("token_logprobs"), list):
                    entries.extend({"logprob": value} for value in logprobs["token_logprobs"])
            if not self.keep_logprobs and "logprobs" in choice:
                choice["logprobs"] = None
        return event

    def review_stream(self, gathered: dict[int, list[dict]], record: RequestRecord) -> None:
        """Review a stream from the log-probabilities its chunks carried."""
        self.review({"choices": [{"logprobs": {"content": gathered[i]}} for i in sorted(gathered)]}, record)

    def visible(self, data: dict) -> dict:
        """What the client sees of `data`: without the log-probabilities it did not ask for (a copy:
        the cache keeps them for the next review)."""
        if self.keep_logprobs:
            return data
        choices = [choice | {"logprobs": None} for choice in data.get("choices") or []]
        return data | {"choices": choices}


def merged(answers: list[dict]) -> dict:
    """One answer to a list of prompts from the answer to each (a single answer as it is): the first's
    fields, each choice indexed by its prompt's position in the list, the usage summed (none unless
    every answer has one)."""
    if len(answers) == 1:
        return answers[0]
    choices = [choice | {"index": i} for i, answer in enumerate(answers) for choice in answer["choices"]]
    usages = [answer.get("usage") for answer in answers]
    usage = {key: sum(u.get(key) or 0 for u in usages) for key in USAGE_COUNTS} if all(usages) else None
    return answers[0] | {"choices": choices, "usage": usage}
