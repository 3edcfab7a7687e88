"""Engines behind one spec and one `complete()` call: llama.cpp in-process or as a server, and vLLM."""

from llmops_lib.engines.base import Completion, Engine
from llmops_lib.engines.client import OpenAIClient
from llmops_lib.engines.llamacpp import InProcessEngine, LlamaCppPythonServer, LlamaServer
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.engines.vllm import VLLMEngine
from llmops_lib.errors import SpecError

# "llamacpp" is llama.cpp's serving engine, llama-server, named for its project beside "vllm".
ENGINES = {"llama-server": LlamaServer, "llamacpp": LlamaServer, "in-process": InProcessEngine, "vllm": VLLMEngine}


def make_engine(name: str, spec: EngineSpec) -> Engine:
    """An engine by its name (`llama-server` alias `llamacpp`, `in-process`, `vllm`), not yet started."""
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
    "VLLMEngine",
    "make_engine",
]
