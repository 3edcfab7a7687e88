"""The gateway's HTTP routes: thin functions that hand validated bodies to the handler.

Each route names its body model (`protocol`), its headers and every error it can answer, so the
served OpenAPI document (/openapi.json, /docs) describes the whole API. API keys are checked by
one dependency, `RequireKey`, before the body is validated.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

# No `from __future__ import annotations`: FastAPI reads these signatures (the callable dependency's
# too) at run time.
import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmops_lib import audit
from llmops_lib.errors import LLMOpsError
from llmops_lib.facts import PRIORITY_HEADER
from llmops_lib.gateway.config import ApiKey
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
    403: "the key may not do this: a model outside its routes, or /admin without an admin key",
    404: "no such model, deployment or request, or no such prompt, alias or version (`param` prompt.id)",
    409: "the change conflicts with the route (a duplicate, the fallback, the last deployment)",
    429: "the queue is full, or the key's rate or token quota is used up: retry after the Retry-After seconds",
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
    """Dependency: the API key in `Authorization: Bearer <key>`, checked against the configuration's
    `keys` (`access.Access.authenticate`: 401 unknown, 403 a client key on /admin); None where the
    gateway needs no key and none was given. Scope and limits are checked once the model is known.

    An `HTTPBearer` itself, so the OpenAPI document names the scheme, and one dependency without
    sub-dependencies: FastAPI solves each of those on every request (the gateway's hot path).
    """

    def __init__(self, admin: bool = False) -> None:
        super().__init__(
            auto_error=False, scheme_name="HTTPBearer", description="required when the gateway is configured with keys"
        )
        self.admin = admin

    async def __call__(self, request: Request) -> ApiKey | None:  # type: ignore[override]
        credentials = await super().__call__(request)
        token = credentials.credentials if credentials else None
        return request.app.state.gateway.access.authenticate(token, admin=self.admin)


ClientKey = Annotated[ApiKey | None, Depends(RequireKey())]
AdminKey = Annotated[ApiKey | None, Depends(RequireKey(admin=True))]
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
    responses={200: {"model": CompletionResponse, "content": _STREAM}}
    | _errors(400, 401, 403, 404, 429, 502, 503, 504),
)
async def completions(
    body: CompletionRequest,
    gateway: GatewayDep,
    key: ClientKey,
    priority: PriorityHeader = None,
    tag: TagHeader = None,
    user: UserHeader = None,
) -> Response:
    """OpenAI completions, proxied to a deployment of `model` (a stream with `stream: true`); `prompt`
    may reference a registered prompt instead of giving the text."""
    return await gateway.proxy(COMPLETIONS_PATH, body, priority, tag, user, key)


@router.post(
    CHAT_PATH,
    responses={200: {"model": ChatCompletionResponse, "content": _STREAM}}
    | _errors(400, 401, 403, 404, 429, 502, 503, 504),
)
async def chat_completions(
    body: ChatCompletionRequest,
    gateway: GatewayDep,
    key: ClientKey,
    priority: PriorityHeader = None,
    tag: TagHeader = None,
    user: UserHeader = None,
) -> Response:
    """OpenAI chat completions, for models with a chat template (400 otherwise: use /v1/completions);
    `prompt` (a registered prompt's reference) may replace `messages`."""
    return await gateway.proxy(CHAT_PATH, body, priority, tag, user, key)


@router.get("/v1/models", responses=_errors(401))
async def models(gateway: GatewayDep, key: ClientKey) -> ModelList:
    """The model names clients may ask for (with a key: those in its scope)."""
    return ModelList(data=[ModelCard(id=name) for name in gateway.access.visible(key, gateway.routes.routes)])


@router.post("/v1/feedback", dependencies=[Depends(RequireKey())], responses=_errors(400, 401, 404, 503))
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


async def _audited(event: str, key: ApiKey | None, **fields: object) -> None:
    """Put an admin change into the audit log (in a thread: it writes and fsyncs), after it was made.

    Raises:
        ApiError: 500 when the log cannot record it (the change stands: the operator must know).
    """
    try:
        await asyncio.to_thread(audit.record, event, key_id=key.id if key else None, **fields)
    except LLMOpsError as exc:
        raise ApiError(500, f"the change was made but could not be audited: {exc}", type="server_error") from None


@router.get("/admin/routes", responses=_errors(401, 403))
async def get_routes(gateway: GatewayDep, key: AdminKey) -> RoutesResponse:
    return RoutesResponse.model_validate(gateway.routes.describe())


@router.put("/admin/routes/{model}/weights", responses=_errors(400, 401, 403, 404))
async def put_weights(model: str, body: WeightsUpdate, gateway: GatewayDep, key: AdminKey) -> RoutesResponse:
    """Set some deployments' weights; the route's weights must then sum to 100 (audited: admin.weights)."""
    gateway.routes.set_weights(model, body.weights)
    await _audited("admin.weights", key, model=model, weights=body.weights)
    return RoutesResponse.model_validate(gateway.routes.describe())


@router.post("/admin/routes/{model}/deployments", responses=_errors(400, 401, 403, 404, 409))
async def post_deployment(model: str, body: NewDeployment, gateway: GatewayDep, key: AdminKey) -> RoutesResponse:
    """Add a deployment to a route, weight 0 unless given (audited: admin.deployment_add)."""
    gateway.routes.add_deployment(model, body)
    await _audited("admin.deployment_add", key, model=model, **body.model_dump())
    return RoutesResponse.model_validate(gateway.routes.describe())


@router.delete("/admin/routes/{model}/deployments/{name}", responses=_errors(401, 403, 404, 409))
async def delete_deployment(model: str, name: str, gateway: GatewayDep, key: AdminKey) -> RoutesResponse:
    """Remove a deployment that is neither the route's fallback, its rule's target, nor its last
    (audited: admin.deployment_remove)."""
    gateway.routes.remove_deployment(model, name)
    await _audited("admin.deployment_remove", key, model=model, name=name)
    return RoutesResponse.model_validate(gateway.routes.describe())
