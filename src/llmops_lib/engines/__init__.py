"""Engines behind one spec and one `complete()` call: llama.cpp in-process or as a server."""

from llmops_lib.engines.base import Completion, Engine
from llmops_lib.engines.client import OpenAIClient
from llmops_lib.engines.llamacpp import InProcessEngine, LlamaCppPythonServer, LlamaServer
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import SpecError

ENGINES = {"llama-server": LlamaServer, "in-process": InProcessEngine}


def make_engine(name: str, spec: EngineSpec) -> Engine:
    """An engine by its name (`llama-server` or `in-process`), not yet started."""
    if name not in ENGINES:
        raise SpecError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    return ENGINES[name](spec)


__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineSpec",
    "InProcessEngine",
    "LlamaCppPythonServer",
    "LlamaServer",
    "OpenAIClient",
    "make_engine",
]
