"""Exact-match response cache: same model, prompt and parameters at temperature 0 give the same answer.

Bounded by entries (least recently used goes first) and by age (TTL).
Explained in: book/chapters/03_observability/common_challenges.ipynb
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict


class ResponseCache:
    """`get`/`put` by request body; only greedy (temperature 0), non-streaming requests are cacheable.

    An entry is the answer and the name of the deployment that gave it (the log prices a hit there).
    """

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._entries: OrderedDict[str, tuple[float, str, dict]] = OrderedDict()

    def key(self, path: str, body: dict) -> str | None:
        """The cache key of a request, or None when it is not cacheable."""
        if self.size == 0 or body.get("stream") or body.get("temperature", 1.0) != 0:
            return None
        return path + json.dumps(body, sort_keys=True, separators=(",", ":"))

    def get(self, key: str) -> tuple[str, dict] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1], entry[2]

    def put(self, key: str, deployment: str, response: dict) -> None:
        self._entries[key] = (time.monotonic(), deployment, response)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
