"""Steady background traffic through the gateway while a rollout runs (the book, the tests, a runbook).

A canary is judged on the traffic it gets; on a laptop there is none unless we send it. Each
worker sends one streamed completion after another until stopped; outcomes are counted, and the
gateway's request log keeps the per-request truth the analysis reads.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Self

from llmops_lib.bench.traffic import Workload
from llmops_lib.engines.client import OpenAIClient


class BackgroundTraffic:
    """`with BackgroundTraffic(url, "gemma") as traffic:` `concurrency` clients sending until the block ends."""

    def __init__(
        self,
        gateway_url: str,
        model: str,
        *,
        concurrency: int = 2,
        max_tokens: int = 8,
        context_words: int = 0,
        pause_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.gateway_url, self.model, self.concurrency = gateway_url, model, concurrency
        self.pause_s = pause_s
        self.workload = Workload.random(max_tokens, context_words=context_words, seed=seed)
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _worker(self, offset: int) -> None:
        client = OpenAIClient(self.gateway_url, model=self.model, timeout_s=60)
        index = offset
        try:
            while not self._stop.is_set():
                request = self.workload.request(index)
                try:
                    client.complete(request.prompt, max_tokens=request.max_tokens, ignore_eos=self.workload.ignore_eos)
                    outcome = "ok"
                except Exception as exc:  # noqa: BLE001 - every failure is an outcome to count, not a crash
                    outcome = type(exc).__name__
                with self._lock:
                    self.outcomes[outcome] += 1
                index += self.concurrency
                self._stop.wait(self.pause_s)
        finally:
            client.close()

    def start(self) -> Self:
        self._threads = [
            threading.Thread(target=self._worker, args=(i,), daemon=True, name=f"traffic-{i}")
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
