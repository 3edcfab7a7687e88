"""Shared fixtures: the real default model and real llama.cpp engines, started once per session.

Tests use one thread per engine: on a shared 2-core machine two spinning threads collapse, and
no test asserts an absolute speed anyway. Markers follow from the fixtures a test takes (see
`pytest_collection_modifyitems`), so `make unit` cannot pick up a test that needs the model.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmops_lib.config import settings
from llmops_lib.engines import EngineSpec, InProcessEngine, LlamaServer
from llmops_lib.models import default_model
from llmops_lib.models import model_path as catalogue_model_path

ROOT = Path(__file__).resolve().parents[1]
# Fixtures that start an engine: a test using one (directly or through another fixture) is `engine`.
ENGINE_FIXTURES = {"server", "in_process", "chat_server", "ray_cluster"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by what a test needs: `model` when it takes what `make setup` assembles (the default model,
    which every default engine fixture starts from, the chat model, or the guards' data wheels),
    `engine` when it takes a running engine. An explicit marker stays. `slow` tests are opt-in: they
    run only when `-m` names them (`pytest -m slow`), since they need ~10 GB of RAM and minutes."""
    opted_in = "slow" in (config.option.markexpr or "")
    for item in items:
        if item.get_closest_marker("slow") and not opted_in:
            item.add_marker(pytest.mark.skip(reason="opt-in: run with `pytest -m slow` (needs ~10 GB RAM)"))
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"model_path", "chat_model_path", "guard_data"}:
            item.add_marker(pytest.mark.model)
        if fixtures & ENGINE_FIXTURES:
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session", autouse=True)
def llmops_home() -> Path:
    """The one shared home (`LLMOPS_HOME`, else the checkout's `.llmops/`): the model is assembled
    once for the book, the tests and the labs. Exported so subprocesses use the same one."""
    home = settings().home
    os.environ["LLMOPS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session", autouse=True)
def audit_home(tmp_path_factory) -> Path:
    """Audited actions of the tests (alias moves, admin calls, runbook runs) go to a throwaway audit log
    and key, as their registry goes to a throwaway store: the home's log records what operators, the
    book and the runbooks did. Exported so subprocesses (gateways, kernels) use it too."""
    home = tmp_path_factory.mktemp("audit-home")
    os.environ["LLMOPS_AUDIT_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def model_path(llmops_home) -> Path:
    return default_model()


@pytest.fixture(scope="session")
def guard_data(llmops_home) -> Path:
    """The labelled attack, benign and PII-template data wheels `make setup` fetches (guards/data.py)."""
    from llmops_lib.guards import data

    return data.wheels_dir()


@pytest.fixture(scope="session")
def spec(model_path) -> EngineSpec:
    return EngineSpec(model=model_path, n_ctx=1024, threads=1, parallel=2)


@pytest.fixture(scope="session")
def in_process(spec):
    with InProcessEngine(spec) as engine:
        yield engine


@pytest.fixture(scope="session")
def server(spec):
    with LlamaServer(spec) as engine:
        yield engine


@pytest.fixture(scope="session")
def chat_model_path(llmops_home) -> Path:
    """SmolLM2-135M-Instruct: the instruction-tuned catalogue model, with a chat template."""
    return catalogue_model_path("smollm2")


@pytest.fixture(scope="session")
def chat_spec(chat_model_path) -> EngineSpec:
    return EngineSpec(model=chat_model_path, n_ctx=2048, threads=1)


@pytest.fixture(scope="session")
def chat_server(chat_spec):
    """llama-server on the chat model: /v1/chat/completions applies the model's own chat template."""
    with LlamaServer(chat_spec) as engine:
        yield engine


@pytest.fixture(scope="session")
def ray_cluster(llmops_home):
    """One real two-node Ray cluster (1 CPU each) shared by the scale tests: starting one costs ~20-60 s.
    Head on 127.0.0.2, worker on 127.0.0.3 (`LLMOPS_TEST_RAY_HEAD_IP` moves both, so two checkouts' runs on
    one machine never share addresses); stopped by its own PIDs at the end. A test that deploys a Serve app
    deletes it again (`serve_config.undeploy`)."""
    from llmops_lib.scale.cluster import LocalRayCluster

    with LocalRayCluster(nodes=2, cpus=1, head_ip=os.environ.get("LLMOPS_TEST_RAY_HEAD_IP", "127.0.0.2")) as cluster:
        yield cluster


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of a given size in MiB (needs root, as in CI); unmounted afterwards.

    Where no tmpfs can be mounted the test is skipped, except under `CI=true`: there a full-disk
    test that does not run is a failure, not a quiet line in the summary.
    """
    mounts: list[Path] = []

    def mount(size_mib: int) -> Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(point)], capture_output=True
        )
        if done.returncode != 0:
            reason = f"cannot mount a tmpfs here (root needed): {done.stderr.decode().strip()}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)
