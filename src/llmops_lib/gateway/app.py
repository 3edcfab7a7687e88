"""The gateway as an ASGI app: the routes (`routes.py`) over one `Gateway` handler (`handler.py`).

Every refusal leaves as OpenAI's error body `{"error": {message, type, param, code}}`: a body that
fails its pydantic model (one `RequestValidationError` handler names the field), an `ApiError`
raised by a dependency (API keys) or the handler, and Starlette's own 404/405. A refused
completions or chat request is logged and counted like an answered one.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llmops_lib.gateway.config import GatewayConfig
from llmops_lib.gateway.handler import OPERATIONS, Gateway
from llmops_lib.gateway.protocol import REFERENCE_TAG, ApiError
from llmops_lib.gateway.routes import router

#: Pydantic's location steps that name a member of a union (`str`, `list[str]`), not a field.
_TYPE_STEPS = {"str", "int", "float", "bool", "list", "dict", "none"}


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

    app = FastAPI(
        title="llmops gateway",
        summary="OpenAI-compatible gateway: routing, fallback, priority queue, cache, request log.",
        lifespan=lifespan,
        strict_content_type=False,  # a JSON body without a Content-Type is read as JSON, as it always was
    )
    app.state.gateway = gateway
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.openapi = lambda: _openapi(app)
    return app


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _refusal(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _refusal(request, api_error(exc.errors()))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _refusal(request, ApiError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}"))


def _refusal(request: Request, exc: ApiError) -> JSONResponse:
    """The error body; a refused completions or chat request also gets a request id and a log row."""
    operation = OPERATIONS.get(request.url.path)
    if operation is None:
        return JSONResponse(exc.body(), status_code=exc.status)
    gateway: Gateway = request.app.state.gateway
    record = gateway.new_record(operation)
    return gateway.refuse(record, exc, time.perf_counter(), {"x-request-id": record.request_id})


def api_error(errors: Sequence[dict]) -> ApiError:
    """One 400 naming the field of the first validation error (a union's alternatives are joined)."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, "the request body is not valid JSON", code="invalid_json")
    if isinstance(first.get("input"), bytes):
        return ApiError(400, "the request body must be JSON: send Content-Type: application/json", code="invalid_json")
    param = _param(first["loc"])
    if param is None:
        return ApiError(400, "the request body must be a JSON object of the documented fields", code="invalid_json")
    same = [e for e in errors if _param(e["loc"]) == param]
    if first["type"] == "missing":
        return ApiError(400, f"{param} is required", param=param)
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"{param} is not a field of this request", param=param)
    reasons = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in same))
    return ApiError(400, f"{param}: {reasons}, got {first.get('input')!r:.60}", param=param)


def _param(loc: Sequence[str | int]) -> str | None:
    """`messages.0.content` for ("body", "messages", 0, "content", "str"); a header's name as it is."""
    where, *steps = loc
    if where != "body":
        return str(steps[0]) if steps else None
    names = []
    for step in steps:
        if step == REFERENCE_TAG:
            continue  # the prompt-reference member of `prompt`: its fields are prompt.id, prompt.variables
        if isinstance(step, str) and (step in _TYPE_STEPS or "[" in step):
            break
        names.append(str(step))
    return ".".join(names) or None


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, less the 422 it adds to every route (this gateway answers 400 instead),
    with the configured model names as the values of every `model` field and path parameter."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        models = sorted(app.state.gateway.routes.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path" and parameter["name"] == "model":
                        parameter["schema"]["enum"] = models
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for name in ("CompletionRequest", "ChatCompletionRequest"):
            schemas[name]["properties"]["model"]["enum"] = models
        app.openapi_schema = schema
    return app.openapi_schema
