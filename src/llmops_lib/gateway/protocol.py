"""The gateway's wire protocol as pydantic models: request and admin bodies, answers, errors.

FastAPI validates every body against these models before the handler sees it, and the served
OpenAPI document is generated from them, so the document and the checks cannot drift apart. A
refusal is an `ApiError`, rendered as OpenAI's error body `{"error": {message, type, param, code}}`.
The OpenAI requests keep fields the gateway does not know (`seed`, `ignore_eos`, …): the engine
judges those. The fields evaluation harnesses and constrained decoding send (`logprobs`,
`top_logprobs`, `echo`, `n_probs`, `response_format`, `json_schema`, `grammar`) are declared with their
types, so a wrong one is a 400 naming it, and go to the engine unchanged. What depends on the
configuration (known models, the max_tokens limit, the context window) is checked by the handler.
Explained in: book/chapters/03_observability/common_challenges.ipynb
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from llmops_lib.facts import PRIORITIES
from llmops_lib.gateway.config import Deployment, Weight

#: The proxied OpenAI paths.
COMPLETIONS_PATH, CHAT_PATH = "/v1/completions", "/v1/chat/completions"
#: A request's priority class (the body field, or the x-llmops-priority header).
Priority = Literal[tuple(PRIORITIES)]


@dataclass
class ApiError(Exception):
    """A refusal (or an upstream failure), rendered as an OpenAI error body with its HTTP status."""

    status: int
    message: str
    param: str | None = None
    type: str = "invalid_request_error"
    code: str | None = None
    #: for a 429: the seconds the client is told to wait (Retry-After); None: the queue's default
    retry_after: int | None = None

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    message: str = Field(description="what was wrong and what to do")
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: str | None = Field(None, description="the field at fault, e.g. max_tokens or messages.0.content")
    code: str | int | None = Field(
        None, description="e.g. model_not_found, queue_full; an engine's own 4xx may carry its status number"
    )


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


def _string_only(schema: dict) -> None:
    """Document `model` as a string to leave out, not to send as null (a null is refused unless a
    prompt reference's model_config names the model)."""
    schema.pop("default", None)
    schema.update(next(m for m in schema.pop("anyOf") if m.get("type") == "string"))


class PromptReference(BaseModel):
    """A prompt of the registry to serve instead of raw text (OpenAI's Responses API shape for
    reusable prompts): the gateway renders the version the reference resolves to."""

    model_config = ConfigDict(strict=True, extra="forbid")

    id: str = Field(
        description="name@alias, name/version, or a bare name: the gateway's A/B split of it, else name@production"
    )
    variables: dict[str, str] = Field({}, description="a value for each {{variable}} of the template")


class ResponseFormat(BaseModel):
    """OpenAI's `response_format` (llama-server also reads a `schema` here; vLLM `json_schema`)."""

    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class _OpenAIRequest(BaseModel):
    # strict: "true" is not a boolean and 1.5 not an integer; unknown fields go on to the engine
    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = Field(
        None,
        description="a model name of GET /v1/models; may be left out when `prompt` is a reference whose "
        "version's model_config names the model",
        json_schema_extra=_string_only,
    )
    max_tokens: int | None = Field(
        None, ge=1, description="at most the gateway's max_tokens_limit, which is also the default"
    )
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stop: str | list[str] | None = None
    priority: Priority | None = Field(None, description="interactive (default) runs before batch")
    user: str | None = Field(
        None, description="the end user; also the key that assigns a prompt's A/B arm (else x-llmops-user)"
    )
    response_format: ResponseFormat | None = Field(None, description="json_object or json_schema: constrained output")
    json_schema: dict[str, Any] | None = Field(None, description="llama-server: a JSON schema the output must match")
    grammar: str | None = Field(None, description="llama-server: a GBNF grammar the output must match")
    n_probs: int | None = Field(
        None, ge=0, le=20, description="llama-server: top token probabilities per generated token (at most 20)"
    )


def _prompt_kind(value: Any) -> str | None:
    """Which member of `CompletionRequest.prompt` a JSON value is meant as."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict | PromptReference):
        return "reference"
    return None


#: The tag of the prompt-reference member: `app._param` reads through it (`prompt.reference.id` is `prompt.id`).
REFERENCE_TAG = "reference"


class CompletionRequest(_OpenAIRequest):
    prompt: Annotated[
        Annotated[str, Tag("str")]
        | Annotated[Annotated[list[str], Field(min_length=1)], Tag("list")]
        | Annotated[PromptReference, Tag(REFERENCE_TAG)],
        Discriminator(
            _prompt_kind,
            custom_error_type="prompt_type",
            custom_error_message="Input should be a string, a list of strings, or a reference {id, variables}",
        ),
    ] = Field(
        description="the prompt: a string, a list of strings (one choice each, in order; not with `stream`), "
        "or a reference to a registered prompt"
    )
    # bounded like vLLM's default max_logprobs: llama-server answers any count, and a vocabulary-sized one
    # (262k entries per token) ties an engine slot up past the timeout
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of this many top tokens per token")
    echo: bool | None = Field(None, description="also return the prompt (llama-server ignores it)")

    def reference(self) -> PromptReference | None:
        """The registered prompt this request names, if it names one."""
        return self.prompt if isinstance(self.prompt, PromptReference) else None

    def prompt_texts(self) -> list[str]:
        """The texts of a raw prompt, one per choice (a reference is rendered into one by the handler first)."""
        if isinstance(self.prompt, PromptReference):
            raise TypeError("a prompt reference has no text until the gateway renders it")
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: str = Field(description="system, user, assistant, …")
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else " ".join(part.text for part in self.content)


class ChatCompletionRequest(_OpenAIRequest):
    # exactly one of `messages` and `prompt` (checked by `reference`, documented here)
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["messages"]}, {"required": ["prompt"]}]})

    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="the conversation (or leave it out and send `prompt`)"
    )
    prompt: PromptReference | None = Field(
        None, description="a registered prompt to render into the conversation, instead of `messages`"
    )
    logprobs: bool | None = Field(None, description="return the log-probability of each generated token")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="and of this many most likely tokens at each")

    def reference(self) -> PromptReference | None:
        """The registered prompt this request names, or None when it sends `messages`.

        Raises:
            ApiError: 400 when it sends both or neither.
        """
        if self.messages is None and self.prompt is None:
            raise ApiError(400, "messages is required (or prompt: a registered prompt's reference)", param="messages")
        if self.messages is not None and self.prompt is not None:
            raise ApiError(400, "send messages or prompt, not both", param="prompt")
        return self.prompt

    def prompt_texts(self) -> list[str]:
        """The conversation's text, as the one prompt of the request."""
        return ["\n".join(message.text() for message in self.messages or [])]


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    text: str
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    """The engine's answer, passed through (a stream is `text/event-stream` of such chunks)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | None = None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    """The engine's answer, passed through (a stream is `text/event-stream` of such chunks)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class FeedbackRequest(BaseModel):
    """A user's rating of an answered request (by its x-request-id)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    request_id: str = Field(description="the x-request-id header of an answered request")
    score: float = Field(allow_inf_nan=False, description="e.g. 0..1, or -1/1 for thumbs down/up")
    comment: str | None = None


class FeedbackResponse(BaseModel):
    ok: bool


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "llmops"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class WeightsUpdate(BaseModel):
    """New weights of some deployments of a route; the route's weights must then sum to 100."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, Weight] = Field(min_length=1, description="deployment name -> weight")


class NewDeployment(Deployment):
    """A deployment to add to a route; it takes no traffic until its weight is raised."""

    model_config = ConfigDict(extra="forbid")

    weight: Weight = 0


class DeploymentView(BaseModel):
    name: str
    url: str
    weight: Weight


class RouteView(BaseModel):
    model: str
    deployments: list[DeploymentView]
    fallback: str | None = None


class RoutesResponse(BaseModel):
    routes: list[RouteView]
