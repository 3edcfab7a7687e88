"""The prompt registry: immutable prompt versions and aliases as their deployable pointers, on MLflow.

It is MLflow's prompt registry in the same store as the model registry (`mlflow_store.registry_uri()`:
by default the embedded SQLite `LLMOPS_HOME/mlflow.db`). What we add is what operators need from it:

- **Registering checks first**: the template's syntax, the model config's keys and values, the name,
  the tags; only then is the version written, by one MLflow call, so a refused prompt leaves nothing.
  Every registration is a new immutable version, even of an identical template (a version is an event).
- **Aliases are the deployable pointers** (`production`, `candidate`, `previous`). Moving `production`
  also moves `previous` to the version it leaves, so `rollback()` always knows where to go back.
- **Every alias move is an audited event** (who, when, why, from which version to which), kept as a
  tag of the prompt itself (`mlflow_store.alias_event`), so `history()` is the audit.
- **`generation()` is a cheap stamp** of alias moves (a small file beside the SQLite store, or in
  `LLMOPS_HOME` for any other registry URI), changed by every move made through this class. The
  gateway reads it to know when its cache of resolved aliases is stale. Moves made by another tool,
  or on another machine sharing an MLflow server, do not touch the file: the gateway sees those only
  when its cache entry expires (its TTL).

The model config is ours (`template.ModelConfig`: model, temperature, max_tokens, stop) and is stored
in MLflow's own fields (`model_name`, `stop_sequences`), so MLflow's UI shows it too.
MLflow is imported on first use: its import takes seconds and must stay off the gateway's path.
Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmops_lib import audit
from llmops_lib.atomic import write_text
from llmops_lib.config import settings
from llmops_lib.errors import LLMOpsError, PromptError, PromptNotFound
from llmops_lib.mlflow_store import AliasEvent, Store, alias_event, events_in, require_reason
from llmops_lib.prompts.template import (
    ALIAS_NAME,
    DEFAULT_ALIAS,
    PROMPT_NAME,
    PromptVersion,
    Template,
    check_model_config,
    parse_reference,
    split_template,
)

#: The alias that remembers what `production` pointed at before its last move (rollback goes there).
PREVIOUS = "previous"
#: Our config keys → MLflow's `PromptModelConfig` fields.
TO_MLFLOW = {"model": "model_name", "temperature": "temperature", "max_tokens": "max_tokens", "stop": "stop_sequences"}
FROM_MLFLOW = {v: k for k, v in TO_MLFLOW.items()}
#: Tag prefixes that belong to MLflow or to our audit trail: a user's tag may not forge them.
RESERVED_TAGS = ("mlflow.", "_mlflow", "llmops.")
#: Alias names MLflow reserves (`latest`, `v1`), and all-digit ones, which would read as version numbers.
RESERVED_ALIAS = re.compile(r"latest|v\d+|\d+", re.IGNORECASE)


def generation_file(uri: str) -> Path:
    """Where the alias-move stamp of the registry at `uri` lives: beside a SQLite store, else in LLMOPS_HOME."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent / "prompts.generation"
    return settings().home / "prompts.generation"


class PromptRegistry(Store):
    """Prompt versions and aliases in MLflow's prompt registry (see the module docstring)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        super().__init__(tracking_uri)
        self.generation_file = generation_file(self.uri)

    @property
    def _mlflow_error(self) -> type[Exception]:
        """MLflow's exception type, imported only once `client` has switched MLflow's telemetry off."""
        _ = self.client
        from mlflow.exceptions import MlflowException

        return MlflowException

    # --- writing ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        template: Template,
        *,
        commit_message: str,
        model_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> PromptVersion:
        """Check everything, then register `template` as the next version of `name` (created if new).

        Args:
            template: text with `{{variables}}`, or a chat template: a list of {role, content} messages.
            commit_message: what changed and why, as in a git commit (required).
            model_config: generation defaults: model, temperature, max_tokens, stop.
            tags: free key → value labels of this version (e.g. the eval score it earned).

        Raises:
            PromptError: bad name, template, model config, tags or empty commit message (nothing registered).
        """
        if not isinstance(name, str) or not PROMPT_NAME.fullmatch(name):
            raise PromptError(f"bad prompt name {name!r}: use letters, digits, '.', '_' and '-'")
        split_template(template)
        config = check_model_config(model_config)
        if not commit_message.strip():
            raise PromptError(f"say what this version of {name!r} changes (a commit message): it is its history")
        tags = dict(tags or {})
        for key, value in tags.items():
            if not isinstance(key, str) or not key or key.startswith(RESERVED_TAGS) or not isinstance(value, str):
                raise PromptError(
                    f"bad tag {key!r}={value!r}: keys and values are text, keys may not start with "
                    f"{', '.join(RESERVED_TAGS)}"
                )
        try:
            found = self.client.register_prompt(
                name,
                template,
                commit_message=commit_message,
                tags=tags,
                model_config={TO_MLFLOW[k]: v for k, v in config.items()} or None,
            )
        except self._mlflow_error as exc:
            raise self._refused(f"registering {name!r}", exc) from None
        return self._version(found)

    def set_alias(self, name: str, alias: str, version: int, *, why: str, who: str | None = None) -> AliasEvent | None:
        """Point `alias` at `version`, recording who/when/why; None (no event) if it already points there.

        Moving `production` first moves `previous` to the version `production` leaves (its own event).

        Raises:
            PromptError: no reason given, or a reserved or malformed alias name.
            PromptNotFound: no such prompt or version.
        """
        require_reason(why)
        if not ALIAS_NAME.fullmatch(alias) or RESERVED_ALIAS.fullmatch(alias):
            raise PromptError(
                f"bad alias {alias!r}: use letters, digits, '_' and '-' "
                "(not a number; 'latest' and 'v<number>' are reserved)"
            )
        target = self.load(f"{name}/{int(version)}").version
        aliases = self.aliases(name)
        current = aliases.get(alias)
        if current == target:
            return None
        if alias == DEFAULT_ALIAS and current is not None and aliases.get(PREVIOUS) != current:
            self._move(name, PREVIOUS, aliases.get(PREVIOUS), current, f"{alias} left v{current}: {why}", who)
        return self._move(name, alias, current, target, why, who)

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS, *, why: str, who: str | None = None) -> AliasEvent:
        """Point `alias` back at the version `previous` points at; `previous` then points at the one left.

        Raises:
            PromptError: no reason, or nothing to roll back to (no `alias`, no `previous`, or both the same).
            PromptNotFound: no such prompt.
        """
        require_reason(why)
        aliases = self.aliases(name)
        current, target = aliases.get(alias), aliases.get(PREVIOUS)
        if current is None:
            raise PromptError(f"prompt {name!r} has no alias {alias!r} to roll back (aliases: {_listed(aliases)})")
        if target is None or target == current:
            raise PromptError(
                f"prompt {name!r} has no previous version to roll {alias} back to ({alias} is v{current}, "
                f"previous {'is the same' if target else 'is not set'}): "
                f"move {alias} to a chosen version instead with `llmops prompt alias {name} {alias} VERSION --why ...`"
            )
        event = self._move(name, alias, current, target, why, who)
        self._move(name, PREVIOUS, target, current, f"rollback of {alias} from v{current}: {why}", who)
        return event

    def _move(self, name: str, alias: str, before: int | None, after: int, why: str, who: str | None) -> AliasEvent:
        key, value, event = alias_event(alias, None if before is None else str(before), str(after), why, who)
        try:
            self.client.set_prompt_alias(name, alias, after)
            self.client.set_prompt_tag(name, key, value)
        finally:  # even a half-done move may have moved the alias: the gateway must look again
            write_text(self.generation_file, str(max(self.generation() + 1, time.time_ns())))
        audit.record("prompt.alias", prompt=name, registry=self.uri, **asdict(event))
        return event

    # --- reading ---------------------------------------------------------------------------

    def load(self, reference: str) -> PromptVersion:
        """The version a reference names: `name@alias`, `name/3`, `prompts:/…`, `name@latest` (newest),
        or a bare `name` (its `production` alias).

        Raises:
            PromptError: the reference is malformed.
            PromptNotFound: no such prompt, alias or version (the message lists what exists).
        """
        name, selector = parse_reference(reference)
        selector = DEFAULT_ALIAS if selector is None else selector
        try:
            if isinstance(selector, int):
                found = self.client.get_prompt_version(name, selector)
            elif selector == "latest":  # the search leaves the aliases out: get the newest version itself
                newest = self.client.search_prompt_versions(name, max_results=1)
                found = self.client.get_prompt_version(name, newest[0].version) if newest else None
            else:
                found = self.client.get_prompt_version_by_alias(name, selector)
        except self._mlflow_error:
            found = None
        if found is None:
            raise self._not_found(name, selector)
        return self._version(found)

    def versions(self, name: str) -> list[PromptVersion]:
        """Every version of `name`, oldest first.

        Raises:
            PromptNotFound: no such prompt (the message lists the prompts there are).
        """
        if self.client.get_prompt(name) is None:
            raise self._not_found(name, None)
        found, token = [], None
        try:
            while True:
                page = self.client.search_prompt_versions(name, max_results=1000, page_token=token)
                found += page
                if not (token := page.token):
                    break
        except self._mlflow_error as exc:
            raise self._refused(f"listing the versions of {name!r}", exc) from None
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases(name).items():  # MLflow's search leaves them out
            by_version.setdefault(version, []).append(alias)
        return sorted((self._version(v, by_version.get(int(v.version), [])) for v in found), key=lambda v: v.version)

    def aliases(self, name: str) -> dict[str, int]:
        """alias → version of `name` (PromptNotFound if there is no such prompt)."""
        if self.client.get_prompt(name) is None:
            raise self._not_found(name, None)
        # MLflow's prompt API has no public call for a prompt's aliases (search_prompt_versions leaves
        # them out, get_registered_model hides prompts): its registry client's model has them, in one query.
        model = self.client._get_registry_client().get_registered_model(name)
        return {alias: int(version) for alias, version in model.aliases.items()}

    def list(self) -> list[str]:
        """The names of every registered prompt, sorted."""
        names, token = [], None
        while True:
            page = self.client.search_prompts(max_results=1000, page_token=token)
            names += [prompt.name for prompt in page]
            if not (token := page.token):
                return sorted(names)

    def history(self, name: str) -> list[AliasEvent]:
        """Every alias move of `name` made through this class, oldest first."""
        prompt = self.client.get_prompt(name)
        if prompt is None:
            raise self._not_found(name, None)
        return events_in(prompt.tags)

    def diff(self, ref_a: str, ref_b: str) -> str:
        """A unified diff of two versions' templates and model configs ("" when they are the same)."""
        a, b = self.load(ref_a), self.load(ref_b)
        names = [  # an alias is named beside the version it resolved to
            v.reference if parse_reference(ref).selector == v.version else f"{v.reference} ({ref})"
            for v, ref in ((a, ref_a), (b, ref_b))
        ]
        lines = difflib.unified_diff(_text(a), _text(b), *names, lineterm="")
        return "\n".join(lines)

    def generation(self) -> int:
        """A stamp that changes with every alias move made through this class (0 before the first)."""
        try:
            return int(self.generation_file.read_text())
        except FileNotFoundError:
            return 0

    # --- conversions and messages -------------------------------------------------------------

    def _version(self, found: Any, aliases: list[str] | None = None) -> PromptVersion:
        config = {
            FROM_MLFLOW[k]: v for k, v in (found.model_config or {}).items() if k in FROM_MLFLOW and v is not None
        }
        try:
            return PromptVersion(
                name=found.name,
                version=int(found.version),
                template=found.template,
                model_config=config,
                commit_message=found.commit_message or "",
                tags={k: v for k, v in (found.tags or {}).items() if not k.startswith(("mlflow.", "_mlflow"))},
                aliases=tuple(sorted(found.aliases if aliases is None else aliases)),
                created_at=(found.creation_timestamp or 0) / 1000,
            )
        except PromptError as exc:  # registered by another tool with a syntax we do not render
            raise PromptError(f"prompt {found.name}/{found.version} in {self.uri}: {exc}") from None

    def _not_found(self, name: str, selector: int | str | None) -> PromptNotFound:
        if selector is None or self.client.get_prompt(name) is None:
            known = ", ".join(self.list()) or "none yet"
            return PromptNotFound(
                f"no prompt {name!r} in the registry at {self.uri} (prompts: {known}); "
                "register it with `llmops prompt register`",
                public=f"no prompt {name!r} in the gateway's prompt registry",
            )
        versions = self.versions(name)
        listed = ", ".join(f"v{v.version}" + (f" ({', '.join(v.aliases)})" if v.aliases else "") for v in versions)
        what = f"version {selector}" if isinstance(selector, int) else f"alias {selector!r}"
        return PromptNotFound(f"prompt {name!r} has no {what}; it has: {listed}")

    def _refused(self, doing: str, exc: Exception) -> LLMOpsError:
        message = f"the prompt registry at {self.uri} refused {doing}: {getattr(exc, 'message', exc)}"
        bad_input = getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE"
        return PromptError(message) if bad_input else LLMOpsError(message)


def _listed(aliases: dict[str, int]) -> str:
    return ", ".join(f"{alias} → v{version}" for alias, version in sorted(aliases.items())) or "none"


def _text(version: PromptVersion) -> list[str]:
    """A version as lines to diff: the template (chat: one `[role]` header per message), then the config."""
    if version.is_chat:
        lines = [line for m in version.template for line in (f"[{m['role']}]", *m["content"].splitlines())]
    else:
        lines = version.template.splitlines()
    config = [f"  {key}: {json.dumps(version.model_config[key])}" for key in sorted(version.model_config)]
    return [*lines, "", "model config:", *(config or ["  (none)"])]
