"""A route's guards: which scanners run on its input and its output, what each does when it fires, and the
pipeline that runs them in order.

Actions: `block` stops the pipeline at the first scanner that fires (the gateway answers 4xx naming
it); `flag` records the name and lets the text through unchanged; `redact` passes the scanner's
redacted text to the scanners after it. A `redact` guard whose scanner fired but cannot redact blocks:
a guard fails closed. Specs are checked when the configuration loads (unknown scanner; unknown,
missing or mistyped parameter; a scanner twice in one list), without building the scanners.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from llmops_lib.errors import SpecError
from llmops_lib.guards.base import Scanner, Verdict, find_scanner, params_model


def _first_error(error: ValidationError) -> str:
    """`field.path: message` of a pydantic error's first problem: the one line a SpecError carries."""
    first = error.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"


class GuardSpec(BaseModel):
    """One guard of a route: a registered scanner, its action, and the scanner's parameters."""

    model_config = ConfigDict(extra="forbid")

    scanner: str
    action: Literal["block", "flag", "redact"] = "block"
    params: dict[str, Any] = Field(default={}, validate_default=True)  # a missing required one is an error too

    @field_validator("scanner")
    @classmethod
    def _known(cls, scanner: str) -> str:
        find_scanner(scanner)
        return scanner

    @field_validator("params")
    @classmethod
    def _params_fit(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "scanner" not in info.data:  # the scanner's own error is the one to report
            return params
        try:
            checked = params_model(find_scanner(info.data["scanner"])).model_validate(params)
        except ValidationError as exc:
            raise ValueError(f"{info.data['scanner']}: {_first_error(exc)}") from None
        return {name: getattr(checked, name) for name in checked.model_fields_set}


class Guards(BaseModel):
    """The per-route configuration section: guards on the input (the prompt, every non-system message)
    and on the output (the answer), each list run in order."""

    model_config = ConfigDict(extra="forbid")

    input: list[GuardSpec] = []
    output: list[GuardSpec] = []

    @field_validator("input", "output")
    @classmethod
    def _each_once(cls, specs: list[GuardSpec]) -> list[GuardSpec]:
        names = [spec.scanner for spec in specs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each scanner may appear once per list; repeated: {', '.join(repeated)}")
        return specs


def load_guards(data: Mapping[str, Any], where: str = "guards") -> Guards:
    """`Guards` from plain data (a YAML section), every problem a SpecError naming the field.

    Raises:
        SpecError: e.g. `guards.input.0.scanner: Value error, unknown scanner 'foo'; use one of …`.
    """
    try:
        return Guards.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{where}.{_first_error(exc)}") from None


@dataclass(frozen=True)
class Outcome:
    """What one pass of a pipeline decided: the text to go on with (redactions applied), the guard that
    blocked it (None: not blocked), the guards that flagged or redacted it, each scanner's verdict (the
    scanners after a block did not run), and the seconds it all took."""

    text: str
    blocked_by: str | None
    flagged: tuple[str, ...]
    redacted: tuple[str, ...]
    verdicts: dict[str, Verdict]
    seconds: float

    @property
    def allowed(self) -> bool:
        return self.blocked_by is None

    @property
    def reason(self) -> str:
        """`kind: detail` of the blocking scanner's first finding ("" when nothing blocked)."""
        if self.blocked_by is None:
            return ""
        findings = self.verdicts[self.blocked_by].findings
        if not findings:
            return "no detail"
        first = findings[0]
        return f"{first.kind}: {first.detail}" if first.detail else first.kind


class GuardPipeline:
    """Scanners built once from their specs, run in order on each text by `check`.

    Raises:
        SpecError: a scanner refused its parameters (message prefixed with the guard's name).
    """

    def __init__(self, specs: Sequence[GuardSpec]) -> None:
        self.specs = tuple(specs)
        self.scanners: tuple[Scanner, ...] = tuple(_build(spec) for spec in self.specs)

    def check(self, text: str) -> Outcome:
        started = time.perf_counter()
        flagged: list[str] = []
        redacted: list[str] = []
        verdicts: dict[str, Verdict] = {}
        blocked_by = None
        for spec, scanner in zip(self.specs, self.scanners, strict=True):
            verdict = scanner.scan(text)
            verdicts[spec.scanner] = verdict
            if verdict.allowed:
                continue
            if spec.action == "flag":
                flagged.append(spec.scanner)
            elif spec.action == "redact" and verdict.redacted is not None:
                text = verdict.redacted
                redacted.append(spec.scanner)
            else:
                blocked_by = spec.scanner
                break
        return Outcome(
            text=text,
            blocked_by=blocked_by,
            flagged=tuple(flagged),
            redacted=tuple(redacted),
            verdicts=verdicts,
            seconds=time.perf_counter() - started,
        )


def _build(spec: GuardSpec) -> Scanner:
    try:
        return find_scanner(spec.scanner)(**spec.params)
    except SpecError as exc:
        raise SpecError(f"guard {spec.scanner!r}: {exc}") from None
