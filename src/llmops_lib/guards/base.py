"""What every guard shares: a finding, a verdict, the scanner protocol and the registry of scanners by name.

A scanner only judges a text (`scan(text) -> Verdict`); what happens then (block, flag, redact) is the
route's choice, made by `pipeline.GuardPipeline`. Scanners register their class under a fixed name with
`@register(name)`; `find_scanner(name)` imports the module that holds it only when the name is asked
for, so a route without PII never imports Presidio.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from llmops_lib.errors import LLMOpsError, SpecError


@dataclass(frozen=True)
class Finding:
    """One thing a scanner found: its kind (`aws_access_key`, `override_phrase`…), a short detail that
    never repeats a secret, and where it is in the scanned text when that is known."""

    kind: str
    detail: str = ""
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class Verdict:
    """A scanner's judgement: `allowed` False when it found what it looks for; `score` in [0, 1];
    `redacted` is the text with the findings removed, or None when there is nothing to redact (or the
    scanner cannot redact)."""

    allowed: bool
    score: float
    findings: tuple[Finding, ...] = ()
    redacted: str | None = None


class Scanner(Protocol):
    """One check of a text. Scanners are built once per route and must be safe to call from many threads."""

    name: str

    def scan(self, text: str) -> Verdict: ...


#: registry name -> factory(**params) (the scanner class); filled by `@register(name)`
SCANNERS: dict[str, Callable[..., Scanner]] = {}

#: where each scanner lives (a module of this package), imported when the name is first asked for:
#: checking a configuration costs no import of scikit-learn or Presidio it does not use
SCANNER_HOMES: dict[str, str] = {
    "injection_rules": "rules", "invisible": "rules", "size": "rules", "secrets": "rules",
    "refusal": "output", "canary": "output", "exfiltration": "output",
    "injection": "injection", "harm": "harm", "pii": "pii",
}  # fmt: skip

ScannerClass = TypeVar("ScannerClass", bound=type)


def register(name: str) -> Callable[[ScannerClass], ScannerClass]:
    """Class decorator: put a scanner class in `SCANNERS` under `name` and set its `name` attribute.

    Raises:
        LLMOpsError: `name` is not in `SCANNER_HOMES` under the class's module (add it there).
    """

    def decorate(cls: ScannerClass) -> ScannerClass:
        module = cls.__module__.rpartition(".")[2]
        if SCANNER_HOMES.get(name) != module:
            raise LLMOpsError(
                f"scanner {name!r} is registered in {module}.py: add {name!r}: {module!r} to SCANNER_HOMES"
            )
        cls.name = name
        SCANNERS[name] = cls
        return cls

    return decorate


def find_scanner(name: str) -> Callable[..., Scanner]:
    """The factory registered as `name`, its module imported on first use.

    Raises:
        SpecError: no scanner of that name (the message lists the names there are).
    """
    if name not in SCANNER_HOMES:
        raise SpecError(f"unknown scanner {name!r}; use one of {', '.join(sorted(SCANNER_HOMES))}")
    if name not in SCANNERS:
        importlib.import_module(f"{__package__}.{SCANNER_HOMES[name]}")
    return SCANNERS[name]


@functools.cache
def params_model(factory: Callable[..., Scanner]) -> type[BaseModel]:
    """A pydantic model of a factory's keyword parameters (from its signature and type hints), so a
    route's `params` are checked when the configuration loads, without building the scanner."""
    fields: dict[str, Any] = {}
    for param in inspect.signature(factory, eval_str=True).parameters.values():
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{factory.__name__}Params", __config__=config, **fields)
