"""The OpenAI-compatible gateway: validate, queue by priority, cache, route, proxy (streaming too), log.

Hot path: one shared keep-alive aiohttp session to the engines (half the CPU of httpx per request,
measured in benchmarks/gateway_overhead.py's notes), no database write (the request log's writer
thread does that), SSE bytes passed through as the engine sends them.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmops_lib.gateway.cache import ResponseCache
from llmops_lib.gateway.config import Deployment, GatewayConfig
from llmops_lib.gateway.queue import PriorityGate, QueueFull
from llmops_lib.gateway.routing import RouteTable
from llmops_lib.gateway.validation import ApiError, parse_body, validate
from llmops_lib.observe.gateway_metrics import GatewayMetrics
from llmops_lib.observe.request_log import RequestLog, RequestRecord

#: Seconds a client is told to wait when the queue is full.
RETRY_AFTER_S = 1
_UPSTREAM_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)
#: What a kept-alive connection the engine closed meanwhile looks like (llama-server closes them
#: after a stream and after 100 requests): nothing was answered, so the request is sent once more.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class UpstreamFailed(Exception):
    """An upstream refused, timed out or answered 5xx before anything was streamed to the client."""

    def __init__(self, deployment: Deployment, kind: str, detail: str) -> None:
        super().__init__(f"{deployment.name}: {detail}")
        self.deployment, self.kind = deployment, kind


def _authorized(request: Request, keys: list[str]) -> bool:
    if not keys:
        return True
    header = request.headers.get("authorization", "")
    token = header[7:] if header[:7].lower() == "bearer " else ""
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


def _error(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


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
        self.client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.log = RequestLog(self.config.request_log, capture_text=self.config.capture_text)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s, connect=min(5.0, self.config.timeout_s))
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout, auto_decompress=False
        )

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.log is not None:
            self.log.close()

    def finish(self, record: RequestRecord, t0: float, usage: dict | None = None) -> None:
        """Complete `record` (latency, tokens, cost), count it in the metrics, hand it to the log."""
        record.finished_at = time.time()
        record.latency_s = time.perf_counter() - t0
        model, deployment = record.gen_ai_request_model or "", record.deployment or ""
        if usage:
            record.gen_ai_usage_input_tokens = usage.get("prompt_tokens")
            record.gen_ai_usage_output_tokens = usage.get("completion_tokens")
        tokens_in, tokens_out = record.gen_ai_usage_input_tokens or 0, record.gen_ai_usage_output_tokens or 0
        if record.deployment in self.prices and not record.cache_hit and (record.http_status or 500) < 400:
            record.cost_usd = self.prices.cost(record.deployment, tokens_in, tokens_out)
        elif record.http_status and record.http_status < 400:
            record.cost_usd = 0.0
        m = self.metrics
        m.requests.labels(model, deployment, str(record.http_status)).inc()
        if record.http_status and record.http_status < 400:
            m.latency.labels(model, deployment).observe(record.latency_s)
            m.tokens.labels(model, deployment, "in").inc(tokens_in)
            m.tokens.labels(model, deployment, "out").inc(tokens_out)
            if record.ttft_s is not None:
                m.ttft.labels(model, deployment).observe(record.ttft_s)
                if tokens_out > 1:
                    m.tpot.labels(model, deployment).observe((record.latency_s - record.ttft_s) / (tokens_out - 1))
        if self.log is not None:
            self.log.submit(record)

    async def send(self, deployment: Deployment, path: str, body: dict) -> aiohttp.ClientResponse:
        """Send `body` to `deployment` (headers read, body not yet); 5xx and transport failures raise
        UpstreamFailed (safe to retry elsewhere: nothing has reached the client)."""
        if deployment.upstream_model:
            body = {**body, "model": deployment.upstream_model}
        assert self.client is not None
        url, data = deployment.url.rstrip("/") + path, json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        try:
            try:
                response = await self.client.post(url, data=data, headers=headers)
            except _STALE_CONNECTION:
                response = await self.client.post(url, data=data, headers=headers)
        except _UPSTREAM_FAILURES as exc:
            kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect"
            self.metrics.upstream_errors.labels(deployment.name, kind).inc()
            raise UpstreamFailed(deployment, kind, f"{type(exc).__name__}: {exc}") from None
        if response.status >= 500:
            response.release()
            self.metrics.upstream_errors.labels(deployment.name, "5xx").inc()
            raise UpstreamFailed(deployment, "5xx", f"HTTP {response.status}")
        return response

    async def proxy(self, request: Request, operation: str, path: str) -> Response:
        t0 = time.perf_counter()
        record = RequestRecord(
            request_id="req-" + uuid.uuid4().hex, started_at=time.time(), gen_ai_operation_name=operation
        )
        headers = {"x-request-id": record.request_id}
        acquired = False
        try:
            if not _authorized(request, self.config.api_keys):
                raise ApiError(
                    401,
                    "missing or wrong API key: send Authorization: Bearer <key>",
                    type="authentication_error",
                    code="invalid_api_key",
                )
            body = parse_body(await request.body())
            priority = body.pop("priority", None) or request.headers.get("x-llmops-priority", "interactive")
            body["priority"] = priority
            text = validate(
                operation, body, set(self.routes.routes), self.config.context_window, self.config.max_tokens_limit
            )
            del body["priority"]
            stream = bool(body.get("stream"))
            record.gen_ai_request_model, record.stream, record.priority = body["model"], int(stream), priority
            record.gen_ai_request_max_tokens, record.gen_ai_request_temperature = (
                body.get("max_tokens"),
                body.get("temperature"),
            )
            record.prompt = text
            cache_key = self.cache.key(path, body)
            if cache_key is not None:
                self.metrics.cache_lookups.labels(record.gen_ai_request_model).inc()
                cached = self.cache.get(cache_key)
                if cached is not None:
                    return self._cached(record, cached, headers, t0)
            candidates = self.routes.candidates(body["model"], text, request.headers.get("x-llmops-tag"))
            try:
                await self.gate.acquire(priority)
            except QueueFull:
                raise ApiError(
                    429,
                    "the gateway's queue is full: retry after the Retry-After seconds",
                    type="rate_limit_error",
                    code="queue_full",
                ) from None
            acquired = True
            response, deployment = await self._first_answer(candidates, path, body, record)
            record.deployment, record.upstream_url = deployment.name, deployment.url
            headers["x-llmops-deployment"] = deployment.name
            if stream and response.status < 400:
                acquired = False  # the stream releases the slot when it ends
                return StreamingResponse(
                    self._relay(response, record, t0), media_type="text/event-stream", headers=headers
                )
            try:
                content = await response.read()
            except _UPSTREAM_FAILURES as exc:
                raise ApiError(
                    502,
                    f"{deployment.name} failed while answering ({type(exc).__name__}): retry",
                    type="server_error",
                    code="upstream_failed",
                ) from None
            finally:
                response.release()
            record.http_status = response.status
            usage = None
            if response.status < 400:
                data = json.loads(content)
                usage = data.get("usage")
                record.gen_ai_response_model = data.get("model")
                record.ttft_s = time.perf_counter() - t0
                if self.config.capture_text:
                    record.completion = _completion_text(data)
                if cache_key is not None:
                    self.cache.put(cache_key, deployment.name, data)
            else:
                record.error_type, record.error = "upstream_4xx", content[:500].decode(errors="replace")
            self.finish(record, t0, usage)
            return Response(content, status_code=response.status, media_type="application/json", headers=headers)
        except ApiError as exc:
            record.http_status, record.error_type, record.error = exc.status, exc.code or exc.type, exc.message
            self.finish(record, t0)
            return _error(exc, headers | ({"retry-after": str(RETRY_AFTER_S)} if exc.status == 429 else {}))
        finally:
            if acquired:
                self.gate.release()

    def _cached(self, record: RequestRecord, cached: tuple[str, dict], headers: dict, t0: float) -> Response:
        record.cached_from, data = cached
        record.cache_hit, record.http_status, record.deployment = 1, 200, "cache"
        if self.config.capture_text:
            record.completion = _completion_text(data)
        record.ttft_s = time.perf_counter() - t0
        usage = data.get("usage") or {}
        self.metrics.cache_hits.labels(record.gen_ai_request_model).inc()
        self.metrics.cache_tokens_saved.labels(record.gen_ai_request_model).inc(usage.get("completion_tokens") or 0)
        self.finish(record, t0, usage)
        return JSONResponse(data, headers=headers | {"x-llmops-deployment": "cache", "x-llmops-cache": "hit"})

    async def _first_answer(
        self, candidates: list[Deployment], path: str, body: dict, record: RequestRecord
    ) -> tuple[aiohttp.ClientResponse, Deployment]:
        failures = []
        for deployment in candidates:
            try:
                return await self.send(deployment, path, body), deployment
            except UpstreamFailed as exc:
                failures.append(exc)
                record.fallback_from = record.fallback_from or deployment.name
        last = failures[-1]
        record.deployment = last.deployment.name
        raise ApiError(
            504 if last.kind == "timeout" else 502,
            "no upstream could answer: " + "; ".join(map(str, failures)),
            type="server_error",
            code="upstream_" + last.kind,
        )

    async def _relay(self, response: aiohttp.ClientResponse, record: RequestRecord, t0: float) -> AsyncIterator[bytes]:
        """Pass the engine's SSE bytes through; if it dies mid-stream, send an error event and end."""
        record.http_status = response.status
        tokens = 0
        usage = None
        tail = b""
        pieces: list[str] = []
        try:
            async for chunk in response.content.iter_any():
                if record.ttft_s is None:
                    record.ttft_s = time.perf_counter() - t0
                tokens += chunk.count(b"data: ") - chunk.count(b"data: [DONE]")
                tail = (tail + chunk)[-4096:]
                if self.config.capture_text:
                    pieces.append(chunk.decode(errors="replace"))
                yield chunk
            usage = _stream_usage(tail)
        except _UPSTREAM_FAILURES as exc:
            self.metrics.upstream_errors.labels(record.deployment or "", "mid_stream").inc()
            record.http_status, record.error_type = 502, "upstream_died_mid_stream"
            record.error = f"{record.deployment}: {type(exc).__name__}: {exc}"
            event = {
                "error": {
                    "message": f"the upstream deployment failed mid-stream ({type(exc).__name__}); the answer is incomplete: retry",
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_mid_stream",
                }
            }
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
        finally:
            response.release()
            self.gate.release()
            record.completion = _stream_text("".join(pieces)) if pieces else None
            if usage is None:
                usage = {"completion_tokens": max(tokens - 1, 0) if record.error_type is None else tokens}
            self.finish(record, t0, usage)


def _completion_text(data: dict) -> str | None:
    choices = data.get("choices") or [{}]
    choice = choices[0]
    return choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")


def _stream_text(events: str) -> str:
    """The generated text of a captured SSE stream (completions `text`, chat `delta.content`)."""
    pieces = []
    for line in events.splitlines():
        if line.startswith("data: {"):
            with contextlib.suppress(ValueError):
                for choice in json.loads(line[6:]).get("choices") or []:
                    pieces.append(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
    return "".join(pieces)


def _stream_usage(tail: bytes) -> dict | None:
    """The usage object of the last data event that has one (llama-server sends it in the final chunk)."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            with contextlib.suppress(ValueError):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    return usage
    return None


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway as an ASGI app (run it with `run_gateway` or `GatewayServer`)."""
    gateway = Gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="llmops gateway", lifespan=lifespan)
    app.state.gateway = gateway

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await gateway.proxy(request, "text_completion", "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await gateway.proxy(request, "chat", "/v1/chat/completions")

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        if not _authorized(request, config.api_keys):
            raise ApiError(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                type="authentication_error",
                code="invalid_api_key",
            )
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "owned_by": "llmops"} for name in gateway.routes.routes],
        }

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        if not _authorized(request, config.api_keys):
            raise ApiError(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                type="authentication_error",
                code="invalid_api_key",
            )
        body = parse_body(await request.body())
        if not isinstance(body.get("request_id"), str):
            raise ApiError(400, "request_id must be the x-request-id of an answered request", param="request_id")
        score = body.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ApiError(400, "score must be a number (e.g. 0..1 or -1/1)", param="score")
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise ApiError(400, "comment must be a string", param="comment")
        gateway.log.add_feedback(body["request_id"], float(score), comment)
        return {"ok": True}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        await _scrape_engines(gateway)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def admin(request: Request) -> None:
        if not _authorized(request, config.admin_keys):
            raise ApiError(
                401,
                "missing or wrong admin key: send Authorization: Bearer <admin key>",
                type="authentication_error",
                code="invalid_admin_key",
            )

    @app.get("/admin/routes")
    async def get_routes(request: Request) -> dict:
        admin(request)
        return gateway.routes.describe()

    @app.put("/admin/routes/{model}/weights")
    async def put_weights(model: str, request: Request) -> dict:
        admin(request)
        gateway.routes.set_weights(model, parse_body(await request.body()).get("weights"))
        return gateway.routes.describe()

    @app.post("/admin/routes/{model}/deployments")
    async def post_deployment(model: str, request: Request) -> dict:
        admin(request)
        gateway.routes.add_deployment(model, parse_body(await request.body()))
        return gateway.routes.describe()

    @app.delete("/admin/routes/{model}/deployments/{name}")
    async def delete_deployment(model: str, name: str, request: Request) -> dict:
        admin(request)
        gateway.routes.remove_deployment(model, name)
        return gateway.routes.describe()

    return app


async def _scrape_engines(gateway: Gateway) -> None:
    """Copy each deployment's engine metrics into the gateway's registry under the common names."""
    from llmops_lib.observe.engine_metrics import common_samples

    deployments = {d.name: d for route in gateway.routes.routes.values() for d in route.deployments}

    async def scrape(deployment: Deployment) -> None:
        try:
            async with gateway.client.get(
                deployment.url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response:
                if response.status != 200:
                    return
                text = await response.text()
        except _UPSTREAM_FAILURES:
            return
        for name, value in common_samples(text).items():
            gateway.metrics.engine.labels(deployment.name, name).set(value)

    await asyncio.gather(*(scrape(d) for d in deployments.values()))
