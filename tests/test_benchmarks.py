"""Benchmarks are scripts people run: each must explain itself and actually run (no speed asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_help(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.engine
def test_engine_baseline_runs_and_writes_ratios(tmp_path, model_path):
    out = tmp_path / "baseline.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/engine_baseline.py"),
            "--threads",
            "1",
            "--repeats",
            "1",
            "--max-tokens",
            "8",
            "--paths",
            "in-process",
            "llama-server",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "roofline:" in result.stdout and "llama-server" in result.stdout
    report = json.loads(out.read_text())
    base, server = report["results"]["in-process"], report["results"]["llama-server"]
    assert base["generation_tokens_per_s"] > 0 and server["generation_tokens_per_s"] > 0
    assert report["roofline_tokens_per_s"] > 0
    # The ratios are the reported speeds divided, recomputed here from the raw numbers.
    assert server["generation_vs_in_process"] == pytest.approx(
        server["generation_tokens_per_s"] / base["generation_tokens_per_s"]
    )
    assert server["generation_vs_roofline"] == pytest.approx(
        server["generation_tokens_per_s"] / report["roofline_tokens_per_s"]
    )
