"""Shared fixtures: the real default model and real llama.cpp engines, started once per session.

Tests use one thread per engine: on a shared 2-core machine two spinning threads collapse, and
no test asserts an absolute speed anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops_lib.engines import EngineSpec, InProcessEngine, LlamaServer
from llmops_lib.models import default_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def llmops_home(tmp_path_factory) -> Path:
    """The Makefile's shared home when set (model assembled once), else a fresh one."""
    home = os.environ.get("LLMOPS_HOME") or str(tmp_path_factory.mktemp("llmops-home"))
    os.environ["LLMOPS_HOME"] = home
    return Path(home)


@pytest.fixture(scope="session")
def model_path(llmops_home) -> Path:
    return default_model()


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
