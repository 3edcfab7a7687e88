"""One prompt over a set of cases: real outputs, scores, tokens and latency, cached on disk.

`run_cases` renders each case with a prompt, sends it with a `complete` callable (an `Endpoint`'s
`complete` for text, `chat` for messages, or a `logprob.LabelChooser`), and scores the output with
the task's scorer. Outputs are cached in `LLMOPS_HOME/evals/cache.sqlite`, keyed by what the server
says it serves (`/v1/models`), the rendered prompt and the generation parameters: a rerun (an A/A
test, a rebuilt chapter) reuses the real outputs instead of asking the model again. At temperature 0
that is what the model would answer anyway; the cached latency is the one first measured.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
from tqdm.auto import tqdm

from llmops_lib.bench.stats import Interval, bootstrap
from llmops_lib.config import settings
from llmops_lib.errors import EngineError, SpecError
from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import Case, Task

Prompt = str | list[dict[str, str]]


class Generation(NamedTuple):
    """What a `complete` callable returns for one rendered prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class Endpoint:
    """An OpenAI-compatible server (llama-server, vLLM, the gateway) with fixed generation parameters.

    Non-streaming: an evaluation needs the whole answer and its token counts, not the time of each
    token (that is `engines.client.OpenAIClient`'s job). `complete` sends a text prompt to
    `/v1/completions`, `chat` a message list to `/v1/chat/completions`.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        max_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        *,
        timeout_s: float = 300.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if max_tokens < 1 or temperature < 0:
            raise SpecError(f"need max_tokens ≥ 1 and temperature ≥ 0, got {max_tokens} and {temperature}")
        self.base_url = base_url.rstrip("/")
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.stop = list(stop or [])
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=5.0), headers=headers
        )
        self._served: list[dict] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One JSON request; an unreachable server or a non-200 answer is an `EngineError` with its text."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise EngineError(
                f"{method} {self.base_url}{path} failed ({type(exc).__name__}: {exc}); is it running?"
            ) from exc
        if response.status_code != 200:
            raise EngineError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def served(self) -> list[dict]:
        """What the server says it serves (`/v1/models` without its start-up time), asked once."""
        if self._served is None:
            models = self.request("GET", "/v1/models").get("data", [])
            self._served = [{k: v for k, v in m.items() if k != "created"} for m in models]
        return self._served

    def params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature, "stop": self.stop}

    def cache_identity(self, call: str) -> dict[str, Any]:
        """What an output of `call` ("complete" or "chat") depends on besides the prompt."""
        return {"served": self.served(), "call": call, **self.params()}

    def _generate(self, path: str, body: dict) -> Generation:
        start = time.perf_counter()
        answer = self.request("POST", path, {**self.params(), **body})
        latency = time.perf_counter() - start
        choice, usage = answer["choices"][0], answer.get("usage", {})
        text = choice["text"] if "text" in choice else choice["message"]["content"] or ""
        return Generation(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), latency)

    def complete(self, prompt: str | dict) -> Generation:
        """`/v1/completions` for a text prompt (or the gateway's prompt reference, a dict)."""
        return self._generate("/v1/completions", {"prompt": prompt})

    def chat(self, messages: list[dict[str, str]]) -> Generation:
        """`/v1/chat/completions` for a message list (the server applies the model's chat template)."""
        return self._generate("/v1/chat/completions", {"messages": messages})


class OutputCache:
    """Outputs by key in SQLite (one connection per call: safe from threads and other processes)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or settings().home / "evals" / "cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, text TEXT, prompt_tokens INTEGER, "
                "completion_tokens INTEGER, latency_s REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(identity: dict, prompt: Prompt) -> str:
        return hashlib.sha256(json.dumps([identity, prompt], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Generation | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT text, prompt_tokens, completion_tokens, latency_s FROM outputs WHERE key = ?", (key,)
            )
            found = row.fetchone()
        return Generation(*found) if found else None

    def put(self, key: str, generation: Generation) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?)", (key, *generation))


@dataclass(frozen=True)
class Row:
    """One case's result; `cached` says the output came from the cache, not a new request."""

    case_id: str
    output: str
    score: float
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool


@dataclass(frozen=True)
class EvalRun:
    """The rows of one prompt over a list of cases, in case order."""

    task: str
    rows: tuple[Row, ...]

    @property
    def scores(self) -> list[float]:
        return [row.score for row in self.rows]

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.scores))

    def interval(self, confidence: float = 0.95, *, resamples: int = 2000, seed: int = 0) -> Interval:
        """Bootstrap interval of the accuracy."""
        return bootstrap(np.asarray(self.scores), confidence=confidence, resamples=resamples, seed=seed)

    def cost(self) -> dict[str, float]:
        """Mean prompt and completion tokens per case and median latency: what a better score costs."""
        return {
            "prompt_tokens": float(np.mean([row.prompt_tokens for row in self.rows])),
            "completion_tokens": float(np.mean([row.completion_tokens for row in self.rows])),
            "median_latency_s": statistics.median(row.latency_s for row in self.rows),
        }


def cache_identity(complete: Callable[[Any], Generation]) -> dict | None:
    """The identity a `complete` callable (or the object whose method it is) declares, else None."""
    owner = getattr(complete, "__self__", complete)
    declare = getattr(owner, "cache_identity", None)
    return declare(getattr(complete, "__name__", "__call__")) if declare else None


def run_cases(
    task: Task,
    cases: Sequence[Case],
    prompt: Callable[[Case], Prompt],
    complete: Callable[[Any], Generation],
    *,
    cache: bool | OutputCache = True,
    workers: int = 1,
    progress: bool = True,
) -> EvalRun:
    """Render, generate (or take from the cache) and score each case; rows in case order.

    Args:
        prompt: the case → the rendered text (for `Endpoint.complete`) or messages (for `Endpoint.chat`).
        complete: sends one rendered prompt; to be cached it must declare `cache_identity` (as
            `Endpoint` and `LabelChooser` do).
        cache: True for the shared cache under `LLMOPS_HOME/evals/`, an `OutputCache` for another file,
            False to always ask the server.
        workers: requests in flight at once (up to the server's slots; 1 keeps latencies unqueued).
    """
    if not cases:
        raise SpecError(f"no cases to run for task {task.name!r}: pass at least one case")
    if workers < 1:
        raise SpecError(f"workers must be at least 1, got {workers}")
    identity = cache_identity(complete) if cache else None
    if cache and identity is None:
        raise SpecError(f"{complete!r} declares no cache_identity: use an Endpoint, or pass cache=False")
    store = (OutputCache() if cache is True else cache) if cache else None

    def one(case: Case) -> Row:
        rendered = prompt(case)
        if store and not isinstance(rendered, str | list):
            raise SpecError("a prompt reference resolves on the server (its alias can move): pass cache=False")
        key = OutputCache.key(identity, rendered) if store else ""
        generation = store.get(key) if store else None
        cached = generation is not None
        if generation is None:
            generation = Generation(*complete(rendered))
            if store:
                store.put(key, generation)
        return Row(case.id, generation.text, score(task, case, generation.text), *generation[1:], cached)

    bar = tqdm(total=len(cases), desc=task.name, unit="case", disable=not progress or len(cases) < 20)
    with bar, ThreadPoolExecutor(workers) as pool:
        rows = []
        for row in pool.map(one, cases):
            rows.append(row)
            bar.update()
    return EvalRun(task.name, tuple(rows))
