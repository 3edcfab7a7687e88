"""Hooks, as Flagger's webhooks: ask before traffic moves, before promotion, whether to roll back; tell after.

- `confirm-rollout`: polled before the first step; the rollout waits until every one says yes.
- `confirm-promotion`: polled after the last step; promotion waits until every one says yes.
- `rollback`: polled while the rollout runs; a yes rolls the canary back at once (a manual gate).
- `post-rollout`: told the outcome once the rollout is promoted or rolled back (e.g. stop the canary engine).
- `event`: told every event of the audit trail (notifications).

A hook is a Python callable taking the payload (a dict) and returning a bool (None counts as yes,
except for `rollback`),
or a URL the payload is POSTed to as JSON (2xx is yes). A hook that raises or cannot be reached
says no; for the telling kinds the failure is written to the audit trail and the rollout goes on.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmops_lib.errors import SpecError
from llmops_lib.release.rollout import HOOK_KINDS, HookSpec


@dataclass(frozen=True)
class Hook:
    """One hook: its kind, and a callable or a URL."""

    kind: str
    call: Callable[[Mapping[str, Any]], bool | None] | None = None
    url: str | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in HOOK_KINDS:
            raise SpecError(f"hook type {self.kind!r} is unknown; use one of {', '.join(HOOK_KINDS)}")
        if (self.call is None) == (self.url is None):
            raise SpecError(f"a {self.kind} hook needs exactly one of a callable or a url")

    @classmethod
    def of(cls, spec: HookSpec) -> Hook:
        return cls(spec.kind, url=spec.url, timeout_s=spec.timeout_s)

    @property
    def label(self) -> str:
        return self.url or getattr(self.call, "__name__", repr(self.call))

    def __call__(self, payload: Mapping[str, Any]) -> tuple[bool, str]:
        """(yes?, what happened) — never raises."""
        try:
            if self.call is not None:
                answer = self.call(payload)
                # None is a yes for the asking kinds, never a request to roll back
                return (answer is None and self.kind != "rollback") or bool(answer), f"returned {answer!r}"
            import httpx

            response = httpx.post(self.url, json=dict(payload), timeout=self.timeout_s)
            return response.is_success, f"HTTP {response.status_code}"
        except Exception as exc:  # noqa: BLE001 - a failing hook is an answer (no), recorded with its reason
            return False, f"{type(exc).__name__}: {exc}"[:300]


def call_all(hooks: list[Hook], kind: str, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Call every hook of `kind` with `payload`; the answers, as the audit trail keeps them."""
    answers = []
    for hook in (h for h in hooks if h.kind == kind):
        yes, detail = hook(payload)
        answers.append({"hook": kind, "target": hook.label, "yes": yes, "detail": detail})
    return answers
