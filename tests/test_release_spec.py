"""Rollout specs, conditions and Argo's analysis rules: pure logic, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.release import analysis, conditions
from llmops_lib.release.analysis import Measurement, MetricStatus, judge, outcome
from llmops_lib.release.phases import AnalysisPhase, Phase
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

SUCCESSFUL, FAILED, INCONCLUSIVE = AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED, AnalysisPhase.INCONCLUSIVE

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
        (lambda: SetWeight(101), "weight: Input should be less than or equal to 100"),
        (lambda: SetWeight(-5), "weight: Input should be greater than or equal to 0"),
        (lambda: SetWeight(True), "weight: Input should be a valid integer"),
        (lambda: Pause("soon"), "must be a duration like 30s"),
        (lambda: metric(query="error_rat"), "query: unknown request_log query 'error_rat'; use one of error_rate"),
        (lambda: metric(provider="datadog"), "provider: Input should be 'request_log', 'prometheus' or 'evaluation'"),
        (lambda: metric(success_condition="reslt < 1"), "success_condition: 'reslt' is not allowed"),
        (lambda: metric(success_condition="__import__('os').system('true')"), "not allowed"),
        (lambda: metric(success_condition="result <"), "not a valid expression"),
        (lambda: metric(success_condition=None), "give a successCondition, a failureCondition or both"),
        (lambda: metric(interval_s=0), "interval_s: Input should be greater than 0"),
        (lambda: metric(failure_limit=-1), "failure_limit: Input should be greater than or equal to 0"),
        (lambda: metric(on_missing="ignore"), "on_missing: Input should be 'inconclusive'"),
        (lambda: metric(name="Error Rate"), "name: 'Error Rate' must be lower-case letters"),
        (lambda: spec(candidate=""), "canary.version: the candidate is missing"),
        (lambda: spec(steps=()), "no steps"),
        (lambda: spec(canary_deployment="stable"), "different deployments"),
        (lambda: spec(metrics=(metric(), metric())), "metric names must be unique"),
    ],
)
def test_bad_specs_are_refused_with_the_field(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def _yaml_spec() -> dict:
    return {
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
        "hooks": [{"type": "event", "url": "http://127.0.0.1:9/events", "timeout": "2s"}],
        "onRestart": "abort",
    }


def test_yaml_is_argo_camel_case_and_snake_case_works_too():
    loaded = RolloutSpec.from_dict(_yaml_spec())
    assert loaded.candidate == "3" and loaded.steps == (SetWeight(10), Pause(60.0), Pause(None))
    assert (loaded.stable_deployment, loaded.canary_deployment, loaded.on_restart) == ("stable", "canary", "abort")
    only = loaded.metrics[0]
    assert (only.interval_s, only.failure_limit, only.needs_baseline) == (0.5, 2, True)
    assert (loaded.hooks[0].kind, loaded.hooks[0].timeout_s) == ("event", 2.0)
    snake = _yaml_spec() | {"on_restart": "abort"}
    del snake["onRestart"]
    snake["analysis"]["metrics"][0] |= {"failure_limit": 2, "success_condition": "result < baseline * 1.2"}
    del snake["analysis"]["metrics"][0]["failureLimit"], snake["analysis"]["metrics"][0]["successCondition"]
    assert RolloutSpec.from_dict(snake) == loaded
    dumped = loaded.to_dict()  # what the state file keeps: Argo's keys, durations as text
    assert dumped["steps"] == [{"setWeight": 10}, {"pause": {"duration": "60s"}}, {"pause": {}}]
    assert dumped["analysis"]["metrics"][0]["interval"] == "0.5s" and dumped["onRestart"] == "abort"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["analysis"]["metrics"][0].update(interval="0s"),
            "rollout spec: analysis.metrics.0.interval: Input should be greater than 0",
        ),
        (
            lambda d: d["analysis"]["metrics"][0].update(interval="soon"),
            "analysis.metrics.0.interval: must be a duration like 30s, 500ms or 2m, got 'soon'",
        ),
        (
            lambda d: d["analysis"]["metrics"][0].update(failureLimit=-1),
            "analysis.metrics.0.failureLimit: Input should be greater than or equal to 0",
        ),
        (
            lambda d: d["analysis"]["metrics"][0].update(successCondition="result < 1; import os"),
            "analysis.metrics.0.successCondition: 'result < 1; import os' is not a valid expression",
        ),
        (lambda d: d["steps"].insert(0, {"setWeight": 150}), "steps.0.setWeight: Input should be less than or equal"),
        (lambda d: d["steps"].append({"pause": {"duration": "2m", "then": 1}}), "steps.3.pause: a pause takes only"),
        (lambda d: d["steps"].append({"setWieght": 10}), "steps.3: each step has one key: setWeight"),
        (lambda d: d["hooks"][0].update(type="approve"), "hooks.0.type: Input should be 'confirm-rollout'"),
        (lambda d: d["hooks"][0].update(url="ftp://x"), "hooks.0.url: must start with http:// or https://"),
        (lambda d: d.update(onRestart="retry"), "onRestart: Input should be 'resume' or 'abort'"),
        (lambda d: d["canary"].pop("version"), "canary.version: the candidate is missing"),
        (lambda d: d.pop("model"), "model: is required"),
    ],
)
def test_a_bad_value_is_named_by_its_path_as_written(change, message):
    data = _yaml_spec()
    change(data)
    with pytest.raises(SpecError) as refused:
        RolloutSpec.from_dict(data)
    assert message in str(refused.value)


def test_unknown_keys_are_refused_with_the_keys_accepted_there():
    with pytest.raises(SpecError, match=r"strategy: unknown key; accepted here: analysis, canary, hooks, model, name"):
        RolloutSpec.from_dict(_yaml_spec() | {"strategy": {}})
    data = _yaml_spec()
    data["analysis"]["metrics"][0]["treshold"] = 1
    data["canary"]["weight"] = 5
    with pytest.raises(SpecError) as refused:
        RolloutSpec.from_dict(data)
    assert "canary.weight: unknown key; accepted here: deployment, url, version" in str(refused.value)
    assert "analysis.metrics.0.treshold: unknown key; accepted here: consecutiveErrorLimit, count" in str(refused.value)


def test_a_rollout_file_names_itself_and_the_path(tmp_path):
    import yaml

    data = _yaml_spec()
    data["analysis"]["metrics"][0]["interval"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=rf"^{path}: analysis.metrics.0.interval: must not be negative, got -1$"):
        load_rollout(path)


def test_durations_and_compact_steps():
    assert parse_duration("2m") == 120 and parse_duration("250ms") == 0.25 and parse_duration(3) == 3
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
    assert outcome([m], {"error-rate": status})[0] == AnalysisPhase.RUNNING  # no data is never a pass
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
        broken.add(Measurement("error-rate", AnalysisPhase.ERROR, 0, 1))
    assert outcome([m], {"error-rate": broken})[0] == FAILED


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def read(self, query, targets, since, until):
        return [analysis.READERS[query](analysis._served(self.rows, t.deployment)) for t in targets]


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


def test_an_interrupted_save_leaves_the_previous_state_and_no_partial_file(tmp_path):
    store = RolloutStore("r", tmp_path)
    state = RolloutState(
        name="r", spec=spec().to_dict(), phase="Pending", candidate_version="2", stable_version="1", started_at=1.0
    )
    store.save(state)
    before = store.state_path.read_bytes()
    state.phase, state.step_index = Phase.PROGRESSING, 1
    state.metrics = {"error-rate": {"measured": 1, "last_at": object()}}  # json.dump fails half-way through
    with pytest.raises(TypeError, match="not JSON serializable"):
        store.save(state)
    assert store.state_path.read_bytes() == before and sorted(p.name for p in tmp_path.joinpath("r").iterdir()) == [
        "state.json"
    ]
    loaded = store.load()
    assert loaded.phase is Phase.PENDING and loaded.step_index == -1


def test_audit_survives_a_torn_line_and_a_running_rollout_is_not_archived(tmp_path):
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


def test_phases_say_when_they_are_final():
    assert [p for p in Phase if p.done] == [Phase.PROMOTED, Phase.ROLLED_BACK]
    assert [p for p in AnalysisPhase if not p.completed] == [AnalysisPhase.RUNNING]
    assert json.loads(json.dumps({"phase": Phase.ROLLED_BACK})) == {"phase": "RolledBack"}  # as the audit keeps it


def test_every_request_log_query_of_the_grammar_has_a_reader():
    assert analysis.READERS.keys() == conditions.REQUEST_LOG_QUERIES.keys()


def test_rollout_status_lists_what_it_can_read_and_names_a_corrupt_state(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llmops_lib.release.cli import rollout_app

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    RolloutStore("good").save(
        RolloutState(name="good", spec={}, phase="Paused", candidate_version="2", stable_version="1", started_at=1.0)
    )
    broken = RolloutStore("broken")
    broken.dir.mkdir(parents=True)
    broken.state_path.write_text('{"name": "broken", "phase": ')  # e.g. a disk filled by something else
    result = CliRunner().invoke(rollout_app, ["status"])
    assert result.exit_code == 4 and isinstance(result.exception, SystemExit)  # an exit, not a traceback
    assert "good: Paused" in result.output and "the state of rollout 'broken'" in result.output


def test_registry_list_of_an_unknown_model_says_so(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llmops_lib.release.cli import registry_app

    monkeypatch.setenv("LLMOPS_REGISTRY_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = CliRunner().invoke(registry_app, ["list", "nope"])
    assert result.exit_code == 2 and "no model 'nope' in the registry" in result.output


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
        ({"steps": [{"setWeight": 150}]}, "steps.0.setWeight: Input should be less than or equal to 100"),
        (
            {
                "analysis": {
                    "metrics": [
                        {"name": "m", "provider": "request_log", "query": "latency", "successCondition": "result < 1"}
                    ]
                }
            },
            "analysis.metrics.0.query: unknown request_log query 'latency'",
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
