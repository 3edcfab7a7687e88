"""The typed engine spec: one description of how to serve a model, whatever the engine.

Explained in: book/chapters/01_mlops_to_llmops (serving the model).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops_lib.errors import SpecError
from llmops_lib.models import resolve_model

# KV-cache element types llama.cpp accepts, with bytes per element (ggml's block formats carry
# a scale per 32 elements).
KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "iq4_nl": 18 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
}
KV_CACHE_TYPES = tuple(KV_BYTES_PER_ELEMENT)

# Speculative decoding types of llama-server's `--spec-type` that work with ordinary GGUF files:
# `draft-simple` drafts with a smaller model; the `ngram-*` types look drafts up in the text so far.
# (EAGLE-3, MTP and DFlash need draft heads trained for the target, which no model here has.)
SPEC_TYPES = ("draft-simple", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
# The types with a lookup length (`ngram_lookup`), and those with a fewest-drafted bound (`draft_min`).
NGRAM_LOOKUP_TYPES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod")
DRAFT_MIN_TYPES = ("draft-simple", "ngram-mod")

# vLLM's weight quantization methods (`--quantization`) and KV-cache dtypes (`--kv-cache-dtype`),
# as vLLM 0.32 accepts them (tests/test_vllm.py checks these lists against the installed vLLM).
# Which of them run depends on the hardware: on CPU fp8 weights fail, int8 W8A8 works.
VLLM_QUANTIZATIONS = (
    "awq",
    "auto_awq",
    "fp8",
    "fbgemm_fp8",
    "fp_quant",
    "modelopt",
    "modelopt_fp4",
    "modelopt_mxfp8",
    "modelopt_mixed",
    "auto_gptq",
    "gptq",
    "gptq_marlin",
    "awq_marlin",
    "humming",
    "compressed-tensors",
    "experts_int8",
    "quark",
    "moe_wna16",
    "torchao",
    "inc",
    "mxfp4",
    "gpt_oss_mxfp4",
    "deepseek_v4_fp8",
    "online",
    "fp8_per_tensor",
    "fp8_per_block",
    "fp8_per_channel",
    "int8_per_channel_weight_only",
    "nvfp4_per_token",
    "mxfp8",
)
VLLM_KV_CACHE_DTYPES = (
    "auto",
    "float16",
    "bfloat16",
    "fp8",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp8_inc",
    "fp8_ds_mla",
    "nvfp4_ds_mla",
    "turboquant_k8v4",
    "turboquant_4bit_nc",
    "turboquant_k3v4_nc",
    "turboquant_3bit_nc",
    "ultraquant_4bit",
    "int4_per_token_head",
    "int8_per_token_head",
    "fp8_per_token_head",
    "nvfp4",
    "nvfp4_4over6",
)


def default_threads() -> int:
    """Half the cores (at least one): generation is memory-bound, and on a busy 2-core machine
    llama.cpp's threads spin-wait against each other, so a spare core for the client pays."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class EngineSpec:
    """How to run a model. Invalid values are refused at construction, before anything starts.

    Attributes:
        model: path of the GGUF file, or the name of a catalogue model (`models.MODELS`:
            "gemma3-270m", "smollm2"), resolved at construction to its sha256-verified file.
        n_ctx: context length per request (per server slot), in tokens.
        threads: CPU threads for generation and prompt processing.
        parallel: server slots served at once by continuous batching (HTTP servers only).
        batch_size: tokens per forward pass while processing a prompt.
        cache_type_k, cache_type_v: KV-cache element types; a quantized V cache needs `flash_attn`.
        flash_attn: use flash attention.
        swa_full: keep the whole context in sliding-window layers too (Gemma 3). Off, as in
            llama-server: those layers then cache only their window, a fraction of the memory.
        seed: sampling seed, so temperature > 0 is repeatable on one engine build.
        spec_type: speculative decoding type (one of `SPEC_TYPES`), None for none. Given a
            `draft_model` and no type, `draft-simple` is used. Explained in:
            book/chapters/02_optimization/speculative_decoding.
        draft_model: GGUF of the draft model (`draft-simple`); it must share the model's vocabulary,
            which `LlamaServer.start` checks before anything starts.
        draft_max, draft_min: most and fewest tokens drafted per step, by the draft model or the
            n-gram drafter (llama-server's defaults if None; `draft_min` for the `DRAFT_MIN_TYPES`).
        ngram_lookup: tokens an n-gram drafter must find repeated in the text before it drafts
            (`NGRAM_LOOKUP_TYPES`; llama-server's default if None). Shorter resumes drafting sooner
            after an edit; longer drafts wrongly less often.
        extra_args: further command-line flags for a server engine, passed through as given.
        quantization: (vLLM only, like the four below: llama.cpp reads its quantization from the
            GGUF and ignores them. Explained in: book/chapters/02_optimization/choosing_an_engine.)
            vLLM weight quantization method (one of `VLLM_QUANTIZATIONS`), None for the
            checkpoint's own.
        kv_cache_dtype: vLLM KV-cache dtype (one of `VLLM_KV_CACHE_DTYPES`); "auto" is the model's.
        prefix_caching: reuse the KV cache of a repeated prompt prefix (vLLM's automatic prefix
            caching; llama-server reuses its slot's previous prompt regardless).
        tensor_parallel_size, pipeline_parallel_size: GPUs to split each layer / the layers across.
    """

    model: Path
    n_ctx: int = 2048
    threads: int = field(default_factory=default_threads)
    parallel: int = 1
    batch_size: int = 512
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = False
    swa_full: bool = False
    seed: int = 0
    spec_type: str | None = None
    draft_model: Path | None = None
    draft_max: int | None = None
    draft_min: int | None = None
    ngram_lookup: int | None = None
    extra_args: tuple[str, ...] = ()
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    prefix_caching: bool = True
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", resolve_model(self.model))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        for name in ("n_ctx", "threads", "parallel", "batch_size", "tensor_parallel_size", "pipeline_parallel_size"):
            if int(getattr(self, name)) < 1:
                raise SpecError(f"EngineSpec.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("cache_type_k", "cache_type_v"):
            if getattr(self, name) not in KV_CACHE_TYPES:
                raise SpecError(
                    f"EngineSpec.{name}={getattr(self, name)!r} is not a KV-cache type; "
                    f"use one of {', '.join(KV_CACHE_TYPES)}"
                )
        if self.cache_type_v not in ("f32", "f16", "bf16") and not self.flash_attn:
            raise SpecError(
                f"a quantized V cache (cache_type_v={self.cache_type_v}) needs flash_attn=True in llama.cpp"
            )
        self._check_speculative()
        if self.quantization is not None and self.quantization not in VLLM_QUANTIZATIONS:
            raise SpecError(
                f"EngineSpec.quantization={self.quantization!r} is not a vLLM quantization method; "
                f"use one of {', '.join(VLLM_QUANTIZATIONS)} (or None for the checkpoint's own)"
            )
        if self.kv_cache_dtype not in VLLM_KV_CACHE_DTYPES:
            raise SpecError(
                f"EngineSpec.kv_cache_dtype={self.kv_cache_dtype!r} is not a vLLM KV-cache dtype; "
                f"use one of {', '.join(VLLM_KV_CACHE_DTYPES)}"
            )

    def _check_speculative(self) -> None:
        if self.draft_model is not None:
            object.__setattr__(self, "draft_model", Path(self.draft_model))
            if self.spec_type is None:
                object.__setattr__(self, "spec_type", "draft-simple")
        if self.spec_type is not None and self.spec_type not in SPEC_TYPES:
            raise SpecError(
                f"EngineSpec.spec_type={self.spec_type!r} is not a speculative decoding type; "
                f"use one of {', '.join(SPEC_TYPES)} (or None for none)"
            )
        if self.spec_type == "draft-simple" and self.draft_model is None:
            raise SpecError("EngineSpec.spec_type='draft-simple' needs a draft_model (a GGUF with the same vocabulary)")
        if self.draft_model is not None and self.spec_type != "draft-simple":
            raise SpecError(f"EngineSpec.draft_model is used by spec_type='draft-simple' only, not {self.spec_type!r}")
        for name, least in (("draft_max", 0), ("draft_min", 0), ("ngram_lookup", 1)):
            value = getattr(self, name)
            if value is None:
                continue
            if self.spec_type is None:
                raise SpecError(f"EngineSpec.{name} needs speculative decoding: set spec_type too")
            if int(value) < least:
                raise SpecError(f"EngineSpec.{name} must be at least {least}, got {value}")
        for name, types in (("ngram_lookup", NGRAM_LOOKUP_TYPES), ("draft_min", DRAFT_MIN_TYPES)):
            if getattr(self, name) is not None and self.spec_type not in types:
                raise SpecError(
                    f"EngineSpec.{name} does not apply to spec_type={self.spec_type!r}; it does to {', '.join(types)}"
                )
        if self.draft_max is not None and self.draft_min is not None and self.draft_min > self.draft_max:
            raise SpecError(f"EngineSpec.draft_min ({self.draft_min}) is above draft_max ({self.draft_max})")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, for run records and benchmark output."""
        data = asdict(self)
        data["model"] = str(self.model)
        data["draft_model"] = str(self.draft_model) if self.draft_model else None
        data["extra_args"] = list(self.extra_args)
        return data
