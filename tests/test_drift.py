"""Drift of real traffic: Gemma behind the gateway (text captured), two kinds of traffic sent through it,
compared with Evidently in its own environment; and the drift_report runbook as an operator runs it."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmops_lib.errors import ExitCode, SpecError
from llmops_lib.evals.run import Endpoint
from llmops_lib.evals.tasks import load_task
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.guards.pii import STRUCTURED
from llmops_lib.observe.drift import drift_report, drift_reports, parse_moment
from llmops_lib.observe.request_log import RequestLogReader

ROOT = Path(__file__).resolve().parents[1]
PER_WINDOW = 40


def send(url: str, prompts: list[str]) -> tuple[float, float]:
    """Send the prompts through the gateway (two at a time: the engine's slots); the window they took."""
    since = time.time()
    with Endpoint(url, model="gemma", max_tokens=4, stop=["\n"]) as endpoint, ThreadPoolExecutor(2) as pool:
        list(pool.map(endpoint.complete, prompts))
    time.sleep(0.01)
    return since, time.time()


@pytest.fixture(scope="module")
def traffic(server, tmp_path_factory):
    """The same traffic (capital-city questions, shuffled), then a shifted one (longer prompts on another
    topic: sentences to extract into JSON); the log and each window's (since, until)."""
    log = tmp_path_factory.mktemp("drift") / "requests.sqlite"
    config = GatewayConfig(
        routes=[Route(model="gemma", deployments=[Deployment(name="stable", url=server.base_url)])],
        request_log=str(log),
        capture_text=True,
        redact_entities=list(STRUCTURED),  # synthetic traffic: names and places stay scorable
        cache_size=0,
    )
    capitals, extraction = load_task("capitals"), load_task("extraction")
    usual = [capitals.render(case) for case in capitals.cases]
    random.Random(0).shuffle(usual)
    shifted = [extraction.render(case) for case in extraction.cases]
    with GatewayServer(config) as gateway:
        windows = {"usual": send(gateway.base_url, usual[:PER_WINDOW])}
        windows["shifted"] = send(gateway.base_url, shifted[:PER_WINDOW])
    reader = RequestLogReader(log)
    rows = {name: reader.rows(*window) for name, window in windows.items()}
    assert [len(r) for r in rows.values()] == [PER_WINDOW, PER_WINDOW]
    return log, windows, rows


def test_shifted_traffic_is_flagged_and_halves_of_the_same_traffic_are_not(traffic, tmp_path):
    _, _, rows = traffic
    usual = list(rows["usual"])
    random.Random(1).shuffle(usual)
    pairs = {"shifted": (rows["usual"], rows["shifted"]), "same": (usual[:20], usual[20:])}
    results = drift_reports(pairs, tmp_path)
    shifted, same = results["shifted"], results["same"]
    assert shifted.drifted and {"input_tokens", "prompt_chars", "prompt_words"} <= set(shifted.drifted_columns())
    assert not same.drifted, same.drifted_columns()
    assert (shifted.reference_rows, shifted.current_rows, same.reference_rows) == (40, 40, 20)
    assert shifted.skipped == {} and len(shifted.per_column) == 13
    assert all(c.threshold == pytest.approx(0.05 / 13) for c in shifted.per_column.values())
    html = shifted.html.read_text()
    assert "Dataset Drift" in html or "drift" in html.lower()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", html), (
        "the report is self-contained"
    )
    evidently_json = json.loads(shifted.json.read_text())
    assert len(evidently_json["metrics"]) == 14  # the drifted-columns count and one test per column


def test_bad_windows_and_columns_are_refused_before_evidently_runs(traffic, tmp_path):
    _, _, rows = traffic
    with pytest.raises(SpecError, match="unknown drift column.*prompt_size.*choose from"):
        drift_report(rows["usual"], rows["shifted"], tmp_path, columns=["prompt_size"])
    with pytest.raises(SpecError, match="current window of '.' holds 5 request"):
        drift_report(rows["usual"], rows["shifted"][:5], tmp_path)
    with pytest.raises(SpecError, match="alpha must be within"):
        drift_report(rows["usual"], rows["shifted"], tmp_path, alpha=1.5)
    assert parse_moment("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_moment("2026-01-31T00:00") == 1769817600.0
    with pytest.raises(SpecError, match="neither a duration"):
        parse_moment("yesterday")


def llmops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmops_lib", *args], capture_output=True, text=True, cwd=ROOT, env=os.environ.copy()
    )


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).isoformat()


def test_drift_report_runbook_exits_3_on_drift_with_its_report_archived(traffic):
    log, windows, _ = traffic
    (ref_since, ref_until), (cur_since, cur_until) = windows["usual"], windows["shifted"]
    result = llmops(
        "runbook", "run", "drift_report", "--no-progress",
        "-p", f"request_log={log}",
        "-p", f"reference_since={iso(ref_since)}", "-p", f"reference_until={iso(ref_until)}",
        "-p", f"current_since={iso(cur_since)}", "-p", f"current_until={iso(cur_until)}",
    )  # fmt: skip
    assert result.returncode == ExitCode.GATE_FAILED, result.stderr
    assert "gate 'no_drift' failed: drifted: " in result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    records = json.loads((folder / "summary.json").read_text())["records"]
    assert records["rows"] == {"reference": 40, "current": 40}
    assert "input_tokens" in records["drifted_columns"]
    assert (folder / "drift" / "drift.html").stat().st_size > 100_000


def test_drift_report_runbook_exits_0_when_a_window_meets_itself(traffic):
    log, windows, _ = traffic
    since, until = windows["usual"]
    result = llmops(
        "runbook", "run", "drift_report", "--no-progress",
        "-p", f"request_log={log}",
        "-p", f"reference_since={iso(since)}", "-p", f"reference_until={iso(until)}",
        "-p", f"current_since={iso(since)}", "-p", f"current_until={iso(until)}",
        "-p", "columns=input_tokens,prompt_chars,completion_chars",
    )  # fmt: skip
    assert result.returncode == ExitCode.OK, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    records = json.loads((folder / "summary.json").read_text())["records"]
    assert records["drifted_columns"] == [] and records["share_drifted"] == 0.0
