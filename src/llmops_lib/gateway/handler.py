"""The gateway's request handling: render a prompt reference, admit, cache, route, queue by priority,
proxy (streaming too), answer under the client's model name (`answers.Reply`, with the review queue),
log.

`routes.py` hands each validated request to `Gateway.proxy`, which runs the steps in order; each
step either passes or raises `ApiError`, which becomes the answer and a request-log row.
Hot path: the engines are reached through `upstream.Upstreams` (one keep-alive session), a prompt
reference resolved from `prompts.PromptResolver`'s cache (MLflow only on a miss, in a thread), no
database write (the request log's writer thread does that), SSE events passed on as each arrives
(renamed: see `upstream.StreamReading`). A list of prompts on /v1/completions goes upstream as one
request per prompt, sent together (the engine batches them across its slots) and answered as one
(`answers.merged`: one choice per prompt, the usage summed, one log row; any failure fails it whole):
llama-server's usage for a list counts only the first prompt's tokens (measured). It cannot stream.
A route's guards (`guarding.py`) check the input before the cache and the queue, the answer before
it is cached, and a stream event by event; a block is answered, logged and audited.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from llmops_lib import audit
from llmops_lib.engines.sse import choice_text
from llmops_lib.errors import LLMOpsError
from llmops_lib.facts import tpot_s
from llmops_lib.gateway.access import Access
from llmops_lib.gateway.answers import Reply, merged
from llmops_lib.gateway.cache import ResponseCache
from llmops_lib.gateway.config import ApiKey, Deployment, GatewayConfig
from llmops_lib.gateway.guarding import RouteGuards, Screening, StreamGuard, input_texts, route_guards
from llmops_lib.gateway.prompts import PromptResolver, Request
from llmops_lib.gateway.protocol import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackRequest,
)
from llmops_lib.gateway.queue import PriorityGate, QueueFull
from llmops_lib.gateway.routing import RouteTable
from llmops_lib.gateway.upstream import UPSTREAM_FAILURES, StreamCut, StreamReading, Upstreams
from llmops_lib.guards.pii import NAMED, Pii
from llmops_lib.observe.gateway_metrics import GatewayMetrics
from llmops_lib.observe.request_log import RequestLog, RequestRecord

#: Seconds a client is told to wait when the queue is full.
RETRY_AFTER_S = 1
#: A conservative characters-per-token estimate: prompts longer than this many characters per token
#: of context window are refused before they reach an engine.
CHARS_PER_TOKEN = 4
#: The proxied paths and the OpenTelemetry operation name each is logged under.
OPERATIONS = {COMPLETIONS_PATH: "text_completion", CHAT_PATH: "chat"}


class RelayedStream(StreamingResponse):
    """An SSE stream relayed from an engine, whose `end` runs once it is over, however it ends.

    Not the generator's own `finally`, which a generator that never started never runs: Starlette
    drops the stream unstarted when `send` fails on its first message (how an ASGI 2.4 server says
    the client has gone), and the priority slot would then be lost for good.
    """

    def __init__(self, chunks: AsyncIterator[bytes], end: Callable[[], None], headers: dict[str, str]) -> None:
        super().__init__(chunks, media_type="text/event-stream", headers=headers)
        self.end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.end()


class Gateway:
    """The state behind one app: routes, cache, priority gate, upstream client, log, metrics."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.routes = RouteTable(config.routes)
        self.cache = ResponseCache(config.cache_size, config.cache_ttl_s)
        self.metrics = GatewayMetrics()
        self.gate = PriorityGate(
            config.concurrency, config.queue_size, lambda p, n: self.metrics.queue_depth.labels(p).set(n)
        )
        self.prices = config.price_table()
        self.log: RequestLog | None = None
        self.upstreams = Upstreams(self.metrics, config.timeout_s)
        self.prompts = PromptResolver(config.prompt_splits, config.prompt_cache_ttl_s)
        self.guards: dict[str, RouteGuards] = {}
        self.access = Access(config.keys)

    async def start(self) -> None:
        await self.prompts.start()  # first: a split naming a missing prompt stops the start before anything opens
        # built and warmed up once, in a thread: a classifier loads (or trains) before the first request
        self.guards = await asyncio.to_thread(route_guards, self.config.routes)
        redact = None
        if self.config.capture_text:  # captured text is redacted before it is logged. Presidio loads now, not
            # under the first requests (its writer thread would hold the GIL while loading); NER only when asked
            entities = self.config.redact_entities
            pii = Pii(entities, ner=entities is None or bool(set(entities) & set(NAMED)))
            await asyncio.to_thread(pii.scan, "warm-up")
            redact = pii.redact
        self.log = RequestLog(
            self.config.request_log,
            capture_text=self.config.capture_text,
            redact=redact,
            retention_days=self.config.retention_days,
        )
        await self.upstreams.start()

    async def stop(self) -> None:
        await self.upstreams.stop()
        if self.log is not None:
            self.log.close()

    # -- one proxied request, step by step ---------------------------------------------------------

    async def proxy(
        self,
        path: str,
        request: CompletionRequest | ChatCompletionRequest,
        priority: str | None,
        tag: str | None,
        user: str | None = None,
        key: ApiKey | None = None,
    ) -> Response:
        """Answer one validated completions or chat request (`priority`, `tag` and `user` from the headers,
        `key` the API key it came with, checked by `routes.RequireKey`)."""
        t0, record = time.perf_counter(), self.new_record(OPERATIONS[path])
        headers = {"x-request-id": record.request_id}
        record.api_key_id = key.id if key else None
        record.user = request.user or user or record.api_key_id
        try:
            request = await self._render(request, user, record)
            self.access.admit(key, request.model)
            body, text = self._admit(request, priority, record)
            guards = self.guards.get(body["model"])
            if guards is not None and guards.input is not None:
                body = await self._screen_input(path, body, guards, record)
            cache_key = self.cache.key(path, body)
            reply, body = Reply.of(path, body, self.routes.route(body["model"]).review_below)
            cached = self._lookup(cache_key, record)
            if cached is not None:
                return self._cached(record, cached, reply, headers, t0)
            candidates = self.routes.candidates(request.model, text, tag)
            waiting = time.perf_counter()
            await self._acquire(record.priority)
            record.queue_s = time.perf_counter() - waiting
            relaying = False
            try:
                if isinstance(prompts := body.get("prompt"), list) and len(prompts) > 1:
                    answers, deployment = await self._ask_each(candidates, path, body, record)
                    return await self._answer(answers, deployment, record, cache_key, reply, headers, t0)
                response, deployment = await self.upstreams.first_answer(candidates, path, body, record)
                if request.stream and response.status < 400:
                    relaying = True  # the relayed stream releases the slot when it is over
                    record.http_status = response.status
                    screen = None if guards is None else guards.stream()
                    reading = StreamReading(self.config.capture_text, reply, screen)
                    return RelayedStream(
                        self._relay(response, record, reading, t0),
                        lambda: self._end_relay(response, record, reading, t0),
                        headers | {"x-llmops-deployment": deployment.name},
                    )
                answer = await _read(response, deployment)
                return await self._answer([answer], deployment, record, cache_key, reply, headers, t0)
            finally:
                if not relaying:
                    self.gate.release()
        except ApiError as exc:
            return self.refuse(record, exc, t0, headers)

    def new_record(self, operation: str) -> RequestRecord:
        return RequestRecord(
            request_id="req-" + uuid.uuid4().hex, started_at=time.time(), gen_ai_operation_name=operation
        )

    def refuse(self, record: RequestRecord, exc: ApiError, t0: float, headers: dict[str, str]) -> JSONResponse:
        """Log and count a refused request, and answer with its error body."""
        record.http_status, record.error_type, record.error = exc.status, exc.code or exc.type, exc.message
        self.finish(record, t0)
        if exc.status == 429:
            headers = headers | {"retry-after": str(exc.retry_after or RETRY_AFTER_S)}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def _render(self, request: Request, user: str | None, record: RequestRecord) -> Request:
        """A request by prompt reference, with the registered prompt rendered in (see `prompts.py`); the
        A/B arm is chosen by the body's `user`, else the x-llmops-user header, else the request id."""
        reference = request.reference()
        if reference is None:
            return request
        rendered, served = await self.prompts.serve(request, reference, request.user or user or record.request_id)
        record.prompt_name, record.prompt_version = served.version.name, served.version.version
        record.prompt_alias = served.alias
        return rendered

    def _admit(
        self, request: CompletionRequest | ChatCompletionRequest, priority: str | None, record: RequestRecord
    ) -> tuple[dict, str]:
        """What the model alone cannot check: a known model, max_tokens within the limit, prompts that
        fit the context window, a list of prompts not streamed. Returns the body to send upstream and
        the (longest) prompt text."""
        if request.model is None:
            raise ApiError(
                400,
                "model is required (a prompt reference may leave it out when its version's model_config names one)",
                param="model",
            )
        if request.model not in self.routes.routes:
            raise ApiError(
                404,
                f"unknown model {request.model!r}: GET /v1/models lists {sorted(self.routes.routes)}",
                param="model",
                code="model_not_found",
            )
        limit = self.config.max_tokens_limit
        if request.max_tokens is not None and request.max_tokens > limit:
            raise ApiError(
                400,
                f"max_tokens must be an integer between 1 and {limit}, got {request.max_tokens}",
                param="max_tokens",
            )
        texts = request.prompt_texts()
        if request.stream and len(texts) > 1:
            raise ApiError(
                400,
                f"a stream answers one prompt, got a list of {len(texts)}: send the list without stream, "
                "or one streamed request per prompt",
                param="prompt",
            )
        text = max(texts, key=len)
        estimate = len(text) // CHARS_PER_TOKEN
        if estimate + (request.max_tokens or 0) > self.config.context_window:
            raise ApiError(
                400,
                f"the prompt (about {estimate} tokens) plus max_tokens exceeds the context window of "
                f"{self.config.context_window} tokens: shorten it",
                param="messages" if isinstance(request, ChatCompletionRequest) and not record.prompt_name else "prompt",
                code="context_length_exceeded",
            )
        record.gen_ai_request_model, record.stream = request.model, int(request.stream)
        record.priority = request.priority or priority or "interactive"
        # null means "the default" in OpenAI's API: send only what the client set to a value
        body = request.model_dump(exclude_unset=True, exclude_none=True, exclude={"priority"})
        # Without max_tokens an engine generates until its context is full: the limit caps it.
        body.setdefault("max_tokens", limit)
        record.gen_ai_request_max_tokens, record.gen_ai_request_temperature = body["max_tokens"], request.temperature
        record.prompt = _logged_prompt(texts)
        return body, text

    async def _screen_input(self, path: str, body: dict, guards: RouteGuards, record: RequestRecord) -> dict:
        """The body to send upstream, its input checked by the route's guards (redactions applied).

        Raises:
            ApiError: 400 naming the guard that blocked it.
        """
        screening = Screening("input")
        body = await guards.screen_input(path, body, screening)
        if screening.blocked_by is not None:
            record.prompt = None  # what a guard blocked (a secret, say) is not kept: its finding is
        elif "redacted" in screening.verdicts.values():
            record.prompt = _logged_prompt(input_texts(path, body))
        await self._judged(screening, record)
        return body

    async def _judged(self, screening: Screening, record: RequestRecord) -> None:
        """Log and count what a stage's guards found; a block is audited, then raised.

        Raises:
            ApiError: 400 naming the guard that blocked; 500 if the block could not be audited.
        """
        screening.report(record, self.metrics)
        if screening.blocked_by is not None:
            await self._audit_block(screening, record)
            raise screening.error()

    async def _audit_block(self, screening: Screening, record: RequestRecord) -> None:
        """Put a block into the audit log (in a thread: it writes and hashes).

        Raises:
            ApiError: 500 when the audit log cannot record it (the request is refused all the same).
        """
        try:
            await asyncio.to_thread(
                audit.record,
                "guard.block",
                model=record.gen_ai_request_model,
                guard=screening.blocked_by,
                stage=screening.stage,
                request_id=record.request_id,
                api_key_id=record.api_key_id,  # who sent it (the key's id, never the key)
            )
        except LLMOpsError as exc:
            raise ApiError(
                500,
                f"guard {screening.blocked_by!r} blocked the {screening.stage}, and the audit log could not record "
                f"it: {exc}",
                param=screening.stage,
                type="server_error",
                code="audit_failed",
            ) from None

    def _lookup(self, cache_key: str | None, record: RequestRecord) -> tuple[str, dict] | None:
        if cache_key is None:
            return None
        self.metrics.cache_lookups.labels(record.gen_ai_request_model).inc()
        return self.cache.get(cache_key)

    async def _acquire(self, priority: str) -> None:
        try:
            await self.gate.acquire(priority)
        except QueueFull:
            raise ApiError(
                429,
                "the gateway's queue is full: retry after the Retry-After seconds",
                type="rate_limit_error",
                code="queue_full",
            ) from None

    async def _ask_each(
        self, candidates: list[Deployment], path: str, body: dict, record: RequestRecord
    ) -> tuple[list[tuple[int, bytes]], Deployment]:
        """Send each prompt of a list as a request of its own, all at once; their answers in list order
        and the deployment of the first. All are waited for, so none is still running (and writing to
        `record`) when one failure fails the request."""

        async def ask(prompt: str) -> tuple[tuple[int, bytes], Deployment]:
            response, deployment = await self.upstreams.first_answer(
                candidates, path, body | {"prompt": prompt}, record
            )
            return await _read(response, deployment), deployment

        asked = await asyncio.gather(*(ask(prompt) for prompt in body["prompt"]), return_exceptions=True)
        for outcome in asked:
            if isinstance(outcome, BaseException):
                raise outcome
        return [answer for answer, _ in asked], asked[0][1]

    async def _answer(
        self,
        answers: list[tuple[int, bytes]],
        deployment: Deployment,
        record: RequestRecord,
        cache_key: str | None,
        reply: Reply,
        headers: dict[str, str],
        t0: float,
    ) -> Response:
        """Answer with the engine's (status, body) for the request, or for each prompt of a list: merged,
        reviewed, checked by the route's output guards, cached, logged and passed on under the client's
        model name; an engine's refusal (the first, for a list) passed on as it is.

        Raises:
            ApiError: 400 naming the output guard that blocked the answer.
        """
        headers["x-llmops-deployment"] = deployment.name
        status, content = next((answer for answer in answers if answer[0] >= 400), answers[0])
        record.http_status = status
        if status < 400:
            data = merged([json.loads(content) for _, content in answers])
            usage = data.get("usage")
            record.gen_ai_response_model = data.get("model")
            reply.named(data)
            record.ttft_s = time.perf_counter() - t0
            reply.review(data, record)
            guards = self.guards.get(reply.model)
            if guards is not None and guards.output is not None:
                if usage:  # logged with a blocked answer too: its tokens were spent
                    record.gen_ai_usage_input_tokens = usage.get("prompt_tokens")
                    record.gen_ai_usage_output_tokens = usage.get("completion_tokens")
                screening = Screening("output")
                await guards.screen_answer(data, screening)
                await self._judged(screening, record)
            if self.config.capture_text:
                record.completion = _completion_text(data)
            if cache_key is not None:
                self.cache.put(cache_key, deployment.name, data)
            self.finish(record, t0, usage)
            return JSONResponse(reply.visible(data), status_code=status, headers=headers)
        record.error_type, record.error = "upstream_4xx", content[:500].decode(errors="replace")
        self.finish(record, t0)
        return Response(content, status_code=status, media_type="application/json", headers=headers)

    def _cached(
        self, record: RequestRecord, cached: tuple[str, dict], reply: Reply, headers: dict, t0: float
    ) -> Response:
        record.cached_from, data = cached
        record.cache_hit, record.http_status, record.deployment = 1, 200, "cache"
        if self.config.capture_text:
            record.completion = _completion_text(data)
        reply.review(data, record)
        record.ttft_s = time.perf_counter() - t0
        usage = data.get("usage") or {}
        self.metrics.cache_hits.labels(record.gen_ai_request_model).inc()
        self.metrics.cache_tokens_saved.labels(record.gen_ai_request_model).inc(usage.get("completion_tokens") or 0)
        self.finish(record, t0, usage)
        return JSONResponse(
            reply.visible(data), headers=headers | {"x-llmops-deployment": "cache", "x-llmops-cache": "hit"}
        )

    async def _relay(
        self, response: aiohttp.ClientResponse, record: RequestRecord, reading: StreamReading, t0: float
    ) -> AsyncIterator[bytes]:
        """Pass the engine's SSE events on (renamed); if it dies mid-stream, send an error event and end."""
        try:
            async for chunk in response.content.iter_any():
                if record.ttft_s is None:
                    record.ttft_s = time.perf_counter() - t0
                events = reading.feed(chunk) if reading.screen is None else await reading.feed_screened(chunk)
                if events:
                    yield events
            if events := reading.close() if reading.screen is None else await reading.feed_screened(None):
                yield events
        except StreamCut as cut:
            response.close()  # stop reading: the engine sees the client gone and stops generating
            if cut.passed:
                yield cut.passed
            yield await self._cut(reading.screen, record)
        except UPSTREAM_FAILURES as exc:
            self.metrics.upstream_errors.labels(record.deployment or "", "mid_stream").inc()
            record.http_status, record.error_type = 502, "upstream_died_mid_stream"
            record.error = f"{record.deployment}: {type(exc).__name__}: {exc}"
            error = ApiError(
                502,
                f"the upstream deployment failed mid-stream ({type(exc).__name__}); the answer is incomplete: retry",
                type="server_error",
                code="upstream_mid_stream",
            )
            yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"

    async def _cut(self, screen: StreamGuard | None, record: RequestRecord) -> bytes:
        """The error event and `[DONE]` that end a stream an output guard cut, logged and audited."""
        assert screen is not None
        screening = screen.screening
        error = screening.error()
        try:
            await self._audit_block(screening, record)
        except ApiError as failed:
            error = failed
        record.http_status, record.error_type, record.error = error.status, error.code or error.type, error.message
        return b"data: " + json.dumps(error.body()).encode() + b"\n\ndata: [DONE]\n\n"

    def _end_relay(
        self, response: aiohttp.ClientResponse, record: RequestRecord, reading: StreamReading, t0: float
    ) -> None:
        """A relayed stream is over (to its end, failed, or dropped by a client that left): give the
        engine connection and the priority slot back, and log what was relayed."""
        response.release()
        self.gate.release()
        record.completion = reading.text() if self.config.capture_text else None
        record.gen_ai_response_model = reading.upstream_model
        reading.review(record)
        if reading.screen is not None:
            reading.screen.screening.report(record, self.metrics)
        self.finish(record, t0, reading.usage or {"completion_tokens": reading.text_events})

    # -- bookkeeping -------------------------------------------------------------------------------

    def finish(self, record: RequestRecord, t0: float, usage: dict | None = None) -> None:
        """Complete `record` (latency, tokens, cost), count it in the metrics, hand it to the log."""
        record.finished_at = time.time()
        record.latency_s = time.perf_counter() - t0
        if usage:
            record.gen_ai_usage_input_tokens = usage.get("prompt_tokens")
            record.gen_ai_usage_output_tokens = usage.get("completion_tokens")
            if not record.cache_hit:  # a key's token quota counts what its answers cost the engines
                tokens = (record.gen_ai_usage_input_tokens or 0) + (record.gen_ai_usage_output_tokens or 0)
                self.access.spend(record.api_key_id, tokens)
        answered = (record.http_status or 500) < 400
        if answered:
            priced = record.deployment in self.prices and not record.cache_hit
            record.cost_usd = (
                self.prices.cost(
                    record.deployment, record.gen_ai_usage_input_tokens or 0, record.gen_ai_usage_output_tokens or 0
                )
                if priced
                else 0.0
            )
        self._count(record, answered)
        if self.log is not None:
            self.log.submit(record)

    def _count(self, record: RequestRecord, answered: bool) -> None:
        m, model, deployment = self.metrics, record.gen_ai_request_model or "", record.deployment or ""
        m.requests.labels(model, deployment, str(record.http_status)).inc()
        if not answered:
            return
        tokens_out = record.gen_ai_usage_output_tokens or 0
        m.latency.labels(model, deployment).observe(record.latency_s)
        m.tokens.labels(model, deployment, "in").inc(record.gen_ai_usage_input_tokens or 0)
        m.tokens.labels(model, deployment, "out").inc(tokens_out)
        if record.ttft_s is not None:
            m.ttft.labels(model, deployment).observe(record.ttft_s)
            if tokens_out > 1:
                m.tpot.labels(model, deployment).observe(tpot_s(record.latency_s, record.ttft_s, tokens_out))

    # -- the other endpoints -----------------------------------------------------------------------

    async def scrape_engines(self) -> None:
        """Copy each deployment's engine metrics into the gateway's registry under the common names."""
        await self.upstreams.scrape_metrics(d for route in self.routes.routes.values() for d in route.deployments)

    async def feedback(self, feedback: FeedbackRequest) -> None:
        """Record a rating of an answered request.

        Raises:
            ApiError: 404 for a request id the log has never seen, 503 without a request log.
        """
        if self.log is None:
            raise ApiError(
                503, "the gateway has no request log to keep feedback in: start it first", type="server_error"
            )
        log = self.log

        def logged() -> bool:
            log.flush()  # a request answered a moment ago may still be in the writer's queue
            return log.has_request(feedback.request_id)

        if not await asyncio.to_thread(logged):
            raise ApiError(
                404,
                f"no request {feedback.request_id!r} in the request log: send the x-request-id of an answered request",
                param="request_id",
                code="request_not_found",
            )
        self.log.add_feedback(feedback.request_id, feedback.score, feedback.comment)


async def _read(response: aiohttp.ClientResponse, deployment: Deployment) -> tuple[int, bytes]:
    """A non-streamed answer's status and whole body; a failure while reading it is a 502."""
    try:
        return response.status, await response.read()
    except UPSTREAM_FAILURES as exc:
        raise ApiError(
            502,
            f"{deployment.name} failed while answering ({type(exc).__name__}): retry",
            type="server_error",
            code="upstream_failed",
        ) from None
    finally:
        response.release()


def _logged_prompt(texts: list[str]) -> str:
    """A request's prompt as the log keeps it: the text, or the JSON list of a list's texts."""
    return texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False)


def _completion_text(data: dict) -> str | None:
    """The answer's text; for a list of prompts, the JSON list of the choices' texts."""
    choices = data.get("choices") or [{}]
    if len(choices) > 1:
        return json.dumps([choice_text(choice) for choice in choices], ensure_ascii=False)
    return choice_text(choices[0]) if choices[0] else None
