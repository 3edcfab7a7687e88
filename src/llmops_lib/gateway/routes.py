"""The gateway's HTTP routes: thin functions that hand validated bodies to the handler.

Each route names its body model (`protocol`), its headers and every error it can answer, so the
served OpenAPI document (/openapi.json, /docs) describes the whole API. API keys are checked by
one dependency, `RequireKey`, before the body is validated.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

# No `from __future__ import annotations`: FastAPI reads these signatures (the callable dependency's
# too) at run time.
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmops_lib.facts import PRIORITY_HEADER
from llmops_lib.gateway.handler import Gateway
from llmops_lib.gateway.protocol import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    ApiError,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    ModelCard,
    ModelList,
    NewDeployment,
    Priority,
    RoutesResponse,
    WeightsUpdate,
)

#: The header that selects a routing rule's deployment (`Rule.tag`).
TAG_HEADER = "x-llmops-tag"
#: The header that names the end user when the body has no `user`: it assigns a prompt's A/B arm.
USER_HEADER = "x-llmops-user"

_WHY = {
    400: "a field is wrong: `param` names it",
    401: "missing or wrong key in Authorization: Bearer <key>",
    404: "no such model, deployment or request, or no such prompt, alias or version (`param` prompt.id)",
    409: "the change conflicts with the route (a duplicate, the fallback, the last deployment)",
    429: "the queue is full: retry after the Retry-After seconds",
    502: "no upstream could answer (or it failed while answering)",
    503: "no deployment of the model has weight, or the gateway is not started",
    504: "the upstream timed out",
}


def _errors(*statuses: int) -> dict[int | str, dict]:
    return {status: {"model": ErrorResponse, "description": _WHY[status]} for status in statuses}


async def gateway_of(request: Request) -> Gateway:
    """The `Gateway` behind the app that received `request` (async: FastAPI runs a plain `def`
    dependency in a worker thread, two thread hand-offs per request)."""
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(gateway_of)]


class RequireKey(HTTPBearer):
    """Dependency: a key of the configuration's `api_keys` (or, for admin routes, `admin_keys`) in
    `Authorization: Bearer <key>`. An empty list lets every request in.

    An `HTTPBearer` itself, so the OpenAPI document names the scheme, and one dependency without
    sub-dependencies: FastAPI solves each of those on every request (the gateway's hot path).
    """

    def __init__(self, admin: bool = False) -> None:
        super().__init__(
            auto_error=False, scheme_name="HTTPBearer", description="required when the gateway is configured with keys"
        )
        self.admin = admin

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        config = request.app.state.gateway.config
        keys = config.admin_keys if self.admin else config.api_keys
        if not keys:
            return
        credentials = await super().__call__(request)
        token = (credentials.credentials if credentials else "").encode()
        if not any(hmac.compare_digest(token, key.encode()) for key in keys):
            what = "admin key" if self.admin else "API key"
            raise ApiError(
                401,
                f"missing or wrong {what}: send Authorization: Bearer <{what}>",
                type="authentication_error",
                code="invalid_admin_key" if self.admin else "invalid_api_key",
            )


_client_key = Depends(RequireKey())
_admin_key = Depends(RequireKey(admin=True))
PriorityHeader = Annotated[
    Priority | None, Header(alias=PRIORITY_HEADER, description="interactive (default) or batch; the body field wins")
]
TagHeader = Annotated[
    str | None, Header(alias=TAG_HEADER, description="sends the request to its routing rule's deployment")
]
UserHeader = Annotated[
    str | None,
    Header(alias=USER_HEADER, description="the end user, when the body has no `user`: assigns a prompt's A/B arm"),
]
#: One server-sent event of a stream (`stream: true`).
_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "description": "`data` is a JSON chunk shaped like the answer (chat: `delta` for `message`), the "
            "last one [DONE]; if the engine dies mid-stream, an event with OpenAI's error body ends it",
            "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
            "required": ["data"],
        }
    }
}

router = APIRouter()


@router.post(
    COMPLETIONS_PATH,
    dependencies=[_client_key],
    responses={200: {"model": CompletionResponse, "content": _STREAM}} | _errors(400, 401, 404, 429, 502, 503, 504),
)
async def completions(
    body: CompletionRequest,
    gateway: GatewayDep,
    priority: PriorityHeader = None,
    tag: TagHeader = None,
    user: UserHeader = None,
) -> Response:
    """OpenAI completions, proxied to a deployment of `model` (a stream with `stream: true`); `prompt`
    may reference a registered prompt instead of giving the text."""
    return await gateway.proxy(COMPLETIONS_PATH, body, priority, tag, user)


@router.post(
    CHAT_PATH,
    dependencies=[_client_key],
    responses={200: {"model": ChatCompletionResponse, "content": _STREAM}} | _errors(400, 401, 404, 429, 502, 503, 504),
)
async def chat_completions(
    body: ChatCompletionRequest,
    gateway: GatewayDep,
    priority: PriorityHeader = None,
    tag: TagHeader = None,
    user: UserHeader = None,
) -> Response:
    """OpenAI chat completions, for models with a chat template (400 otherwise: use /v1/completions);
    `prompt` (a registered prompt's reference) may replace `messages`."""
    return await gateway.proxy(CHAT_PATH, body, priority, tag, user)


@router.get("/v1/models", dependencies=[_client_key], responses=_errors(401))
async def models(gateway: GatewayDep) -> ModelList:
    """The model names clients may ask for."""
    return ModelList(data=[ModelCard(id=name) for name in gateway.routes.routes])


@router.post("/v1/feedback", dependencies=[_client_key], responses=_errors(400, 401, 404, 503))
async def feedback(body: FeedbackRequest, gateway: GatewayDep) -> FeedbackResponse:
    """A user's score of an answered request, kept in the request log beside it."""
    await gateway.feedback(body)
    return FeedbackResponse(ok=True)


@router.get("/health")
async def health() -> Health:
    return Health()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
)
async def metrics(gateway: GatewayDep) -> Response:
    """The gateway's metrics, and each engine's under the common names."""
    await gateway.scrape_engines()
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/admin/routes", dependencies=[_admin_key], responses=_errors(401))
async def get_routes(gateway: GatewayDep) -> RoutesResponse:
    return RoutesResponse.model_validate(gateway.routes.describe())


@router.put("/admin/routes/{model}/weights", dependencies=[_admin_key], responses=_errors(400, 401, 404))
async def put_weights(model: str, body: WeightsUpdate, gateway: GatewayDep) -> RoutesResponse:
    """Set some deployments' weights; the route's weights must then sum to 100."""
    gateway.routes.set_weights(model, body.weights)
    return RoutesResponse.model_validate(gateway.routes.describe())


@router.post("/admin/routes/{model}/deployments", dependencies=[_admin_key], responses=_errors(400, 401, 404, 409))
async def post_deployment(model: str, body: NewDeployment, gateway: GatewayDep) -> RoutesResponse:
    """Add a deployment to a route (weight 0 unless given)."""
    gateway.routes.add_deployment(model, body)
    return RoutesResponse.model_validate(gateway.routes.describe())


@router.delete("/admin/routes/{model}/deployments/{name}", dependencies=[_admin_key], responses=_errors(401, 404, 409))
async def delete_deployment(model: str, name: str, gateway: GatewayDep) -> RoutesResponse:
    """Remove a deployment that is neither the route's fallback, its rule's target, nor its last."""
    gateway.routes.remove_deployment(model, name)
    return RoutesResponse.model_validate(gateway.routes.describe())
