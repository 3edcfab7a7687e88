"""The gateway's configuration: routes of deployments by model name (and each route's review
threshold), keys, log, cache, queue, prices, A/B splits of prompts.

Loaded from YAML (`load_config`, see deploy/gateway.example.yaml); every bad value is a SpecError
naming the field.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops_lib.errors import SpecError
from llmops_lib.guards.pii import Entity
from llmops_lib.guards.pipeline import Guards
from llmops_lib.observe.cost import Price, PriceTable

#: A deployment's share of its route's traffic, in percent: the one definition the configuration,
#: the admin API and the release controller validate weights with.
Weight = Annotated[int, Field(ge=0, le=100, strict=True, description="traffic share in percent (0..100)")]


def _sums_to_100(weights: dict[str, int]) -> dict[str, int]:
    if sum(weights.values()) != 100:
        raise ValueError(f"the weights of the arms must sum to 100, got {weights}")
    return weights


#: A/B arms of one prompt: alias -> weight (e.g. {production: 90, candidate: 10}).
Split = Annotated[dict[str, Weight], AfterValidator(_sums_to_100)]


class Deployment(BaseModel):
    """One upstream engine (OpenAI-compatible base URL without /v1) and its traffic share."""

    name: str
    url: str
    weight: Weight = 100
    upstream_model: str | None = None


class Rule(BaseModel):
    """Cheap model routing: prompts up to `max_prompt_chars` (or tagged `tag`) go to `deployment`."""

    deployment: str
    max_prompt_chars: int | None = Field(None, ge=0)
    tag: str | None = None


class Route(BaseModel):
    """A model name clients ask for, the deployments serving it, and where to go when one fails."""

    model: str
    deployments: list[Deployment]
    fallback: str | None = None
    rule: Rule | None = None
    #: the review queue: an answer whose confidence (from its token log-probabilities) is under this
    #: is logged with needs_review = 1
    review_below: float | None = Field(None, gt=0, lt=1)
    #: scanners on the input and the answer, and what each does when it fires (see gateway/guarding.py)
    guards: Guards = Field(default_factory=Guards)
    #: with output guards, the characters of a stream held back until more follow (the rest at its end):
    #: text an output guard matches that is up to this long (a canary token, an API key) never reaches
    #: the client in part; each piece reaches it this many characters later (about 4 per token)
    stream_hold_chars: int = Field(32, ge=0)

    @model_validator(mode="after")
    def _names_exist(self) -> Route:
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"route {self.model!r}: deployment names must be unique, got {names}")
        for what, name in (("fallback", self.fallback), ("rule.deployment", self.rule and self.rule.deployment)):
            if name is not None and name not in names:
                raise ValueError(f"route {self.model!r}: {what} {name!r} is not one of its deployments {names}")
        return self


class ApiKey(BaseModel):
    """One key of `GatewayConfig.keys`: its id (logged), its hash, what it may reach and how much (the
    rules: gateway/access.py)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$", description="logged as api_key_id; never the key")
    sha256: str = Field(description="'sha256:' and the 64 hex digits `llmops keys create` prints")
    #: route names (model names clients ask for) or shell patterns; ["*"]: every route, []: none
    routes: list[str] = ["*"]
    admin: bool = False
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    @field_validator("sha256")
    @classmethod
    def _hashed(cls, value: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError(
                "give the key's hash, 'sha256:' and 64 lower-case hex digits (`llmops keys create` prints it), "
                "never the key itself"
            )
        return value

    def allows(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.routes)


class GatewayConfig(BaseModel):
    """Everything `create_app` needs."""

    routes: list[Route]
    #: API keys, hashed (`llmops keys create`); none: the gateway is open (see gateway/access.py)
    keys: list[ApiKey] = []
    request_log: str | None = None
    #: keep prompt and completion text in the request log, with PII redacted first (guards/pii.py)
    capture_text: bool = False
    #: the PII types replaced in captured text (default: every type `Pii` finds, NER included). A gateway
    #: carrying synthetic evaluation traffic may keep only the structured ones (`pii.STRUCTURED`): names and
    #: places then stay in the text so online evaluation can score it, at a third of NER's cost per text
    redact_entities: list[Entity] | None = None
    #: delete request-log rows older than this many days (at start, then hourly; observe/privacy.py)
    retention_days: float | None = Field(None, gt=0)
    cache_size: int = Field(1024, ge=0)
    cache_ttl_s: float = Field(300.0, ge=0)
    queue_size: int = Field(64, ge=0)
    concurrency: int = Field(16, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    context_window: int = Field(1024, ge=1)
    max_tokens_limit: int = Field(4096, ge=1)
    prices: dict[str, Price] = {}
    #: prompt name -> {alias: weight}: a reference without alias is served by one arm, chosen by its user
    prompt_splits: dict[str, Split] = {}
    #: a prompt version is re-read from the registry when older than this (for alias moves made outside
    #: llmops, e.g. in MLflow's UI); moves through llmops take effect on the next request
    prompt_cache_ttl_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _keys_known(self) -> GatewayConfig:
        ids = [key.id for key in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids must be unique, got {ids}")
        models = {route.model for route in self.routes}
        for key in self.keys:
            unknown = [name for name in key.routes if not any(c in name for c in "*?[") and name not in models]
            if unknown:
                raise ValueError(f"key {key.id!r}: routes {unknown} are not routes of this gateway {sorted(models)}")
        return self

    def price_table(self) -> PriceTable:
        return PriceTable(self.prices)


def load_config(path: str | Path) -> GatewayConfig:
    """The configuration in the YAML file at `path`.

    Raises:
        SpecError: no such file, not YAML, or a value outside what is accepted.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no gateway configuration at {path}: give a YAML file like deploy/gateway.example.yaml")
    try:
        return GatewayConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SpecError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
