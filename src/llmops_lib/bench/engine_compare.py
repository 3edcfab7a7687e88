"""Two engines, one model, one load: start time, memory, throughput and TTFT per concurrency.

Each engine is started from its name and the same `EngineSpec` (`make_engine`), timed from
launch to healthy, warmed up, measured at each concurrency with the same seeded workload through
`run_load`, weighed (resident memory of its whole process tree) and stopped before the next one
starts, so the engines never compete for the cores. vLLM's export of the GGUF to HF format is done
before its clock starts: it happens once per model, not once per start.

Explained in: book/chapters/02_optimization/choosing_an_engine.ipynb
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from llmops_lib.bench.sweep import sweep_concurrency
from llmops_lib.bench.traffic import Workload
from llmops_lib.engines import EngineSpec, make_engine
from llmops_lib.engines.hf_export import export_hf


@dataclass(frozen=True)
class EngineMeasurement:
    """One engine's numbers: start-up, memory, and serving metrics by concurrency."""

    engine: str
    start_s: float
    """Launch to healthy (the model already on disk in the engine's format)."""
    rss_idle_bytes: int
    """Resident memory of the server's process tree after start and a warm-up request."""
    rss_loaded_bytes: int
    """The same after the highest concurrency level."""
    levels: tuple[dict[str, object], ...]
    """`ServingMetrics.as_dict()` of each level, plus its `concurrency`, `errors` and each request's `texts`."""

    def level(self, concurrency: int) -> dict[str, object]:
        return next(row for row in self.levels if row["concurrency"] == concurrency)

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"levels": list(self.levels)}


def measure_engine(
    name: str,
    spec: EngineSpec,
    concurrencies: Sequence[int],
    *,
    rounds: int = 2,
    output_len: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> EngineMeasurement:
    """Start engine `name` on `spec`, load it at each concurrency (rounds × concurrency requests
    of exactly `output_len` tokens), and stop it. `spec.parallel` should be ≥ the highest level."""
    if name == "vllm":
        export_hf(spec.model)
    server = make_engine(name, spec)
    began = time.perf_counter()
    with server:
        start_s = time.perf_counter() - began
        server.complete("Warm up.", max_tokens=4)
        rss_idle = server.rss_bytes()
        swept = sweep_concurrency(
            server,
            Workload.random(output_len, seed=seed),
            concurrencies,
            rounds=rounds,
            counters=False,
            warm_up=False,
            progress=progress,
        )
        rss_loaded = server.rss_bytes()
    # each request's text by its index in the seeded workload (None if it failed): greedy outputs compare
    levels = [
        level.as_dict() | {"texts": [o.completion.text if o.completion else None for o in level.load.outcomes]}
        for level in swept
    ]
    return EngineMeasurement(name, start_s, rss_idle, rss_loaded, tuple(levels))


def ratios(numerator: EngineMeasurement, denominator: EngineMeasurement) -> list[dict[str, float]]:
    """Per concurrency both engines ran: output throughput and median TTFT, numerator / denominator."""

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")  # an engine that served nothing has no ratio

    rows = []
    for row in numerator.levels:
        concurrency = row["concurrency"]
        other = denominator.level(concurrency)
        rows.append(
            {
                "concurrency": concurrency,
                "output_throughput_ratio": ratio(row["output_throughput"], other["output_throughput"]),
                "median_ttft_ratio": ratio(row["median_ttft_ms"], other["median_ttft_ms"]),
            }
        )
    return rows


@dataclass(frozen=True)
class Agreement:
    """How far two engines' greedy outputs for the same requests agree, token by token."""

    requests: int
    """Requests both engines completed."""
    identical: int
    """Of those, how many outputs were the same text."""
    tokens: int
    """Tokens compared: per request, the longer of the two outputs."""
    agreeing: int
    """Tokens before the first divergence (greedy outputs differ everywhere after it)."""

    @property
    def rate(self) -> float:
        return self.agreeing / self.tokens if self.tokens else float("nan")


def greedy_agreement(a: EngineMeasurement, b: EngineMeasurement, tokenize: Callable[[str], Sequence[int]]) -> Agreement:
    """Token-level agreement of the outputs of every request both engines completed, at every level
    both ran (`tokenize`: text to token ids with one tokenizer, e.g. the GGUF's)."""
    requests = identical = tokens = agreeing = 0
    for row in a.levels:
        for text_a, text_b in zip(row["texts"], b.level(row["concurrency"])["texts"], strict=True):
            if text_a is None or text_b is None:
                continue
            ids_a, ids_b = list(tokenize(text_a)), list(tokenize(text_b))
            prefix = next(
                (i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y), min(len(ids_a), len(ids_b))
            )
            requests += 1
            identical += text_a == text_b
            tokens += max(len(ids_a), len(ids_b))
            agreeing += prefix
    return Agreement(requests, identical, tokens, agreeing)
