"""The gateway's side towards the engines: one keep-alive session, a send retried once on a stale
connection, fail-over between the candidates of a route, what each engine says about its chat
template, its metrics under the common names, and what a relayed stream reports (and, on a route
with output guards, lets through).

One shared aiohttp session: half the CPU of httpx per request (measured in
benchmarks/gateway_overhead.py's notes).
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

import aiohttp

from llmops_lib.engines.metrics import common_samples
from llmops_lib.engines.sse import DONE, SSEDecoder, choice_text, decode
from llmops_lib.errors import LLMOpsError
from llmops_lib.gateway.answers import Reply
from llmops_lib.gateway.config import Deployment
from llmops_lib.gateway.guarding import StreamGuard, set_choice_text
from llmops_lib.gateway.protocol import CHAT_PATH, ApiError
from llmops_lib.models import inspect_gguf
from llmops_lib.observe.gateway_metrics import GatewayMetrics
from llmops_lib.observe.request_log import RequestRecord

UPSTREAM_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)
#: What a kept-alive connection the engine closed meanwhile looks like (llama-server closes them
#: after a stream and after 100 requests): nothing was answered, so the request is sent once more.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
#: What llama-server falls back to when neither the model file nor its command line gives a chat
#: template (ChatML's turn marker): a model not trained on it answers chat with junk.
_FALLBACK_TEMPLATE_MARK = "<|im_start|>"


class UpstreamFailed(Exception):
    """An upstream refused, timed out or answered 5xx before anything was streamed to the client."""

    def __init__(self, deployment: Deployment, kind: str, detail: str) -> None:
        super().__init__(f"{deployment.name}: {detail}")
        self.deployment, self.kind = deployment, kind


class Upstreams:
    """The engines behind the routes, as the gateway talks to them."""

    def __init__(self, metrics: GatewayMetrics, timeout_s: float) -> None:
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        #: (deployment name, url) -> whether its engine has a chat template meant for its model
        self._chat_templates: dict[tuple[str, str], bool] = {}

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, connect=min(5.0, self.timeout_s))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout, auto_decompress=False
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ApiError(
                503, "the gateway has not started: run it with run_gateway or GatewayServer", type="server_error"
            )
        return self._session

    async def send(self, deployment: Deployment, path: str, body: dict) -> aiohttp.ClientResponse:
        """Send `body` to `deployment` (headers read, body not yet); 5xx and transport failures raise
        UpstreamFailed (safe to retry elsewhere: nothing has reached the client)."""
        if deployment.upstream_model:
            body = {**body, "model": deployment.upstream_model}
        url, data = deployment.url.rstrip("/") + path, json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        try:
            try:
                response = await self.client.post(url, data=data, headers=headers)
            except _STALE_CONNECTION:
                response = await self.client.post(url, data=data, headers=headers)
        except UPSTREAM_FAILURES as exc:
            kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect"
            self.metrics.upstream_errors.labels(deployment.name, kind).inc()
            raise UpstreamFailed(deployment, kind, f"{type(exc).__name__}: {exc}") from None
        if response.status >= 500:
            response.release()
            self.metrics.upstream_errors.labels(deployment.name, "5xx").inc()
            raise UpstreamFailed(deployment, "5xx", f"HTTP {response.status}")
        return response

    async def first_answer(
        self, candidates: list[Deployment], path: str, body: dict, record: RequestRecord
    ) -> tuple[aiohttp.ClientResponse, Deployment]:
        """The first candidate that answers (the chosen deployment, then the fallback); chat goes
        only to deployments with a chat template."""
        failures = []
        for deployment in candidates:
            if path == CHAT_PATH:
                await self.require_chat_template(body["model"], deployment)
            try:
                response = await self.send(deployment, path, body)
            except UpstreamFailed as exc:
                failures.append(exc)
                record.fallback_from = record.fallback_from or deployment.name
                continue
            record.deployment, record.upstream_url = deployment.name, deployment.url
            return response, deployment
        last = failures[-1]
        record.deployment = last.deployment.name
        raise ApiError(
            504 if last.kind == "timeout" else 502,
            "no upstream could answer: " + "; ".join(map(str, failures)),
            type="server_error",
            code="upstream_" + last.kind,
        )

    async def require_chat_template(self, model: str, deployment: Deployment) -> None:
        """Refuse chat for a deployment whose model has no chat template: the engine would silently
        format the conversation in a template the model never saw and answer 200 with junk. The
        verdict is kept per deployment (name and URL)."""
        key = (deployment.name, deployment.url)
        if key not in self._chat_templates:
            verdict = await self._has_chat_template(deployment)
            if verdict is None:
                return  # unreachable now: the send fails over, and the next chat request asks again
            self._chat_templates[key] = verdict
        if not self._chat_templates[key]:
            raise ApiError(
                400,
                f"model {model!r} (deployment {deployment.name}) has no chat template: send a prompt to "
                "/v1/completions, or route this model to a chat model",
                param="messages",
                code="no_chat_template",
            )

    async def _has_chat_template(self, deployment: Deployment) -> bool | None:
        """Whether the engine at `deployment` chats with a template meant for its model.

        llama-server's /props names the model file and the template in use: the file carries one,
        or the command line gave one (anything but llama-server's ChatML fallback). An engine without
        /props (vLLM refuses chat without a template itself) or a model file not on this machine
        counts as yes: the engine decides. None when the engine cannot be reached.
        """
        try:
            async with self.client.get(
                deployment.url.rstrip("/") + "/props", timeout=aiohttp.ClientTimeout(total=5.0)
            ) as response:
                if response.status != 200:
                    return True
                props = await response.json(content_type=None)
        except UPSTREAM_FAILURES:
            return None
        except ValueError:
            return True
        model_path, template = props.get("model_path"), props.get("chat_template") or ""
        if not isinstance(model_path, str) or not Path(model_path).is_file():
            return True
        try:
            in_file = (await asyncio.to_thread(inspect_gguf, model_path)).has_chat_template
        except LLMOpsError:
            return True
        return in_file or _FALLBACK_TEMPLATE_MARK not in template

    async def scrape_metrics(self, deployments: Iterable[Deployment]) -> None:
        """Copy each deployment's engine metrics into the gateway's registry under the common names."""

        async def scrape(deployment: Deployment) -> None:
            try:
                async with self.client.get(
                    deployment.url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=2.0)
                ) as response:
                    if response.status != 200:
                        return
                    text = await response.text()
            except UPSTREAM_FAILURES:
                return
            for name, value in common_samples(text).items():
                self.metrics.engine.labels(deployment.name, name).set(value)

        await asyncio.gather(*(scrape(d) for d in {d.name: d for d in deployments}.values()))


class StreamCut(Exception):
    """An output guard stopped a stream: `passed` holds the events before the one it stopped at."""

    def __init__(self, passed: bytes) -> None:
        super().__init__("an output guard cut the stream")
        self.passed = passed


class StreamReading:
    """What the gateway learns from a stream it relays (the usage report the engine sends in its
    last chunk, the number of events that carried text, the engine's model name, the log-probabilities
    to review and, with capture, the text), and the events re-framed for the client as `reply` shapes
    them (SSE comments and `event:`/`id:` fields, which OpenAI streams do not use, are dropped).
    With a `screen` (the route's output guards), the text of each event is checked before it is passed
    on: `feed_screened` instead of `feed` and `close`."""

    def __init__(self, capture_text: bool, reply: Reply, screen: StreamGuard | None = None) -> None:
        self.capture_text = capture_text
        self.reply = reply
        self.screen = screen
        #: choice index -> the token log-probability entries its chunks carried
        self.gathered: dict[int, list[dict]] = {}
        self.decoder = SSEDecoder()
        self.usage: dict | None = None
        self.text_events = 0
        self.pieces: list[str] = []
        self.upstream_model: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Read `chunk`; the bytes of the events it completes, to pass on."""
        return b"".join(self._read(payload) for payload in self.decoder.feed(chunk))

    def close(self) -> bytes:
        """The bytes of an event the stream ended without a blank line after."""
        return b"".join(self._read(payload) for payload in self.decoder.close())

    async def feed_screened(self, chunk: bytes | None) -> bytes:
        """`feed` (`close` for None: the stream ended), each event's text first let through the screen.

        Raises:
            StreamCut: a guard stopped the stream at one of the events (the events before it passed).
        """
        assert self.screen is not None
        passed = []
        for payload in self.decoder.feed(chunk) if chunk is not None else self.decoder.close():
            event = _decoded(payload)
            if event is None and payload.strip() != DONE:
                continue  # what the guards cannot read does not reach the client
            for choice in event.get("choices") or [] if event is not None else []:
                text, final = choice_text(choice), choice.get("finish_reason") is not None
                if text or final:
                    visible = await self.screen.piece(text, final)
                    if visible is None:
                        raise StreamCut(b"".join(passed))
                    if visible != text:
                        set_choice_text(choice, visible)
            passed.append(self._relayed(payload, event))
        return b"".join(passed)

    def _read(self, payload: str) -> bytes:
        return self._relayed(payload, _decoded(payload))

    def _relayed(self, payload: str, event: dict | None) -> bytes:
        """Learn from one event (`payload` decoded; None: not a JSON chunk) and frame it for the client."""
        if event is None:
            return _frame(payload)  # [DONE], or not ours to judge: the client gets it as the engine sent it
        self.usage = event.get("usage") or self.usage
        for choice in event.get("choices") or []:
            text = choice_text(choice)
            if text:
                self.text_events += 1
                if self.capture_text:
                    self.pieces.append(text)
        self.upstream_model = self.upstream_model or event.get("model")
        event = self.reply.chunk(event, self.gathered)
        return _frame(json.dumps(event, ensure_ascii=False, separators=(",", ":")))

    def review(self, record: RequestRecord) -> None:
        """Log the relayed answer's confidence, on a route with a review threshold."""
        self.reply.review_stream(self.gathered, record)

    def text(self) -> str | None:
        return "".join(self.pieces) if self.pieces else None


def _decoded(payload: str) -> dict | None:
    """The JSON object of an event; None for [DONE] and for data that is not an OpenAI chunk."""
    try:
        return decode(payload)
    except ValueError:
        return None


def _frame(payload: str) -> bytes:
    """One server-sent event carrying `payload` as its data."""
    return "".join(f"data: {line}\n" for line in payload.split("\n")).encode() + b"\n"
