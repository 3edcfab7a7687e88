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
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from llmops_lib.bench.load import run_load
from llmops_lib.bench.traffic import LoadPlan, Workload
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
    """`ServingMetrics.as_dict()` of each level, plus its `concurrency` and `errors`."""

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
        levels = []
        for concurrency in sorted(concurrencies):
            result = run_load(
                server.client,
                Workload.random(output_len, seed=seed),
                LoadPlan(concurrency=concurrency, num_requests=rounds * concurrency),
                progress=progress,
            )
            levels.append(result.metrics.as_dict() | {"concurrency": concurrency, "errors": dict(result.errors)})
        rss_loaded = server.rss_bytes()
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
