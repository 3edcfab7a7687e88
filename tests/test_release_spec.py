"""Rollout specs, conditions and Argo's analysis rules: pure logic, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.release import analysis
from llmops_lib.release.analysis import (
    FAILED,
    INCONCLUSIVE,
    RUNNING,
    SUCCESSFUL,
    Measurement,
    MetricStatus,
    judge,
    outcome,
)
from llmops_lib.release.rollout import (
    MetricSpec,
    Pause,
    RolloutSpec,
    SetWeight,
    load_rollout,
    parse_duration,
    steps_from_text,
)
from llmops_lib.release.state import RolloutState, RolloutStore

ROOT = Path(__file__).resolve().parents[1]


def metric(**overrides) -> MetricSpec:
    return MetricSpec(
        **(
            {
                "name": "error-rate",
                "provider": "request_log",
                "query": "error_rate",
                "success_condition": "result <= 0.01",
            }
            | overrides
        )
    )


def spec(**overrides) -> RolloutSpec:
    base = {
        "name": "r",
        "model": "gemma",
        "candidate": "2",
        "stable_deployment": "stable",
        "canary_deployment": "canary",
        "steps": (SetWeight(20), Pause(5)),
    }
    return RolloutSpec(**(base | overrides))


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "rollouts").glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_load_and_round_trip(path):
    loaded = load_rollout(path)
    assert loaded.steps and RolloutSpec.from_dict(loaded.to_dict()) == loaded


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SetWeight(101), "0..100"),
        (lambda: SetWeight(-5), "0..100"),
        (lambda: SetWeight(True), "0..100"),
        (lambda: Pause("soon"), "duration"),
        (lambda: metric(query="error_rat"), "unknown request_log query"),
        (lambda: metric(provider="datadog"), "provider"),
        (lambda: metric(success_condition="reslt < 1"), "not allowed"),
        (lambda: metric(success_condition="__import__('os').system('true')"), "not allowed"),
        (lambda: metric(success_condition="result <"), "not a valid expression"),
        (lambda: metric(success_condition=None), "successCondition"),
        (lambda: metric(interval_s=0), "more than 0"),
        (lambda: metric(failure_limit=-1), "failure_limit"),
        (lambda: metric(on_missing="ignore"), "onMissing"),
        (lambda: spec(candidate=""), "candidate is missing"),
        (lambda: spec(steps=()), "no steps"),
        (lambda: spec(canary_deployment="stable"), "different deployments"),
        (lambda: spec(metrics=(metric(), metric())), "unique"),
    ],
)
def test_bad_specs_are_refused_with_the_field(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_yaml_camel_case_and_unknown_keys():
    data = {
        "name": "x",
        "model": "gemma",
        "canary": {"version": 3},
        "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"pause": {}}],
        "analysis": {
            "metrics": [
                {
                    "name": "m",
                    "provider": "request_log",
                    "query": "p95_latency_s",
                    "interval": "500ms",
                    "successCondition": "result < baseline * 1.2",
                    "failureLimit": 2,
                }
            ]
        },
    }
    loaded = RolloutSpec.from_dict(data)
    assert loaded.candidate == "3" and loaded.steps == (SetWeight(10), Pause(60.0), Pause(None))
    assert (
        loaded.metrics[0].interval_s == 0.5
        and loaded.metrics[0].failure_limit == 2
        and loaded.metrics[0].needs_baseline
    )
    with pytest.raises(SpecError, match="unknown keys"):
        RolloutSpec.from_dict(data | {"strategy": {}})
    with pytest.raises(SpecError, match="unknown step"):
        RolloutSpec.from_dict(data | {"steps": [{"setWieght": 10}]})
    with pytest.raises(SpecError, match="rollout spec"):
        RolloutSpec.from_dict(
            data
            | {
                "analysis": {
                    "metrics": [{"name": "m", "provider": "request_log", "query": "error_rate", "treshold": 1}]
                }
            }
        )


def test_durations_and_compact_steps():
    assert parse_duration("2m", "x") == 120 and parse_duration("250ms", "x") == 0.25 and parse_duration(3, "x") == 3
    assert steps_from_text("20, pause:10s, 50, pause") == (SetWeight(20), Pause(10.0), SetWeight(50), Pause())
    with pytest.raises(SpecError):
        steps_from_text("20,wait")
    assert spec(steps=(Pause(1), SetWeight(20), Pause(1), SetWeight(60))).weight_after(2) == 20


@pytest.mark.parametrize(
    "success, failure, value, expected",
    [
        ("result <= 0.01", None, 0.0, SUCCESSFUL),
        ("result <= 0.01", None, 0.5, FAILED),  # a success condition alone that does not hold fails
        ("result <= 0.01", "result > 0.1", 0.05, INCONCLUSIVE),  # neither holds
        ("result <= 0.01", "result > 0.1", 0.5, FAILED),
        (None, "result > 0.1", 0.05, SUCCESSFUL),
        ("result <= baseline * 1.05 and result < 100", None, 10.4, SUCCESSFUL),
        ("abs(result - baseline) < 0.1", None, 10.4, FAILED),
    ],
)
def test_measurement_phase_follows_argo(success, failure, value, expected):
    assert judge(metric(success_condition=success, failure_condition=failure), value, 10.0) == expected


def test_outcome_failure_limit_inconclusive_and_missing_data():
    m = metric(failure_limit=1, count=None)
    status = MetricStatus()
    assert outcome([m], {"error-rate": status})[0] == RUNNING  # no data is never a pass
    for phase in (SUCCESSFUL, FAILED):
        status.add(Measurement("error-rate", phase, 0, 1))
    assert outcome([m], {"error-rate": status})[0] == SUCCESSFUL  # one failure is within failureLimit 1
    status.add(Measurement("error-rate", FAILED, 1, 2))
    assert outcome([m], {"error-rate": status})[0] == FAILED
    flaky = MetricStatus()
    flaky.add(Measurement("error-rate", INCONCLUSIVE, 0, 1))
    assert outcome([m], {"error-rate": flaky})[0] == INCONCLUSIVE
    broken = MetricStatus()
    for _ in range(5):
        broken.add(Measurement("error-rate", analysis.ERROR, 0, 1))
    assert outcome([m], {"error-rate": broken})[0] == FAILED


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def read(self, query, targets, since, until):
        return [analysis.REQUEST_LOG_QUERIES[query](analysis._served(self.rows, t.deployment)) for t in targets]


def test_measure_reads_canary_and_baseline_and_handles_missing():
    rows = [
        {"deployment": "canary", "http_status": 200},
        {"deployment": "canary", "http_status": 400, "error_type": "upstream_4xx"},
        {"deployment": "stable", "http_status": 200},
        {"deployment": "stable", "http_status": 200, "fallback_from": "canary"},
    ]
    canary, stable = analysis.Target("canary", None, None), analysis.Target("stable", None, None)
    got = analysis.measure(metric(success_condition="result <= baseline"), _Rows(rows), canary, stable, 0, 1)
    assert (got.value, got.baseline, got.samples, got.phase) == (
        2 / 3,
        0.0,
        3,
        FAILED,
    )  # the fallback counts against the canary
    assert analysis.measure(metric(min_samples=5, on_missing="skip"), _Rows(rows), canary, stable, 0, 1) is None
    missing = analysis.measure(metric(min_samples=5), _Rows(rows), canary, stable, 0, 1)
    assert missing.phase == INCONCLUSIVE and "missing data" in missing.message


def test_store_is_atomic_and_audit_survives_a_torn_line(tmp_path):
    store = RolloutStore("r", tmp_path)
    state = RolloutState(
        name="r", spec=spec().to_dict(), phase="Pending", candidate_version="2", stable_version="1", started_at=1.0
    )
    store.save(state)
    store.append({"type": "A"})
    with store.audit_path.open("a") as out:
        out.write('{"type": "cut sho')  # a crash mid-write
    assert store.load() == state and [e["type"] for e in store.audit()] == ["A"]
    with pytest.raises(SpecError, match="still Pending"):
        store.archive()
    with store.controller_lock(), pytest.raises(Exception, match="another controller"), store.controller_lock():
        pass


def test_hooks_as_callables_and_http(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from llmops_lib.release.hooks import Hook, call_all

    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200 if self.path == "/yes" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        hooks = [
            Hook("confirm-promotion", url=f"{url}/yes"),
            Hook("confirm-promotion", url=f"{url}/no"),
            Hook("confirm-promotion", url="http://127.0.0.1:9/down", timeout_s=1),
            Hook("rollback", call=lambda p: None),
            Hook("confirm-rollout", call=lambda p: 1 / 0),
        ]
        answers = call_all(hooks, "confirm-promotion", {"name": "r"})
        assert [a["yes"] for a in answers] == [True, False, False] and json.loads(received[0]) == {"name": "r"}
        assert [a["yes"] for a in call_all(hooks, "rollback", {})] == [False]  # None never asks for a rollback
        assert "ZeroDivisionError" in call_all(hooks, "confirm-rollout", {})[0]["detail"]
    finally:
        server.shutdown()
    with pytest.raises(SpecError, match="exactly one"):
        Hook("event")


def test_cli_help():
    from typer.testing import CliRunner

    from llmops_lib.release.cli import registry_app, rollout_app

    for app, commands in (
        (rollout_app, ("run", "resume", "status", "promote", "abort", "undo")),
        (registry_app, ("register", "list", "alias", "history")),
    ):
        result = CliRunner().invoke(app, ["--help"])
        assert result.exit_code == 0 and all(c in result.output for c in commands)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": [{"setWeight": 150}]}, "0..100"),
        (
            {
                "analysis": {
                    "metrics": [
                        {"name": "m", "provider": "request_log", "query": "latency", "successCondition": "result < 1"}
                    ]
                }
            },
            "unknown request_log query",
        ),
        ({"canary": {"deployment": "canary"}}, "candidate is missing"),
    ],
)
def test_cli_refuses_a_bad_spec_with_exit_code_2_before_anything_moves(tmp_path, change, message):
    import yaml
    from typer.testing import CliRunner

    from llmops_lib.release.cli import rollout_app

    data = yaml.safe_load((ROOT / "deploy" / "rollouts" / "quick.yaml").read_text()) | change
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(
        rollout_app, ["run", str(path), "--gateway", "http://127.0.0.1:9"]
    )  # nothing listens there
    assert result.exit_code == 2 and message in result.output
