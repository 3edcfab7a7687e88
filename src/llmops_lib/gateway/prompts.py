"""Prompts served by reference: a request names a registered prompt, the gateway renders its version.

`{"prompt": {"id": "support-answer@production", "variables": {...}}}` resolves through the prompt
registry to one immutable version; its template is rendered with the variables (a text template
becomes the completions prompt, or one user message on chat; a chat template becomes the messages)
and its model_config fills the sampling fields the client left out. A bare name is served by the
configured A/B split of its aliases, else by `production`; the arm follows from a stable hash of the
request's key, so one user always sees the same arm.

Hot path: resolved versions are cached by reference. The cache is dropped whenever the registry's
generation stamp changes (every alias move made through llmops, so a rollback takes effect on the
next request) and an entry is re-read when older than `prompt_cache_ttl_s` (moves made elsewhere).
A miss reads MLflow in a worker thread: the event loop never waits on the registry.
Explained in: book/chapters/prompts/version_control.ipynb
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from llmops_lib.errors import LLMOpsError, PromptError, PromptNotFound, SpecError
from llmops_lib.gateway.protocol import ApiError, ChatCompletionRequest, CompletionRequest, PromptReference
from llmops_lib.prompts.template import DEFAULT_ALIAS, PromptVersion, parse_reference

if TYPE_CHECKING:
    from llmops_lib.prompts.registry import PromptRegistry

#: The request fields a version's model_config may give (the client's value wins).
MODEL_CONFIG_FIELDS = ("model", "temperature", "max_tokens", "stop")

Request = TypeVar("Request", CompletionRequest, ChatCompletionRequest)


@dataclass(frozen=True)
class Served:
    """The version a reference resolved to, and the alias (A/B arm) it was reached through."""

    version: PromptVersion
    alias: str | None


def arm(name: str, key: str, weights: dict[str, int]) -> str:
    """The alias of `weights` (alias -> percent, summing to 100) that `key` is assigned to for prompt
    `name`: a stable hash (blake2b, the same in every process and run), not Python's `hash`."""
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % 100
    for alias, weight in weights.items():
        if point < weight:
            return alias
        point -= weight
    raise SpecError(f"the weights of prompt {name!r}'s split must sum to 100, got {weights}")


class PromptResolver:
    """References -> versions, cached; `splits` are the gateway configuration's `prompt_splits`."""

    def __init__(self, splits: dict[str, dict[str, int]], ttl_s: float) -> None:
        self.splits = splits
        self.ttl_s = ttl_s
        self.registry: PromptRegistry | None = None
        self._stamp: tuple[int, ...] | None = None
        #: canonical reference (name@alias or name/version) -> (monotonic time loaded, version)
        self._cache: dict[str, tuple[float, PromptVersion]] = {}
        #: loads in flight, shared by the requests that miss the same reference at once
        self._loading: dict[str, asyncio.Task[PromptVersion]] = {}

    async def start(self) -> None:
        """Open the registry (MLflow itself is imported by the first load) and load every arm of the
        configured splits, so the first requests find them cached.

        Raises:
            SpecError: a split names a prompt or alias the registry does not have.
        """
        from llmops_lib.prompts.registry import PromptRegistry

        self.registry = PromptRegistry()
        for name, weights in self.splits.items():
            for alias in weights:
                try:
                    await self._version(f"{name}@{alias}")
                except ApiError as exc:
                    raise SpecError(f"prompt_splits.{name}.{alias}: {exc.message}") from None

    async def serve(self, request: Request, reference: PromptReference, key: str) -> tuple[Request, Served]:
        """`request` with the referenced prompt rendered in and its version's model_config applied.

        Raises:
            ApiError: 404 for an unknown prompt, alias or version; 400 for a bad reference, a missing
                or unknown variable, or a chat template sent to /v1/completions.
        """
        served = await self.resolve(reference, key)
        return render(request, reference, served.version), served

    async def resolve(self, reference: PromptReference, key: str) -> Served:
        """The version `reference` names; a bare name goes to its split's arm for `key`, else `production`."""
        try:
            name, selector = parse_reference(reference.id)
        except PromptError as exc:
            raise ApiError(400, str(exc), param="prompt.id") from None
        if isinstance(selector, int):
            alias, canonical = None, f"{name}/{selector}"
        else:
            alias = selector or (arm(name, key, self.splits[name]) if name in self.splits else DEFAULT_ALIAS)
            canonical = f"{name}@{alias}"
        return Served(await self._version(canonical), alias)

    async def _version(self, canonical: str) -> PromptVersion:
        registry = self._started()
        stamp = self._moves(registry)
        if stamp != self._stamp:  # an alias moved: everything cached may point elsewhere now
            self._cache.clear()
            self._loading.clear()
            self._stamp = stamp
        cached = self._cache.get(canonical)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        task = self._loading.get(canonical)
        if task is None:
            task = asyncio.create_task(self._load(registry, canonical, stamp))
            self._loading[canonical] = task
            task.add_done_callback(lambda done: self._forget(canonical, done))
        return await asyncio.shield(task)  # a client that hangs up does not cancel the others' load

    def _moves(self, registry: PromptRegistry) -> tuple[int, ...] | None:
        """The state of the registry's alias-move stamp file, by one `os.stat` (no read): every move
        replaces the file, so its inode, times or size change."""
        try:
            st = os.stat(registry.generation_file)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)

    def _forget(self, canonical: str, done: asyncio.Task[PromptVersion]) -> None:
        if self._loading.get(canonical) is done:
            del self._loading[canonical]

    async def _load(self, registry: PromptRegistry, canonical: str, stamp: tuple[int, ...] | None) -> PromptVersion:
        try:
            version = await asyncio.to_thread(registry.load, canonical)
        except PromptNotFound as exc:
            raise ApiError(404, exc.public, param="prompt.id", code="prompt_not_found") from None
        except PromptError as exc:
            raise ApiError(400, str(exc), param="prompt.id") from None
        except LLMOpsError as exc:
            raise ApiError(503, f"the prompt registry cannot be read: {exc}", type="server_error") from None
        if stamp == self._stamp:  # loaded across a move that happened meanwhile: served once, not cached
            self._cache[canonical] = (time.monotonic(), version)
        return version

    def _started(self) -> PromptRegistry:
        if self.registry is None:
            raise ApiError(
                503, "the gateway has not started: run it with run_gateway or GatewayServer", type="server_error"
            )
        return self.registry


def render(request: Request, reference: PromptReference, version: PromptVersion) -> Request:
    """`request` with `version` rendered in place of the reference, and the version's model_config
    in the fields the client left out (or set to null)."""
    where = f"prompt {version.name!r} version {version.version}"
    chat = isinstance(request, ChatCompletionRequest)
    if version.is_chat and not chat:
        raise ApiError(
            400,
            f"{where} is a chat template: send it to /v1/chat/completions",
            param="prompt.id",
            code="chat_template_on_completions",
        )
    names, given = set(version.variables), set(reference.variables)
    if missing := sorted(names - given):
        raise ApiError(
            400,
            f"{where} needs variable {missing[0]!r}: add it to prompt.variables",
            param=f"prompt.variables.{missing[0]}",
        )
    if unknown := sorted(given - names):
        raise ApiError(
            400,
            f"{unknown[0]!r} is not a variable of {where} (it has {sorted(names)})",
            param=f"prompt.variables.{unknown[0]}",
        )
    rendered = version.render(reference.variables)  # the variables match: checked above
    fields = request.model_dump(exclude_unset=True, exclude={"prompt", "messages"})
    for field in MODEL_CONFIG_FIELDS:
        if fields.get(field) is None and version.model_config.get(field) is not None:
            fields[field] = version.model_config[field]
    if chat:
        fields["messages"] = rendered if version.is_chat else [{"role": "user", "content": rendered}]
    else:
        fields["prompt"] = rendered
    try:
        return type(request).model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(
            400,
            f"{where}: its model_config gives a value the gateway refuses: "
            f"{'.'.join(map(str, first['loc']))}: {first['msg']}",
            param="prompt.id",
        ) from None
