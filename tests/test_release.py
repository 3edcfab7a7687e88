"""Release engineering on real engines: registry (MLflow), canary rollouts behind the gateway, rollback.

Every rollout here runs llama-server engines started from their *registered* specs (threads=1)
behind the real gateway, with real traffic; intervals are seconds so the file takes minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmops_lib.engines import EngineSpec
from llmops_lib.errors import ModelError, SpecError
from llmops_lib.gguf_header import read_header
from llmops_lib.models import inspect_gguf, sha256_file
from llmops_lib.observe.request_log import RequestLogReader
from llmops_lib.optimize.quantize import Variant, dequantize_to_f16, quantize
from llmops_lib.release import Controller, Hook, MetricSpec, Pause, Registry, RolloutSpec, SetWeight
from llmops_lib.release.cli import rollout_app
from llmops_lib.release.local import LocalRelease
from llmops_lib.release.traffic import BackgroundTraffic

pytestmark = pytest.mark.engine
ADMIN = "release-admin"


@pytest.fixture(scope="module")
def q8_model(model_path) -> Path:
    """The healthy candidate: the default model re-quantized to Q8_0 (cached under LLMOPS_HOME)."""
    return quantize(dequantize_to_f16(model_path), Variant("Q8_0"), threads=1)


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _stable(registry, model_path):
    record = registry.register(
        "gemma", model_path, spec=EngineSpec(model=model_path, n_ctx=1024, threads=1, parallel=2)
    )
    registry.set_alias("gemma", "stable", record.version, why="first release", who="test")
    return registry.get("gemma", "stable")


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def _error_rate(interval_s: float = 4.0, failure_limit: int = 1) -> MetricSpec:
    return MetricSpec(
        name="error-rate",
        provider="request_log",
        query="error_rate",
        interval_s=interval_s,
        on_missing="skip",
        success_condition="result <= 0.05",
        failure_limit=failure_limit,
    )


def _weights(env) -> dict[str, int]:
    from llmops_lib.gateway import GatewayAdmin

    with GatewayAdmin(env.gateway_url, ADMIN) as admin:
        return {d["name"]: d["weight"] for d in admin.routes()[0]["deployments"]}


# --- registry ------------------------------------------------------------------------------


def test_register_verifies_structure_checksum_and_load_and_leaves_no_half_entry(registry, model_path, tmp_path):
    with pytest.raises(ModelError, match="expected"):
        registry.register("gemma", model_path, expected_sha256="0" * 64)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model_path.read_bytes()[: 4 << 20])  # a GGUF header and a truncated body
    with pytest.raises(ModelError, match=f"cannot register gemma: .*{broken.name}"):
        registry.register("gemma", broken, spec=EngineSpec(model=broken, threads=1))
    assert registry.versions("gemma") == [] and registry.aliases("gemma") == {}
    record = registry.register(
        "gemma", model_path, expected_sha256=sha256_file(model_path), metrics={"perplexity": 12.5}
    )
    assert (record.version, record.sha256, record.metrics, record.format) == (
        "1",
        sha256_file(model_path),
        {"perplexity": 12.5},
        "gguf",
    )
    assert record.spec().model == model_path.resolve()
    registry.set_alias("gemma", "stable", "1", why="first release", who="alice")
    assert registry.set_alias("gemma", "stable", "1", why="again") is None  # no move, no event
    registry.remove_alias("gemma", "stable", why="test removal", who="bob")
    events = registry.history("gemma")
    assert [(e.alias, e.from_version, e.to_version, e.who, e.why) for e in events] == [
        ("stable", None, "1", "alice", "first release"),
        ("stable", "1", None, "bob", "test removal"),
    ]
    assert all(e.when for e in events)
    with pytest.raises(SpecError, match="why"):
        registry.set_alias("gemma", "stable", "1", why=" ")
    with pytest.raises(SpecError, match="no version or alias '7'"):
        registry.get("gemma", "7")


def test_register_a_hugging_face_folder_with_its_engine_check(registry, tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        registry.register("gemma-hf", folder)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    loaded = []
    record = registry.register("gemma-hf", folder, load_check=loaded.append)  # e.g. vLLM's load, given by the caller
    assert loaded == [folder.resolve()] and record.format == "hf" and record.engine_spec == {}
    (folder / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(ModelError, match="was changed"):
        record.verify()


def test_every_start_rechecks_the_sha256_of_a_registered_version(registry, model_path, tmp_path):
    """A weight byte flipped inside a structurally valid file: only the hash recorded at registration sees it."""
    stable = _stable(registry, model_path)
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(model_path, copy)
    record = registry.register("gemma", copy, spec=EngineSpec(model=copy, n_ctx=1024, threads=1))
    header = read_header(copy)
    largest = max(header.tensors, key=lambda t: t.n_bytes)
    at = header.data_offset + largest.offset + largest.n_bytes // 2
    with copy.open("r+b") as stream:
        stream.seek(at)
        byte = stream.read(1)[0]
        stream.seek(at)
        stream.write(bytes([byte ^ 0x01]))
    assert inspect_gguf(copy).parameters == inspect_gguf(model_path).parameters  # structurally still valid
    release = LocalRelease(stable, record, request_log=tmp_path / "requests.sqlite", admin_key=ADMIN)
    with pytest.raises(ModelError, match=rf"gemma v{record.version}: .*copy.gguf has sha256 .* was changed since"):
        release.start()
    assert release.engines == {} and release.gateway is None  # refused before anything started


# --- rollouts --------------------------------------------------------------------------------


def test_degraded_canary_is_rolled_back_at_its_failure_limit_and_stable_never_fails(registry, model_path, tmp_path):
    """The candidate's engine spec has a tiny context (llama.cpp pads it to 256 tokens): longer prompts fail on it."""
    stable = _stable(registry, model_path)
    bad = registry.register(
        "gemma",
        model_path,
        spec=EngineSpec(model=model_path, n_ctx=48, threads=1, parallel=1),
        description="n_ctx regression",
    )
    metric = _error_rate()
    # the gateway's own Prometheus counters watch too, tolerant enough to leave the decision to the log
    gateway_counters = MetricSpec(
        name="gateway-error-rate",
        provider="prometheus",
        query="error_rate",
        interval_s=metric.interval_s,
        on_missing="skip",
        success_condition="result <= 0.05",
        failure_limit=10,
    )
    spec = RolloutSpec(
        name=_name(),
        model="gemma",
        candidate=bad.version,
        stable_deployment="stable",
        canary_deployment="canary",
        steps=(SetWeight(40), Pause(120)),
        metrics=(metric, gateway_counters),
    )
    log = tmp_path / "requests.sqlite"
    with LocalRelease(stable, bad, request_log=log, admin_key=ADMIN) as env:
        controller = Controller.create(
            spec,
            gateway_url=env.gateway_url,
            request_log=str(log),
            registry=registry,
            admin_key=ADMIN,
            hooks=[Hook("post-rollout", env.stop_canary)],
            who="test",
        )
        with BackgroundTraffic(env.gateway_url, "gemma", concurrency=2, max_tokens=4, context_words=300):
            state = controller.run(poll_s=0.2, timeout_s=150)
        weights = _weights(env)
        canary_running = env.engines["canary"].running()
    assert state.phase == "RolledBack" and "analysis failed" in state.reason
    events = controller.audit()
    measured = [e for e in events if e["type"] == "Measurement" and e["metric"] == metric.name]
    failed = [e for e in measured if e["phase"] == "Failed"]
    counters = [e for e in events if e["type"] == "Measurement" and e["metric"] == gateway_counters.name]
    assert counters and max(e["value"] for e in counters) > 0.05  # Prometheus saw the canary's failures too
    assert len(failed) == metric.failure_limit + 1 and measured[-1] is failed[-1]  # nothing measured after the limit
    rolled_back = next(i for i, e in enumerate(events) if e["type"] == "RolledBack")
    assert rolled_back > events.index(failed[-1])  # the decision followed the failure that exceeded the limit
    assert weights == {"stable": 100} and not canary_running  # canary out of the route, its engine stopped
    assert registry.aliases("gemma") == {"stable": stable.version}
    with RequestLogReader(log) as reader:
        rows = reader.rows(since=state.started_at)
    assert any(r["deployment"] == "canary" and r["http_status"] >= 400 for r in rows)  # the canary really failed
    stable_rows = [r for r in rows if r["deployment"] == "stable"]
    assert stable_rows and all(r["http_status"] == 200 and r["error_type"] is None for r in stable_rows)


def test_healthy_q8_canary_is_promoted_then_undone(registry, model_path, q8_model, tmp_path):
    stable = _stable(registry, model_path)
    good = registry.register(
        "gemma", q8_model, spec=EngineSpec(model=q8_model, n_ctx=1024, threads=1, parallel=2), description="Q8_0"
    )
    quality = MetricSpec(
        name="perplexity",
        provider="evaluation",
        query="perplexity",
        count=1,
        interval_s=1,
        success_condition="result <= baseline * 1.02",
    )
    spec = RolloutSpec(
        name=_name(),
        model="gemma",
        candidate=good.version,
        stable_deployment="stable",
        canary_deployment="canary",
        steps=(SetWeight(30), Pause(6), SetWeight(60), Pause(6)),
        metrics=(_error_rate(3.0), quality),
    )
    log = tmp_path / "requests.sqlite"
    with LocalRelease(stable, good, request_log=log, admin_key=ADMIN) as env:
        controller = Controller.create(
            spec, gateway_url=env.gateway_url, request_log=str(log), registry=registry, admin_key=ADMIN, who="test"
        )
        with BackgroundTraffic(env.gateway_url, "gemma", concurrency=2, max_tokens=4):
            state = controller.run(poll_s=0.2, timeout_s=240)
        promoted_weights = _weights(env)
        result = CliRunner().invoke(rollout_app, ["status", spec.name])
        controller.undo(why="test of undo")
        undone_weights = _weights(env)
    assert state.phase == "Promoted", state.message
    assert promoted_weights == {"stable": 0, "canary": 100}
    assert registry.aliases("gemma") == {"stable": stable.version, "previous": good.version}  # after undo
    moves = [(e.alias, e.to_version) for e in registry.history("gemma")]
    assert moves[1:] == [
        ("canary", good.version),
        ("previous", stable.version),
        ("stable", good.version),
        ("canary", None),
        ("stable", stable.version),
        ("previous", good.version),
    ]
    assert undone_weights == {"stable": 100, "canary": 0}
    perplexity = next(e for e in controller.audit() if e["type"] == "Measurement" and e["metric"] == "perplexity")
    assert perplexity["phase"] == "Successful" and perplexity["value"] > 1 and perplexity["baseline"] > 1
    assert result.exit_code == 0 and "Promoted" in result.output


_RUN_CONTROLLER = "import sys; from llmops_lib.release import Controller; Controller(sys.argv[1]).run(poll_s=0.2)"


def test_killed_controller_is_restarted_and_resumes(registry, model_path, q8_model, tmp_path):
    stable = _stable(registry, model_path)
    good = registry.register("gemma", q8_model, spec=EngineSpec(model=q8_model, n_ctx=1024, threads=1, parallel=2))
    spec = RolloutSpec(
        name=_name(),
        model="gemma",
        candidate=good.version,
        stable_deployment="stable",
        canary_deployment="canary",
        steps=(SetWeight(25), Pause(8), SetWeight(50), Pause(4)),
        metrics=(_error_rate(2.0),),
    )
    log = tmp_path / "requests.sqlite"
    with LocalRelease(stable, good, request_log=log, admin_key=ADMIN) as env:
        controller = Controller.create(
            spec, gateway_url=env.gateway_url, request_log=str(log), registry=registry, admin_key=ADMIN
        )
        env_vars = os.environ | {"LLMOPS_GATEWAY_ADMIN_KEY": ADMIN}
        with BackgroundTraffic(env.gateway_url, "gemma", concurrency=2, max_tokens=4):
            child = subprocess.Popen([sys.executable, "-c", _RUN_CONTROLLER, spec.name], env=env_vars)
            try:
                deadline = time.monotonic() + 120
                while not any(e["type"] == "Measurement" for e in controller.audit()) and time.monotonic() < deadline:
                    assert child.poll() is None, "the controller exited early"
                    time.sleep(0.2)
                child.send_signal(signal.SIGKILL)  # no cleanup at all
                child.wait()
            finally:
                if child.poll() is None:
                    child.kill()
            mid = controller.state()
            weights_mid = _weights(env)
            state = Controller(spec.name, admin_key=ADMIN).run(poll_s=0.2, timeout_s=120)
        final_weights = _weights(env)
    assert mid.phase == "Progressing" and mid.canary_weight in (25, 50)  # killed mid-rollout, traffic split
    assert weights_mid == {"stable": 100 - mid.canary_weight, "canary": mid.canary_weight}
    restarted = [e for e in controller.audit() if e["type"] == "ControllerRestarted"]
    assert len(restarted) == 1 and restarted[0]["action"] == "resume" and restarted[0]["previous_pid"] == child.pid
    assert state.phase == "Promoted" and final_weights == {"stable": 0, "canary": 100}
    assert registry.aliases("gemma") == {"stable": good.version, "previous": stable.version}


def _crash_once_progressing(state) -> bool:
    if state.phase == "Progressing":
        raise RuntimeError("simulated controller crash")  # leaves without handing over, as a killed process would
    return False


def test_bad_rollouts_are_rejected_before_traffic_moves_and_restart_can_abort(registry, model_path, q8_model, tmp_path):
    stable = _stable(registry, model_path)
    good = registry.register("gemma", q8_model, spec=EngineSpec(model=q8_model, n_ctx=1024, threads=1, parallel=2))
    base = {
        "model": "gemma",
        "stable_deployment": "stable",
        "canary_deployment": "canary",
        "steps": (SetWeight(50), Pause(60)),
    }
    log = str(tmp_path / "requests.sqlite")
    with LocalRelease(stable, good, request_log=log, admin_key=ADMIN) as env:

        def create(**overrides):
            spec = RolloutSpec(**({"name": _name(), "candidate": good.version} | base | overrides))
            return Controller.create(
                spec, gateway_url=env.gateway_url, request_log=log, registry=registry, admin_key=ADMIN
            )

        with pytest.raises(SpecError, match="no version or alias '42'"):
            create(candidate="42")
        with pytest.raises(SpecError, match="already stable"):
            create(candidate=stable.version)
        with pytest.raises(SpecError, match="no canary deployment 'blue'"):
            create(canary_deployment="blue")
        with pytest.raises(SpecError, match="unknown evaluation query 'bleu'"):
            create(
                metrics=(
                    MetricSpec(
                        name="q", provider="evaluation", query="bleu", count=1, success_condition="result > 0.5"
                    ),
                )
            )
        assert _weights(env) == {"stable": 100, "canary": 0} and registry.aliases("gemma") == {"stable": stable.version}
        # A controller stopped mid-rollout, with onRestart: abort, is rolled back by the next one.
        controller = create(on_restart="abort")
        with pytest.raises(RuntimeError, match="crash"):
            controller.run(poll_s=0.1, stop_when=_crash_once_progressing)
        first = controller.state()
        assert first.phase == "Progressing" and _weights(env) == {"stable": 50, "canary": 50}
        second = Controller(first.name, admin_key=ADMIN).run(poll_s=0.1, timeout_s=30)
        assert second.phase == "RolledBack" and "onRestart: abort" in second.reason
        assert _weights(env) == {"stable": 100} and registry.aliases("gemma") == {"stable": stable.version}
    result = CliRunner().invoke(rollout_app, ["promote", first.name])
    assert result.exit_code == 2 and "already RolledBack" in result.output


def test_canary_release_runbook_exit_code_says_rolled_back(model_path):
    """A Q2_K candidate fails the perplexity gate: the runbook archives the run and exits 3 (gate), not 0."""
    from llmops_lib.runbooks import ExitCode, run_runbook

    result = run_runbook("canary_release", {"candidate_type": "Q2_K", "steps": "30,pause:20s", "interval_s": 3.0})
    assert result.exit_code == ExitCode.GATE_FAILED, result.error
    assert result.records["decision"]["phase"] == "RolledBack" and "perplexity" in result.records["decision"]["reason"]
    assert Path(result.run_dir, "audit.jsonl").is_file() and Path(result.run_dir, "mlflow.db").is_file()
