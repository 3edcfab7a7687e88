"""The load generator: drive an engine with a workload at a concurrency or a Poisson rate.

Works with anything that has `complete()` — an `OpenAIClient` on any OpenAI-compatible endpoint
(llama-server, vLLM, a gateway), or a running server's `client`. Each request is streamed and
timed by the client (see `timed_completion`); threads rather than asyncio, because each request
is one blocking stream and at the concurrencies a CPU server sustains the threads wait, not work.
A request that fails is kept with its error and counted as failed: none is dropped.

Explained in: book/chapters/02_optimization/batching
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm.auto import tqdm

from llmops_lib.bench.latency import ServingMetrics, check_slos
from llmops_lib.bench.traffic import LoadPlan, RequestSpec, Workload
from llmops_lib.engines.base import Completion, Engine
from llmops_lib.errors import EngineError


@dataclass(frozen=True)
class RequestOutcome:
    """What became of one request: its completion, or the error that ended it."""

    request: RequestSpec
    sent_at_s: float
    """Seconds after the run started at which the request left."""
    completion: Completion | None = None
    error: str | None = None


@dataclass(frozen=True)
class LoadResult:
    """A load run: every request's outcome (by index) and the serving metrics over them."""

    workload: Workload
    plan: LoadPlan
    outcomes: tuple[RequestOutcome, ...]
    metrics: ServingMetrics

    @property
    def completions(self) -> list[Completion]:
        return [o.completion for o in self.outcomes if o.completion is not None]

    @property
    def errors(self) -> Counter[str]:
        """Each distinct error message with how many requests it ended."""
        return Counter(o.error for o in self.outcomes if o.error is not None)

    def as_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload.as_dict(),
            "plan": self.plan.as_dict(),
            "metrics": self.metrics.as_dict(),
            "errors": dict(self.errors),
        }


def _send(engine: Engine, workload: Workload, request: RequestSpec, sent_at_s: float) -> RequestOutcome:
    try:
        completion = engine.complete(request.prompt, max_tokens=request.max_tokens, ignore_eos=workload.ignore_eos)
    except Exception as exc:  # any failure is a measured outcome of the run, never a crash of it
        return RequestOutcome(request, sent_at_s, error=f"{type(exc).__name__}: {exc}")
    return RequestOutcome(request, sent_at_s, completion=completion)


def run_load(
    engine: Engine,
    workload: Workload,
    plan: LoadPlan,
    *,
    slos: Mapping[str, float] | None = None,
    progress: bool = True,
) -> LoadResult:
    """Send the workload as the plan says, wait for every request, and measure.

    Args:
        engine: what answers, e.g. `OpenAIClient(url)` or `server.client`. It must accept
            `plan.concurrency` calls at once (one at a time for the in-process engine).
        workload: the requests (prompts, lengths, seed).
        plan: concurrency or Poisson rate, and when to stop sending.
        slos: goodput limits in milliseconds by metric (`ttft`, `tpot`, `e2el`).
        progress: show a progress bar of finished requests.

    Raises:
        SpecError: an unknown SLO name or a non-positive limit (checked before anything is sent).
    """
    slos = check_slos(slos or {})
    slots = threading.BoundedSemaphore(plan.concurrency)
    futures = []
    with (
        tqdm(total=plan.num_requests, desc="requests", unit="req", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=plan.concurrency, thread_name_prefix="load") as pool,
    ):

        def finished(_future: object) -> None:
            slots.release()
            bar.update()

        start = time.perf_counter()
        for index, offset in enumerate(plan.send_offsets(workload.seed)):
            time.sleep(max(0.0, start + offset - time.perf_counter()))
            slots.acquire()  # a full house delays the send, as a client with a pool would
            sent_at = time.perf_counter() - start
            if plan.duration_s is not None and sent_at >= plan.duration_s:
                slots.release()
                break
            future = pool.submit(_send, engine, workload, workload.request(index), sent_at)
            future.add_done_callback(finished)
            futures.append(future)
        outcomes = tuple(future.result() for future in futures)
    duration = time.perf_counter() - start
    completions = [o.completion for o in outcomes if o.completion is not None]
    metrics = ServingMetrics.of(completions, duration, failed=len(outcomes) - len(completions), slos=slos)
    return LoadResult(workload, plan, outcomes, metrics)


def run_sequential(
    engine: Engine,
    prompts: Sequence[str],
    *,
    requests: int,
    max_tokens: int,
    ignore_eos: bool = False,
    progress: bool = True,
) -> tuple[list[Completion], ServingMetrics]:
    """Send `requests` greedy completions one after another, cycling through `prompts`.

    The health check's measurement: any failed request raises, since one stream that fails is
    an unhealthy engine, not a data point.
    """
    workload = Workload(prompts=tuple(prompts), output_tokens=(max_tokens, max_tokens), ignore_eos=ignore_eos)
    result = run_load(engine, workload, LoadPlan(concurrency=1, num_requests=requests), progress=progress)
    if result.errors:
        raise EngineError(f"{result.metrics.failed} of {requests} requests failed: {next(iter(result.errors))}")
    return result.completions, result.metrics
