"""Quantize a GGUF model with llama.cpp's own quantizer and measure what each type costs and saves.

The shipped model is already Q4_K_M, so the F16 reference is that model *dequantized* (with the
`gguf` package): the best any re-quantization can do is to match it, and ΔPPL and KL are measured
against it. Every variant is measured the same way: file size, load time, prompt and generation
tokens/s, perplexity on the shipped text, ΔPPL and KL divergence against the reference. Results are
cached as JSON under `LLMOPS_HOME/cache/quantize/`, keyed by everything that could change them, and
quantized files stay in `LLMOPS_HOME/models/quantized/`, so a rebuild redoes nothing.

Explained in: book/chapters/02_optimization/quantization
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.engines.spec import EngineSpec, default_threads
from llmops_lib.errors import ModelError, SpecError
from llmops_lib.gguf_header import GGUF_MAGIC, Cursor, read_header
from llmops_lib.models import inspect_gguf, sha256_file
from llmops_lib.optimize.perplexity import TOP_K, TextScores, cache_key, eval_text, score_text

# The types the issue asks for, best quality first; llama.cpp's quantizer knows them all by name.
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_S", "Q2_K")
# Types for the token embedding: its 640-wide rows fit 32-element blocks, not 256-element k-quants.
EMBEDDING_TYPES = ("F16", "Q8_0", "Q5_0", "Q4_0")
REFERENCE = "F16"
# Other float encodings: bf16 is no smaller than F16, but a CPU with bf16 dot-product instructions
# computes a batched step fast with it (see the batching section).
FLOAT_TYPES = ("BF16",)
_METHOD = 1  # bump when the measurement changes, so older cached results are not reused


@dataclass(frozen=True)
class Variant:
    """A quantization type, optionally with its own type for the token embedding (`Q4_K_M/embd:Q4_0`)."""

    qtype: str
    embedding: str | None = None

    @classmethod
    def parse(cls, text: str) -> Variant:
        """`Q4_K_M` or `Q4_K_M/embd:Q4_0` (case-insensitive); unknown types are refused with the accepted list."""
        qtype, _, embedding = text.strip().upper().partition("/EMBD:")
        if qtype not in QUANT_TYPES + (REFERENCE, *FLOAT_TYPES):
            raise SpecError(
                f"unknown quantization type {text.strip()!r}; "
                f"use one of {', '.join(QUANT_TYPES + FLOAT_TYPES)} or {REFERENCE} "
                f"(optionally with /embd:<{'|'.join(EMBEDDING_TYPES)}>)"
            )
        if embedding and embedding not in EMBEDDING_TYPES:
            raise SpecError(
                f"unknown token-embedding type {embedding!r} in {text!r}; use one of {', '.join(EMBEDDING_TYPES)}"
            )
        return cls(qtype, embedding or None)

    @property
    def label(self) -> str:
        return self.qtype + (f"/embd:{self.embedding}" if self.embedding else "")

    @property
    def slug(self) -> str:
        return self.qtype + (f".embd-{self.embedding}" if self.embedding else "")


def parse_variants(types: str | Sequence[str]) -> list[Variant]:
    """A comma-separated string (runbook parameter) or a list of type names, as variants."""
    names = types.split(",") if isinstance(types, str) else list(types)
    variants = [Variant.parse(name) for name in names if name.strip()]
    if not variants:
        raise SpecError(f"no quantization type given; use some of {', '.join(QUANT_TYPES)}")
    return variants


# --- files -------------------------------------------------------------------------------------


def quantized_dir() -> Path:
    return settings().models_dir / "quantized"


def _write_atomically(target: Path, write: Callable[[Path], object], what: str, *, gguf: bool = True) -> Path:
    """Run `write(partial)` and rename the result to `target`: a failure (a full disk) leaves no file.

    A GGUF result is checked whole before the rename: llama.cpp's quantizer does not always
    notice a short write.
    """
    try:
        with atomic_path(target) as partial:
            write(partial)
            if gguf:
                inspect_gguf(partial)
    except (OSError, ModelError) as exc:
        # llama.cpp reports a full disk as a failed or short write, not as ENOSPC: check the space too
        if getattr(exc, "errno", None) == errno.ENOSPC or shutil.disk_usage(target.parent).free < 64 << 20:
            raise ModelError(
                f"no space left on the device of {target.parent} while writing {what}: "
                "free space or point LLMOPS_HOME elsewhere"
            ) from exc
        raise ModelError(f"could not write {what} to {target}: {exc}") from exc
    return target


def dequantize_to_f16(source: Path, source_sha256: str | None = None) -> Path:
    """The F16 reference: `source` with every quantized tensor dequantized to F16 (kept on disk, made once).

    Metadata (tokenizer, architecture) is copied byte for byte, so the reference differs from the
    source only in its weights' storage: it is the dequantized source, not the original F16 model.
    """
    source = Path(source)
    info = inspect_gguf(source)  # refuses a missing or non-GGUF file with a ModelError
    sha = source_sha256 or sha256_file(source)
    target = quantized_dir() / f"{source.stem}.{sha[:8]}.{REFERENCE}.gguf"
    if target.exists():
        return target
    return _write_atomically(target, lambda partial: _write_f16(source, partial), f"the F16 reference of {info.name}")


def _write_f16(source: Path, out_path: Path) -> None:
    from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType
    from gguf.quants import dequantize

    header = read_header(source)
    alignment = int(header.fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    keep = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
    new_types = [t.type if t.type in keep else GGMLQuantizationType.F16 for t in header.tensors]
    with source.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        cursor = Cursor(buffer)
        cursor.pos = 24  # magic, version, tensor count, field count
        file_type_at = None
        for _ in range(len(header.fields)):
            key = cursor.string()
            kind = GGUFValueType(cursor.unpack("<I"))
            if key == "general.file_type":
                file_type_at = cursor.pos
            cursor.value(kind)
        metadata = bytearray(buffer[24 : cursor.pos])
        if file_type_at is not None:  # MOSTLY_F16 = 1, as llama.cpp's converter writes it
            metadata[file_type_at - 24 : file_type_at - 20] = struct.pack("<I", 1)
        with out_path.open("wb") as out:
            out.write(GGUF_MAGIC + struct.pack("<IQQ", 3, len(header.tensors), len(header.fields)) + metadata)
            offset = 0
            for tensor, kind in zip(header.tensors, new_types, strict=True):
                name = tensor.name.encode()
                block, type_size = GGML_QUANT_SIZES[kind]
                out.write(struct.pack("<Q", len(name)) + name + struct.pack("<I", len(tensor.shape)))
                out.write(struct.pack(f"<{len(tensor.shape)}Q", *tensor.shape) + struct.pack("<IQ", kind, offset))
                n_bytes = tensor.n_elements // block * type_size
                offset += n_bytes + (-n_bytes % alignment)
            out.write(b"\0" * (-out.tell() % alignment))
            for tensor, kind in tqdm(
                list(zip(header.tensors, new_types, strict=True)), desc="dequantize to F16", leave=False
            ):
                start = header.data_offset + tensor.offset
                raw = buffer[start : start + tensor.n_bytes]  # a copy: no view may outlive the mmap
                if kind != tensor.type:  # rows of ne0 weights, stored as blocks
                    block, type_size = GGML_QUANT_SIZES[tensor.type]
                    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, tensor.shape[0] // block * type_size)
                    raw = dequantize(rows, tensor.type).astype(np.float16).tobytes()
                out.write(raw)
                out.write(b"\0" * (-len(raw) % alignment))


def _ftype(name: str) -> int:
    import llama_cpp

    return getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")


def quantize(reference: Path, variant: Variant, *, threads: int | None = None) -> Path:
    """Quantize the F16 `reference` to `variant` with llama.cpp's quantizer (kept on disk, made once)."""

    if variant.qtype == REFERENCE and variant.embedding is None:
        return Path(reference)
    stem = Path(reference).name.removesuffix(f".{REFERENCE}.gguf")
    target = quantized_dir() / f"{stem}.{variant.slug}.gguf"
    if target.exists():
        return target

    def write(partial: Path) -> None:
        llama_quantize(
            reference, partial, variant.qtype, embedding=variant.embedding, threads=threads or default_threads()
        )

    return _write_atomically(target, write, f"the {variant.label} model")


def model_as(source: Path, variant: Variant | str) -> Path:
    """`source` encoded as `variant` (e.g. "BF16"), made from its F16 reference (both kept on disk, made once)."""
    variant = Variant.parse(variant) if isinstance(variant, str) else variant
    return quantize(dequantize_to_f16(Path(source)), variant)


@contextmanager
def _stderr_to(log: Path) -> Iterator[None]:
    """Send both stderrs to `log`: file descriptor 2, where llama.cpp's C code writes, and
    Python's `sys.stderr`, where llama-cpp-python's log callback prints (a notebook's output)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with log.open("w") as stream, redirect_stderr(stream):
        try:
            os.dup2(stream.fileno(), 2)
            yield
        finally:
            stream.flush()
            os.dup2(saved, 2)
            os.close(saved)


def llama_quantize(
    source: Path,
    partial: Path,
    file_type: str,
    *,
    embedding: str | None = None,
    threads: int = 1,
    allow_requantize: bool = False,
) -> None:
    """Run llama.cpp's quantizer from `source` into `partial`.

    Its log (a warning for every tensor whose 640 columns rule out k-quants) goes to
    `LLMOPS_HOME/logs/quantize/`, not onto the book page; an error quotes its last lines.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(file_type)
    params.nthread = threads
    params.allow_requantize = allow_requantize
    if embedding:
        params.token_embedding_type = getattr(llama_cpp, f"GGML_TYPE_{embedding}")
    log = settings().logs_dir / "quantize" / f"{partial.name.strip('.')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with _stderr_to(log):
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0
    if failed:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:])
        raise ModelError(f"llama.cpp could not quantize {source} to {file_type}: {tail} (log: {log})")


# --- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantSettings:
    """How each variant is measured; part of the cache key, so changing any value re-measures."""

    n_ctx: int = 512
    """perplexity window (tokens); the second half of each window is scored, as llama-perplexity does."""
    top_k: int = TOP_K
    """reference tokens kept per position for the KL divergence."""
    threads: int = field(default_factory=default_threads)
    prompt_chars: int = 1200
    """the speed test's prompt: this many characters of the evaluation text."""
    generate_tokens: int = 32


@dataclass
class QuantResult:
    """One variant, measured."""

    variant: str
    path: str
    sha256: str
    file_bytes: int
    load_s: float
    prompt_tokens_per_s: float
    generation_tokens_per_s: float
    perplexity: float
    delta_ppl: float
    kl_divergence: float
    """mean KL(reference ‖ variant) per scored token, in nats (top-k + rest, see `perplexity.py`)."""
    same_top_token: float
    """share of scored positions where the variant's most likely token is the reference's."""
    scored_tokens: int
    cached: bool = False

    @property
    def file_mb(self) -> float:
        return self.file_bytes / 1e6

    def row(self) -> dict[str, object]:
        """Rounded, for tables."""
        return {
            "type": self.variant,
            "size (MB)": round(self.file_mb, 1),
            "load (s)": round(self.load_s, 2),
            "prompt tok/s": round(self.prompt_tokens_per_s),
            "generation tok/s": round(self.generation_tokens_per_s, 1),
            "PPL": round(self.perplexity, 3),
            "ΔPPL": round(self.delta_ppl, 3),
            "KL (nats)": round(self.kl_divergence, 4),
            "same top token": f"{self.same_top_token:.1%}",
        }


def cache_dir() -> Path:
    return settings().home / "cache" / "quantize"


class Quantizer:
    """Quantizes one source model to many variants and measures each against its F16 reference."""

    def __init__(
        self,
        source: Path,
        *,
        text: str | None = None,
        quant_settings: QuantSettings | None = None,
        cache: Path | None = None,
    ) -> None:
        self.source = Path(source)
        inspect_gguf(self.source)  # a missing or non-GGUF source fails here, with a ModelError
        self.source_sha256 = sha256_file(self.source)
        self.text = eval_text() if text is None else text
        self.settings = quant_settings or QuantSettings()
        self.cache = Path(cache) if cache else cache_dir()
        self._reference_scores: TextScores | None = None

    def _key(self, variant: Variant) -> str:
        return cache_key(
            method=_METHOD,
            source=self.source_sha256,
            variant=variant.label,
            text=hashlib.sha256(self.text.encode()).hexdigest(),
            settings=asdict(self.settings),
            llama_cpp=version("llama-cpp-python"),
        )

    def reference_path(self) -> Path:
        return dequantize_to_f16(self.source, self.source_sha256)

    def measure(self, variant: Variant | str) -> QuantResult:
        """Quantize (once) and measure (once) `variant`; `cached=True` when nothing was recomputed."""
        variant = Variant.parse(variant) if isinstance(variant, str) else variant
        reference = self._reference()
        if variant == Variant(REFERENCE):
            return reference
        path = quantize(self.reference_path(), variant, threads=self.settings.threads)
        stored = self.cache / f"{self._key(variant)}.json"
        if stored.with_suffix(".npz").exists() and (cached := self._cached(stored)):
            return cached
        scores, timing = self._run(path, reference=self._reference_scores)
        result = self._result(variant, path, scores, timing, reference_ppl=reference.perplexity)

        def save_arrays(partial: Path) -> None:
            with partial.open("wb") as out:  # the per-token values, for intervals (`token_scores`)
                np.savez(out, token_logprobs=scores.token_logprobs, kl=scores.kl, same_top=scores.same_top)

        _write_atomically(stored.with_suffix(".npz"), save_arrays, "per-token scores", gguf=False)
        _write_atomically(
            stored,
            lambda partial: partial.write_text(json.dumps(asdict(result), indent=1) + "\n"),
            "a cached result",
            gguf=False,
        )
        return result

    def token_scores(self, variant: Variant | str) -> tuple[np.ndarray, np.ndarray]:
        """Per scored token: the variant's log-probability of the text's token and its KL divergence
        from the reference (zeros for the reference), measuring the variant first if needed: the
        values behind `perplexity` and `kl_divergence`, for their intervals (`bench.stats.bootstrap`)."""
        variant = Variant.parse(variant) if isinstance(variant, str) else variant
        self.measure(variant)
        if variant == Variant(REFERENCE):
            logprobs = self._reference_scores.token_logprobs
            return logprobs, np.zeros_like(logprobs, dtype=np.float64)
        with np.load(self.cache / f"{self._key(variant)}.npz") as data:
            return data["token_logprobs"], data["kl"]

    def compare(self, variants: Sequence[Variant | str], *, progress: bool = True) -> list[QuantResult]:
        """The reference first, then every variant, measured (from the cache where possible)."""
        parsed = [Variant.parse(v) if isinstance(v, str) else v for v in variants]
        wanted = [Variant(REFERENCE), *[v for v in parsed if v != Variant(REFERENCE)]]
        return [self.measure(v) for v in tqdm(wanted, desc="quantize and measure", disable=not progress)]

    @staticmethod
    def _cached(stored: Path) -> QuantResult | None:
        """A stored result whose file still exists, or None."""
        if not stored.exists():
            return None
        result = QuantResult(**json.loads(stored.read_text()) | {"cached": True})
        return result if Path(result.path).exists() else None

    def _reference(self) -> QuantResult:
        """The F16 reference, measured, with its top-k log-probabilities kept for the KL of every variant."""
        variant = Variant(REFERENCE)
        stored = self.cache / f"{self._key(variant)}.json"
        arrays = stored.with_suffix(".npz")
        path = self.reference_path()
        if arrays.exists() and (cached := self._cached(stored)):
            with np.load(arrays) as data:
                self._reference_scores = TextScores(data["token_logprobs"], data["top_ids"], data["top_logprobs"])
            return cached
        scores, timing = self._run(path, reference=None, keep_top_k=self.settings.top_k)
        self._reference_scores = scores
        result = self._result(variant, path, scores, timing, reference_ppl=scores.perplexity)

        def save_arrays(partial: Path) -> None:
            with partial.open("wb") as out:  # a file object: given a name, numpy would append ".npz"
                np.savez(
                    out, token_logprobs=scores.token_logprobs, top_ids=scores.top_ids, top_logprobs=scores.top_logprobs
                )

        _write_atomically(arrays, save_arrays, "the reference's log-probabilities", gguf=False)
        _write_atomically(
            stored,
            lambda partial: partial.write_text(json.dumps(asdict(result), indent=1) + "\n"),
            "a cached result",
            gguf=False,
        )
        return result

    def _run(self, path: Path, *, reference: TextScores | None, keep_top_k: int = 1) -> tuple[TextScores, dict]:
        from llmops_lib.engines.llamacpp import InProcessEngine

        spec = EngineSpec(model=path, n_ctx=self.settings.n_ctx, threads=self.settings.threads)
        clock = time.perf_counter()
        with InProcessEngine(spec) as engine:
            load_s = time.perf_counter() - clock
            scores = score_text(
                engine.llama, self.text, n_ctx=self.settings.n_ctx, keep_top_k=keep_top_k, reference=reference
            )
            done = engine.complete(
                self.text[: self.settings.prompt_chars], max_tokens=self.settings.generate_tokens, ignore_eos=True
            )
        return scores, {
            "load_s": load_s,
            "prompt_tokens_per_s": done.prompt_tokens_per_s,
            "generation_tokens_per_s": done.generation_tokens_per_s,
        }

    def _result(
        self, variant: Variant, path: Path, scores: TextScores, timing: dict, *, reference_ppl: float
    ) -> QuantResult:
        kl = float(scores.kl.mean()) if scores.kl is not None else 0.0
        same = float(scores.same_top.mean()) if scores.same_top is not None else 1.0
        return QuantResult(
            variant=variant.label,
            path=str(path),
            sha256=sha256_file(path),
            file_bytes=path.stat().st_size,
            perplexity=scores.perplexity,
            delta_ppl=scores.perplexity - reference_ppl,
            kl_divergence=kl,
            same_top_token=same,
            scored_tokens=len(scores.token_logprobs),
            **timing,
        )
