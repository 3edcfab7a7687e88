"""A prompt version as the gateway serves it: its template, checked and pre-split once, rendered per request.

Templates use MLflow's syntax, `{{ variable }}` (letters, digits, `_`, dotted parts), in a text
template or in the `content` of each message of a chat template. Everything here is pure Python
(no MLflow import): the gateway renders on every request, so a template is split into literal and
variable parts once, when the version is made, and `render` only joins them. Rendering is one pass:
a value that itself contains `{{…}}` is inserted as text, never expanded again.

A template is checked before anything is registered: an unclosed `{{`, an empty or malformed variable
name, Jinja2 control flow (`{% %}`, which MLflow would render differently), a chat message that is not
exactly `{role, content}` with a known role: each is a `PromptError` naming it.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops_lib.errors import PromptError

#: A variable name: MLflow's rule (`mlflow.prompt.constants.PROMPT_TEMPLATE_VARIABLE_PATTERN`).
VARIABLE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*(?:\.[a-zA-Z_][a-zA-Z0-9_]*)*")
#: A prompt name: MLflow's rule (`PROMPT_NAME_RULE`); `@` and `/` stay free for references.
PROMPT_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
#: An alias name: MLflow's rule for aliases; `latest` and `v<digits>` are MLflow's reserved names.
ALIAS_NAME = re.compile(r"[\w-]+")
ROLES = ("system", "user", "assistant")
#: The alias a reference without one (`"support-answer"`) resolves to.
DEFAULT_ALIAS = "production"

_REFERENCE = re.compile(r"(?:prompts:/)?(?P<name>[^@/]+)(?:@(?P<alias>[^@/]+)|/(?P<version>[^@/]+))?")

Template = str | list[dict[str, str]]
#: A split template: literal text and variable names alternating, starting and ending with literal text.
Parts = tuple[str, ...]


class ModelConfig(BaseModel):
    """The generation defaults a prompt version carries; a client's own request fields win over them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, min_length=1, description="served model (catalogue name or route)")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    stop: list[str] | None = None


def check_model_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The config with only the keys that were set; an unknown key or bad value is a `PromptError` naming it."""
    try:
        return ModelConfig.model_validate(config or {}).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r} (known: {', '.join(ModelConfig.model_fields)})")
            else:
                problems.append(f"{key}: {error['msg']} (got {error.get('input')!r})")
        raise PromptError("bad model config: " + "; ".join(problems)) from None


def split_text(text: str, where: str = "template") -> Parts:
    """Split `text` into literal and variable parts, refusing malformed `{{…}}` (see module docstring)."""
    if "{%" in text and "%}" in text:
        raise PromptError(f"bad {where}: Jinja2 control flow ({{% %}}) is not supported; use {{{{variable}}}} only")
    parts: list[str] = []
    position = 0
    while (start := text.find("{{", position)) != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            raise PromptError(f"bad {where}: '{{{{' at character {start} is never closed with '}}}}'")
        name = text[start + 2 : end].strip()
        if not name:
            raise PromptError(f"bad {where}: empty variable name '{{{{}}}}' at character {start}")
        if not VARIABLE_NAME.fullmatch(name):
            raise PromptError(
                f"bad {where}: variable name {name!r} at character {start} "
                "(letters, digits and _, may be dotted; must not start with a digit)"
            )
        parts += [text[position:start], name]
        position = end + 2
    parts.append(text[position:])
    return tuple(parts)


def split_template(template: Template) -> Parts | tuple[tuple[str, Parts], ...]:
    """A text template's parts, or each chat message's (role, parts); a `PromptError` if malformed."""
    if isinstance(template, str):
        if not template.strip():
            raise PromptError("bad template: it is empty")
        return split_text(template)
    if not isinstance(template, list) or not template:
        raise PromptError("bad template: a chat template is a non-empty list of {role, content} messages")
    messages = []
    for index, message in enumerate(template):
        where = f"template, message {index}"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            got = sorted(message) if isinstance(message, dict) else type(message).__name__
            raise PromptError(f"bad {where}: a chat message has exactly the keys role and content (got {got})")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise PromptError(f"bad {where}: unknown role {role!r} (known: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise PromptError(f"bad {where}: content must be text (got {type(content).__name__})")
        messages.append((role, split_text(content, where)))
    return tuple(messages)


def _fill(parts: Parts, values: dict[str, str]) -> str:
    pieces = list(parts)
    pieces[1::2] = [values[name] for name in parts[1::2]]
    return "".join(pieces)


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version of a registered prompt, ready to render (see the module docstring)."""

    name: str
    version: int
    template: Template
    model_config: dict[str, Any] = field(default_factory=dict)
    commit_message: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_at: float = 0.0  # unix seconds
    _parts: Any = field(init=False, repr=False, compare=False)
    _variables: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = split_template(self.template)
        names = [n for _, p in parts for n in p[1::2]] if self.is_chat else list(parts[1::2])
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_variables", tuple(dict.fromkeys(names)))

    @property
    def is_chat(self) -> bool:
        """A list of messages (for /v1/chat/completions), not one text (for /v1/completions)."""
        return not isinstance(self.template, str)

    @property
    def variables(self) -> tuple[str, ...]:
        """The `{{variable}}` names, in order of first appearance."""
        return self._variables

    @property
    def reference(self) -> str:
        """`name/version`: the reference that always loads exactly this version."""
        return f"{self.name}/{self.version}"

    def render(self, variables: dict[str, Any]) -> str | list[dict[str, str]]:
        """The template with every variable filled in: text, or a new list of chat messages.

        Values may be text or numbers (numbers are written with `str`).

        Raises:
            PromptError: a variable is missing, one is not in the template, or a value is not text/number.
        """
        names = self._variables
        if variables.keys() != set(names):
            missing = [n for n in names if n not in variables]
            unknown = sorted(k for k in variables if k not in names)
            problems = [f"missing variable {n!r}" for n in missing] + [f"unknown variable {n!r}" for n in unknown]
            raise PromptError(
                f"prompt {self.reference}: {', '.join(problems)} (its variables: {', '.join(names) or 'none'})"
            )
        values: dict[str, str] = {}
        for key, value in variables.items():
            if isinstance(value, str):
                values[key] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values[key] = str(value)
            else:
                raise PromptError(
                    f"prompt {self.reference}: variable {key!r} must be text or a number, not {type(value).__name__}"
                )
        if not self.is_chat:
            return _fill(self._parts, values)
        return [{"role": role, "content": _fill(parts, values)} for role, parts in self._parts]


class Reference(NamedTuple):
    """A parsed prompt reference: `selector` is a version number, an alias, or None (no selector given)."""

    name: str
    selector: int | str | None


def parse_reference(reference: str) -> Reference:
    """Parse `name`, `name@alias`, `name/3`, `prompts:/name@alias` or `prompts:/name/3`.

    Raises:
        PromptError: the reference is not one of these forms (the message names it).
    """
    form = "use name@alias, name/<version>, or prompts:/name@alias"
    match = _REFERENCE.fullmatch(reference.strip()) if isinstance(reference, str) else None
    if match is None:
        raise PromptError(f"bad prompt reference {reference!r}: {form}")
    name, alias, version = match["name"], match["alias"], match["version"]
    if not PROMPT_NAME.fullmatch(name):
        raise PromptError(f"bad prompt reference {reference!r}: a name has letters, digits, '.', '_', '-'; {form}")
    if version is not None:
        if not version.isdigit() or int(version) < 1:
            raise PromptError(f"bad prompt reference {reference!r}: a version is a number from 1; {form}")
        return Reference(name, int(version))
    if alias is not None and not ALIAS_NAME.fullmatch(alias):
        raise PromptError(f"bad prompt reference {reference!r}: an alias has letters, digits, '_', '-'; {form}")
    return Reference(name, alias)
