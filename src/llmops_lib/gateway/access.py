"""Who may call the gateway: API keys stored hashed, scoped to routes, rate-limited, with token quotas.

A key is a random secret shown once (`llmops keys create`); the configuration keeps only
`sha256:<hex>` of it (a random 256-bit secret needs no slow hash: nothing to guess), so neither the
configuration, the request log nor a config dump can leak it. A presented key is hashed and compared
with every configured hash in constant time (`hmac.compare_digest`, no early exit).

Rules: with no keys configured the gateway is open (local use, the book). Client routes (/v1) need a
key once some key has client scope (`routes` not empty); /admin needs an admin key once any key is
configured. An admin key with `routes: []` is admin-only, so a leaked client key cannot move traffic
and the release controller's key cannot spend tokens. Out of scope → 403 naming the model and key;
over `requests_per_minute` (a token bucket: bursts up to the limit, refilled continuously) or over
`tokens_per_minute` (prompt + completion tokens answered in the last 60 s, counted after each answer,
so the request that crosses the quota is served and the next is refused until the window frees)
→ 429 with `Retry-After` in seconds. State is per gateway process, on its event loop (no lock).
Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable

from llmops_lib.gateway.config import ApiKey
from llmops_lib.gateway.protocol import ApiError

#: The window a token quota counts over, in seconds.
QUOTA_WINDOW_S = 60.0
#: What a generated key starts with (secret scanners recognise the prefix).
KEY_PREFIX = "sk-llmops-"


def hash_key(raw: str) -> str:
    """`sha256:<hex>` of a raw key: what a configuration stores."""
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_entry(raw: str, id: str, **options: object) -> ApiKey:
    """The configuration entry of a raw key (configurations built in Python: tests, `release.local`)."""
    return ApiKey(id=id, sha256=hash_key(raw), **options)


class _Bucket:
    """Token bucket of `per_minute` requests: full at start, refilled at per_minute/60 per second."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity, self.rate = float(per_minute), per_minute / 60.0
        self.level, self.at = self.capacity, now

    def take(self, now: float) -> float:
        """0 when a request may go (and takes it), else the seconds until one may."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate


class _Window:
    """Tokens answered in the last `QUOTA_WINDOW_S` seconds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent: deque[tuple[float, int]] = deque()

    def wait(self, now: float) -> float:
        """0 while under the limit, else the seconds until enough usage leaves the window."""
        while self.spent and self.spent[0][0] <= now - QUOTA_WINDOW_S:
            self.spent.popleft()
        excess = sum(n for _, n in self.spent) - self.limit + 1  # tokens that must leave the window first
        if excess <= 0:
            return 0.0
        freed = itertools.accumulate(n for _, n in self.spent)  # oldest first, as they leave it
        leaves = next(at for (at, _), total in zip(self.spent, freed, strict=True) if total >= excess)
        return leaves + QUOTA_WINDOW_S - now

    def add(self, now: float, tokens: int) -> None:
        self.spent.append((now, tokens))


class Access:
    """The keys of one gateway and their live limits."""

    def __init__(self, keys: Iterable[ApiKey], clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = list(keys)
        self.clock = clock
        self.client_keys_required = any(key.routes for key in self.keys)
        self.admin_keys_required = bool(self.keys)
        now = clock()
        self._buckets = {k.id: _Bucket(k.requests_per_minute, now) for k in self.keys if k.requests_per_minute}
        self._windows = {k.id: _Window(k.tokens_per_minute) for k in self.keys if k.tokens_per_minute}

    def authenticate(self, token: str | None, admin: bool = False) -> ApiKey | None:
        """The configured key `token` is, or None where no key is required and none matches.

        Raises:
            ApiError: 401 for a missing or unknown key where one is required; 403 for a client key on /admin.
        """
        found = self._match(token) if token else None
        required = self.admin_keys_required if admin else self.client_keys_required
        if found is None and required:
            what = "admin key" if admin else "API key"
            raise ApiError(
                401,
                f"missing or wrong {what}: send Authorization: Bearer <{what}>",
                type="authentication_error",
                code="invalid_admin_key" if admin else "invalid_api_key",
            )
        if admin and found is not None and not found.admin:
            raise ApiError(
                403,
                f"key {found.id!r} is not an admin key: /admin needs a key created with `llmops keys create --admin`",
                type="permission_error",
                code="not_admin",
            )
        return found

    def _match(self, token: str) -> ApiKey | None:
        presented = hash_key(token).encode()
        found = None
        for key in self.keys:  # every hash compared, no early exit: the time does not say which matched
            if hmac.compare_digest(presented, key.sha256.encode()):
                found = key
        return found

    def admit(self, key: ApiKey | None, model: str | None) -> None:
        """Let a request for `model` through, or refuse it (no key where none is required: through).

        Raises:
            ApiError: 403 model out of the key's scope; 429 (with `retry_after`) over its rate or token quota.
        """
        if key is None:
            return
        if model is not None and not key.allows(model):
            scope = ", ".join(key.routes) or "none (an admin-only key)"
            raise ApiError(
                403,
                f"key {key.id!r} may not use model {model!r}: its routes are {scope}",
                param="model",
                type="permission_error",
                code="model_not_allowed",
            )
        now = self.clock()
        window = self._windows.get(key.id)
        if window is not None and (wait := window.wait(now)):
            raise _limited(f"key {key.id!r} used its {window.limit} tokens per minute", "token_quota_exceeded", wait)
        bucket = self._buckets.get(key.id)
        if bucket is not None and (wait := bucket.take(now)):
            limit = key.requests_per_minute
            raise _limited(f"key {key.id!r} sent its {limit} requests per minute", "rate_limit_exceeded", wait)

    def spend(self, key_id: str | None, tokens: int) -> None:
        """Count the tokens of an answer against its key's quota."""
        window = self._windows.get(key_id) if key_id else None
        if window is not None and tokens:
            window.add(self.clock(), tokens)

    def visible(self, key: ApiKey | None, models: Iterable[str]) -> list[str]:
        """The models a key may use (all, without a key)."""
        return [m for m in models if key is None or key.allows(m)]


def _limited(what: str, code: str, wait: float) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError(
        429,
        f"{what}: retry after {seconds} s (Retry-After)",
        type="rate_limit_error",
        code=code,
        retry_after=seconds,
    )
