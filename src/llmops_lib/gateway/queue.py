"""Request priority: a bounded number of requests run upstream at once; the rest wait, interactive first.

When the waiting line is full the gateway answers 429 with Retry-After instead of queueing forever.
Explained in: book/chapters/03_observability/common_challenges.ipynb
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from llmops_lib.facts import PRIORITIES


class QueueFull(Exception):
    """The waiting line is full; retry later."""


class PriorityGate:
    """`await gate.acquire(priority)` … `gate.release()`: at most `concurrency` holders; waiters are
    ordered by priority, then arrival."""

    def __init__(self, concurrency: int, queue_size: int, on_depth: Callable[[str, int], None] | None = None) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.running = 0
        self._waiting: list[tuple[int, int, asyncio.Future, str]] = []
        self._seq = itertools.count()
        self._on_depth = on_depth or (lambda priority, depth: None)

    def depth(self, priority: str | None = None) -> int:
        return sum(1 for *_, p in self._waiting if priority is None or p == priority)

    async def acquire(self, priority: str) -> None:
        if self.running < self.concurrency and not self._waiting:
            self.running += 1
            return
        if len(self._waiting) >= self.queue_size:
            raise QueueFull
        future = asyncio.get_running_loop().create_future()
        entry = (PRIORITIES[priority], next(self._seq), future, priority)
        heapq.heappush(self._waiting, entry)
        self._on_depth(priority, self.depth(priority))
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            elif future.done() and not future.cancelled():
                self.release()
            self._on_depth(priority, self.depth(priority))
            raise

    def release(self) -> None:
        while self._waiting:
            *_, future, priority = heapq.heappop(self._waiting)
            self._on_depth(priority, self.depth(priority))
            if not future.done():
                future.set_result(None)
                return
        self.running -= 1
