"""Benchmark results as JSON files that carry the machine and versions they were measured on.

Explained in: benchmarks/ (every script writes its table's numbers through `write_report`).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmops_lib.about import environment


def write_report(path: Path, benchmark: str, report: dict[str, object]) -> None:
    """Write `report` to `path` (folders created) under the benchmark's name and this machine's
    environment, so a number never travels without the hardware it came from; prints where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": benchmark, "environment": environment()} | report
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"JSON: {path}")
