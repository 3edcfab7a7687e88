"""The eval gate: a paired comparison with literal cases, and on real engines a Q2_K canary that
serves as fast as stable but answers worse, rolled back by the release's evaluation metric.

The capitals outputs of each model file are cached under LLMOPS_HOME (keyed by what the engine
serves), so after the first run the evaluations cost no generation; the latency is measured live.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.evals.gate import compare_runs, score_endpoint
from llmops_lib.evals.run import Endpoint, EvalRun, Row
from llmops_lib.optimize.quantize import model_as
from llmops_lib.release import Controller, Hook, Registry, RolloutSpec
from llmops_lib.release.local import LocalRelease, on_a_short_scale, rehearsal_registry
from llmops_lib.release.rollout import load_rollout
from llmops_lib.release.traffic import BackgroundTraffic

ROOT = Path(__file__).resolve().parents[1]


def _run(task: str, scores: list[float], ids: list[str] | None = None) -> EvalRun:
    ids = ids or [f"c{i}" for i in range(len(scores))]
    return EvalRun(task, tuple(Row(i, "", s, 0, 0, 0.0, False) for i, s in zip(ids, scores, strict=True)))


def test_compare_runs_pairs_by_case_id_and_fails_beyond_the_tolerance():
    baseline = _run("capitals", [1.0] * 10)
    worse = _run("capitals", [1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    result = compare_runs(worse, baseline, tolerance=0.05)
    assert not result.passed and result.n == 10
    assert (result.candidate_score, result.baseline_score) == (0.7, 1.0)
    assert result.difference == pytest.approx(-0.3)
    assert result.p_value == pytest.approx(0.25)  # McNemar exact: 3 discordant pairs, 2 · (1/2)^3
    assert result.interval.low <= -0.3 <= result.interval.high and "regression" in result.reason
    # one case worse in ten is a drop of 0.1: within a tolerance of 0.1, exactly at its edge
    one_worse = _run("capitals", [1] * 9 + [0])
    assert compare_runs(one_worse, baseline, tolerance=0.1).passed
    assert not compare_runs(one_worse, baseline, tolerance=0.09).passed
    # rows in another order are paired by id, not by position
    shuffled = _run("capitals", [0, 1] * 5, ids=[f"c{i}" for i in (1, 0, 3, 2, 5, 4, 7, 6, 9, 8)])
    same = compare_runs(shuffled, _run("capitals", [1, 0] * 5), tolerance=0.0)
    assert same.passed and same.difference == 0 and same.p_value == 1.0
    with pytest.raises(SpecError, match="same cases"):
        compare_runs(_run("capitals", [1, 1]), _run("capitals", [1, 1], ids=["x", "y"]), tolerance=0.05)
    with pytest.raises(SpecError, match="different tasks"):
        compare_runs(_run("capitals", [1, 1]), _run("sentiment", [1, 1]), tolerance=0.05)
    with pytest.raises(SpecError, match="tolerance"):
        compare_runs(worse, baseline, tolerance=1.5)


@pytest.fixture(scope="module")
def q2k_model(model_path) -> Path:
    """The quality-regressing candidate: the default model re-quantized to Q2_K (cached under LLMOPS_HOME)."""
    return model_as(model_path, "Q2_K")


def test_q2k_canary_passes_latency_and_is_rolled_back_by_the_eval_metric(model_path, q2k_model, tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    records = rehearsal_registry(registry, "gemma", [q2k_model], who="test")
    stable, candidate = registry.get("gemma", "stable"), records[q2k_model.name]
    shipped = on_a_short_scale(load_rollout(ROOT / "deploy/rollouts/eval_gated.yaml").to_dict())
    spec = RolloutSpec.from_dict(
        shipped
        | {
            "name": f"t-{uuid.uuid4().hex[:8]}",
            "canary": {"version": candidate.version, "deployment": "canary"},
            "steps": [{"setWeight": 50}, {"pause": {"duration": "120s"}}],
        }
    )
    log = tmp_path / "requests.sqlite"
    with LocalRelease(stable, candidate, request_log=log, admin_key="release-admin") as env:
        identities = [Endpoint(env.engines[side].base_url).cache_identity("complete") for side in ("canary", "stable")]
        controller = Controller.create(
            spec,
            gateway_url=env.gateway_url,
            request_log=str(log),
            registry=registry,
            admin_key="release-admin",
            hooks=[Hook("post-rollout", env.stop_canary)],
            who="test",
        )
        with BackgroundTraffic(env.gateway_url, "gemma", concurrency=2, max_tokens=4):
            state = controller.run(poll_s=0.2, timeout_s=200)
    # another model file is another cache key: a cached stable answer can never stand in for the canary's
    assert identities[0] != identities[1]
    assert state.phase == "RolledBack" and "capitals-score" in state.reason, state.reason
    measured = [e for e in controller.audit() if e["type"] == "Measurement"]
    latency = [e for e in measured if e["metric"] == "p95-latency"]
    errors = [e for e in measured if e["metric"] == "error-rate"]
    score = [e for e in measured if e["metric"] == "capitals-score"]
    assert latency and all(e["phase"] == "Successful" for e in latency + errors)  # speed alone would promote it
    assert len(score) == 1 and score[0]["phase"] == "Failed"
    assert score[0]["value"] < score[0]["baseline"] - 0.05
    assert registry.aliases("gemma") == {"stable": stable.version}


def _runbook(*params: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "llmops_lib", "runbook", "run", "eval_gate"]
    for param in params:
        args += ["-p", param]
    return subprocess.run(args, capture_output=True, text=True, env=os.environ, cwd=ROOT, timeout=600)


def test_eval_gate_runbook_exits_3_on_q2k_and_0_on_an_identical_candidate(model_path, q2k_model):
    regressed = _runbook("candidate_type=Q2_K")
    assert regressed.returncode == 3, regressed.stdout + regressed.stderr
    identical = _runbook(f"candidate_model={model_path}")
    assert identical.returncode == 0, identical.stdout + identical.stderr
    bad = _runbook("tolerance=2")
    assert bad.returncode == 2 and "tolerance" in bad.stderr + bad.stdout


def test_a_second_run_on_the_same_model_file_is_served_from_the_cache(server):
    first = score_endpoint(server.base_url, "capitals", limit=6)
    again = score_endpoint(server.base_url, "capitals", limit=6)
    assert all(row.cached for row in again.rows)
    assert [row.output for row in again.rows] == [row.output for row in first.rows]
