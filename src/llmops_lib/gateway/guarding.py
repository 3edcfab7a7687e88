"""The guards of the gateway's routes at work: the input checked before a request goes upstream, the
answer before the client sees it, a stream as it goes.

A route's `guards` (`guards.pipeline.Guards`) become a `GuardPipeline` per stage, built once when the
gateway starts. Input: every non-system message of a chat (a message of text parts as one text), each
prompt of a completions request; output: each choice's text. A block is a 400 naming the guard (param
`input` or `output`) and an audit event; a redaction replaces the text that goes upstream (input) or to
the client (output); a flag is logged. A request counts one verdict per guard and stage, the most
severe over its texts and checks, and the seconds its guards took. What a guard blocked is not kept in
the request log, even with text capture (its finding is, in the error message).

A stream is checked whenever `Route.stream_hold_chars` (H) characters have come since the last
check, and when it ends, on all the text so far; each check releases what it passed except its last
H characters, which wait for the next. So a guard that fires cuts the stream before anything it
blocked reaches the client, and text it matches that is up to H characters long (a canary token, an
API key) never reaches the client in part before it can match it whole; a redaction of such text
applies before it is sent. A redaction that reaches back into text the client already has cuts the
stream instead. The price: the client sees the text H to 2H characters late, in pieces of about H;
a stream of n characters costs about n / H checks (whole-text checks: the classifiers take ms each,
measured in benchmarks/guards.py). H = 0 checks every event and holds nothing back.

A pipeline whose warm-up check takes longer than `OFFLOAD_S` runs in a worker thread
(`asyncio.to_thread`, ~0.2 ms per hand-off measured here), so a classifier or Presidio does not stall
every other request on the event loop; a faster one (rules) runs inline, where the hand-off would cost
more than the check.
Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmops_lib.engines.sse import choice_text
from llmops_lib.gateway.config import Route
from llmops_lib.gateway.protocol import CHAT_PATH, ApiError
from llmops_lib.guards.pipeline import GuardPipeline, Guards, GuardSpec, Outcome
from llmops_lib.observe.gateway_metrics import GatewayMetrics
from llmops_lib.observe.request_log import RequestRecord

#: A pipeline slower than this on the warm-up text runs in a worker thread.
OFFLOAD_S = 0.001
#: What a pipeline is warmed up and timed on when the gateway starts: an ordinary request of ~400 chars.
WARMUP_TEXT = (
    "Could you summarise the attached quarterly report for the board? Keep it under two hundred words, "
    "mention revenue, costs and the hiring plan, and list three open questions we should raise with the "
    "finance team before the meeting on Thursday. Use plain English, no bullet points, and end with a "
    "one-sentence recommendation about whether to approve the budget for the new support office."
)
#: Verdicts from least to most severe: a request's verdict per guard is the most severe of its checks.
OUTCOMES = ("allowed", "flagged", "redacted", "blocked")


@dataclass
class Screening:
    """What one stage's guards found over one request: each guard's verdict, the seconds they took,
    and what blocked it (None: nothing)."""

    stage: str
    verdicts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    blocked_by: str | None = None
    why: str = ""

    def add(self, outcome: Outcome) -> None:
        self.seconds += outcome.seconds
        for name in outcome.verdicts:
            if name == outcome.blocked_by:
                verdict = "blocked"
            elif name in outcome.redacted:
                verdict = "redacted"
            else:
                verdict = "flagged" if name in outcome.flagged else "allowed"
            if name not in self.verdicts or OUTCOMES.index(verdict) > OUTCOMES.index(self.verdicts[name]):
                self.verdicts[name] = verdict
        if outcome.blocked_by is not None:
            self.block(outcome.blocked_by, outcome.reason)

    def block(self, name: str, why: str) -> None:
        """Note that guard `name` blocked this stage because of `why`."""
        self.blocked_by, self.why = name, why
        self.verdicts[name] = "blocked"

    def error(self) -> ApiError:
        """The OpenAI-style error of the block."""
        message = f"guard {self.blocked_by!r} blocked the {self.stage}: {self.why}"
        return ApiError(400, message, param=self.stage, type="guard_blocked", code=self.blocked_by)

    def report(self, record: RequestRecord, metrics: GatewayMetrics) -> None:
        """Put the verdicts into the request's log row and the metrics (once per request and stage)."""
        model = record.gen_ai_request_model or ""
        for name, verdict in self.verdicts.items():
            metrics.guard_verdicts.labels(model, name, self.stage, verdict).inc()
        metrics.guard_seconds.labels(self.stage).observe(self.seconds)
        flags = [name for name, verdict in self.verdicts.items() if verdict == "flagged"]
        if flags:
            known = record.guard_flags.split(",") if record.guard_flags else []
            record.guard_flags = ",".join(dict.fromkeys(known + flags))
        if self.blocked_by is not None:
            record.guard_blocked = self.blocked_by


class StageGuard:
    """One route's pipeline for one stage, run inline or in a worker thread (see `OFFLOAD_S`)."""

    def __init__(self, specs: Sequence[GuardSpec]) -> None:
        self.pipeline = GuardPipeline(specs)
        self.offload = False

    def warm_up(self) -> None:
        """Check the warm-up text (loading what the scanners load lazily), then time a second check
        to choose where checks run."""
        self.pipeline.check(WARMUP_TEXT)
        t0 = time.perf_counter()
        self.pipeline.check(WARMUP_TEXT)
        self.offload = time.perf_counter() - t0 > OFFLOAD_S

    async def check(self, text: str, screening: Screening) -> Outcome:
        outcome = await asyncio.to_thread(self.pipeline.check, text) if self.offload else self.pipeline.check(text)
        screening.add(outcome)
        return outcome


class RouteGuards:
    """The input and output guards of one route (either None when the route has none)."""

    def __init__(self, guards: Guards, stream_hold_chars: int = 0) -> None:
        self.input = StageGuard(guards.input) if guards.input else None
        self.output = StageGuard(guards.output) if guards.output else None
        self.stream_hold_chars = stream_hold_chars

    def stream(self) -> StreamGuard | None:
        """The guard of one relayed stream (None without output guards)."""
        return None if self.output is None else StreamGuard(self.output, self.stream_hold_chars)

    def warm_up(self) -> None:
        for stage in (self.input, self.output):
            if stage is not None:
                stage.warm_up()

    async def screen_input(self, path: str, body: dict, screening: Screening) -> dict:
        """`body` as it goes upstream: each input text checked and, where a guard redacted it, replaced.
        A block stops the checks (`screening.blocked_by`)."""
        assert self.input is not None
        if path == CHAT_PATH:
            messages = []
            for message in body["messages"]:
                if message.get("role") != "system" and screening.blocked_by is None:
                    text = _message_text(message)
                    outcome = await self.input.check(text, screening)
                    if outcome.text != text:
                        message = message | {"content": outcome.text}
                messages.append(message)
            return body | {"messages": messages}
        prompts = body["prompt"]
        checked = []
        for prompt in [prompts] if isinstance(prompts, str) else prompts:
            if screening.blocked_by is not None:
                break
            checked.append((await self.input.check(prompt, screening)).text)
        return body | {"prompt": checked[0] if isinstance(prompts, str) else checked}

    async def screen_answer(self, data: dict, screening: Screening) -> None:
        """Check each choice of an answer, its text redacted in place where a guard redacted it (and
        its token log-probabilities dropped: they would spell the redacted text out). A block stops
        the checks (`screening.blocked_by`)."""
        assert self.output is not None
        for choice in data.get("choices") or []:
            text = choice_text(choice)
            outcome = await self.output.check(text, screening)
            if screening.blocked_by is not None:
                return
            if outcome.text != text:
                set_choice_text(choice, outcome.text)
                if choice.get("logprobs") is not None:
                    choice["logprobs"] = None


class StreamGuard:
    """The output guard of one relayed stream (see the module's docstring): the text is checked
    every `hold` characters and at the end; what the client may see comes back."""

    def __init__(self, stage: StageGuard, hold: int) -> None:
        self.stage = stage
        self.hold = hold
        self.screening = Screening("output")
        self.text = ""  # everything the engine streamed so far
        self.checked_chars = 0  # how much of it the last check saw
        self.passed = ""  # that much as the guards let it through (redactions applied)
        self.sent = ""  # what the client got

    async def piece(self, piece: str, final: bool) -> str | None:
        """What the client may see now that the stream brought `piece` (`final`: and ended, so nothing
        is held back); None when the stream must be cut here: a guard blocked the text so far, or
        redacted text the client already has (`screening.blocked_by`)."""
        self.text += piece
        unchecked = len(self.text) - self.checked_chars
        if unchecked >= max(self.hold, 1) or (final and unchecked):
            outcome = await self.stage.check(self.text, self.screening)
            if outcome.blocked_by is not None:
                return None
            if not outcome.text.startswith(self.sent):
                self.screening.block(outcome.redacted[0], "it redacted text the client had already received")
                return None
            self.checked_chars, self.passed = len(self.text), outcome.text
        release = self.passed if final else self.passed[: max(0, len(self.passed) - self.hold)]
        visible = release[len(self.sent) :]
        self.sent += visible
        return visible


def route_guards(routes: Iterable[Route]) -> dict[str, RouteGuards]:
    """The guards of each route that has any, by model name, built and warmed up."""
    built = {
        route.model: RouteGuards(route.guards, route.stream_hold_chars)
        for route in routes
        if route.guards.input or route.guards.output
    }
    for guards in built.values():
        guards.warm_up()
    return built


def input_texts(path: str, body: dict) -> list[str]:
    """The prompt texts of a request body as `Request.prompt_texts` gives them: a chat's conversation as
    one text, each prompt of a completions request."""
    if path == CHAT_PATH:
        return ["\n".join(_message_text(message) for message in body["messages"])]
    return [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content or [])


def set_choice_text(choice: dict, text: str) -> None:
    """Put `text` where `choice_text` reads it: completions' `text`, chat's `message` or `delta` content."""
    if "text" in choice:
        choice["text"] = text
    else:
        choice.setdefault("message" if "message" in choice else "delta", {})["content"] = text
