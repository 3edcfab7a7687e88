"""Depth pruning of a GGUF model: which transformer blocks matter, and what removing them buys.

Distilling the language model itself starts from a smaller student; the cheapest one is the
teacher minus some blocks (ShortGPT). Two measurements decide whether that pays here:

- **importance** of each block: the KL divergence of the next-token distributions of the model
  without that block from the full model's, on the start of the library's evaluation text;
- **speed** of a depth-pruned file, in prompt and generated tokens per CPU-second (CPU time, not
  wall time, so a busy machine distorts it less).

The pruned file is made by surgery on the GGUF (no torch, no conversion): copy the metadata,
set `<arch>.block_count`, drop the block's tensors and renumber `blk.N`. llama.cpp derives each
layer's attention type (sliding window or full) from the layer *index*, so renumbering alone
would turn a sliding-window layer into a full-attention one (with another RoPE base); the surgery
therefore writes the kept layers' pattern as the per-layer array `<arch>.attention.sliding_window_pattern`,
which llama.cpp reads in preference to its built-in period. Files live in a temporary folder and are
deleted after each measurement; results are cached as JSON under `LLMOPS_HOME/cache/prune/`.

Explained in: book/chapters/02_optimization/distillation
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, Keys

from llmops_lib.atomic import atomic_path, write_text
from llmops_lib.config import settings
from llmops_lib.engines import EngineSpec, InProcessEngine
from llmops_lib.errors import SpecError
from llmops_lib.gguf_header import GGUF_MAGIC, Cursor, GGUFHeader, align, read_header
from llmops_lib.models import sha256_file
from llmops_lib.optimize.perplexity import TOP_K, TextScores, cache_key, eval_text, score_text

# llama.cpp's built-in sliding-window period per architecture (`set_swa_pattern` in its loader):
# in every group of `period` layers, the last one uses full attention.
SWA_PERIOD = {"gemma3": 6}
_METHOD = 1  # bump when a measurement changes, so older cached results are not reused


@dataclass(frozen=True)
class PruneSettings:
    """How pruned models are measured; part of the cache key."""

    n_ctx: int = 128
    """tokens of the evaluation text per model; the second half is scored (as `score_text` does)."""
    threads: int = 1
    """one thread: CPU time then counts work, not spin-waiting."""
    prompt_tokens: int = 256
    generate_tokens: int = 32


@dataclass(frozen=True)
class LayerImportance:
    """What removing one block does to the next-token distributions."""

    layer: int
    attention: str
    """"sliding" or "full" (the block's attention in the full model)."""
    kl: float
    """mean KL(full model ‖ model without this block) over the scored tokens, nats."""
    same_top: float
    """share of scored tokens whose most likely next token is still the full model's."""


@dataclass(frozen=True)
class ModelSpeed:
    """One model file, measured: size, distance from the full model, speed per CPU-second."""

    name: str
    layers: int
    file_mb: float
    kl: float
    same_top: float
    prompt_tokens_per_cpu_s: float
    generation_tokens_per_cpu_s: float

    def row(self) -> dict[str, object]:
        """Rounded, for tables."""
        return {
            "model": self.name,
            "blocks": self.layers,
            "size (MB)": round(self.file_mb, 1),
            "KL (nats)": round(self.kl, 3),
            "same top token": f"{self.same_top:.0%}",
            "prompt tok/CPU-s": round(self.prompt_tokens_per_cpu_s),
            "generation tok/CPU-s": round(self.generation_tokens_per_cpu_s, 1),
        }


# --- the surgery ------------------------------------------------------------------------------


def _arch(header: GGUFHeader) -> str:
    return str(header.fields["general.architecture"])


def block_count(path: Path) -> int:
    """Number of transformer blocks the GGUF file declares."""
    header = read_header(Path(path))
    return int(header.fields[Keys.LLM.BLOCK_COUNT.format(arch=_arch(header))])


def sliding_layers(header: GGUFHeader) -> list[bool] | None:
    """Per layer, whether llama.cpp gives it sliding-window attention (None: the model has none)."""
    arch = _arch(header)
    n_layers = int(header.fields[Keys.LLM.BLOCK_COUNT.format(arch=arch)])
    if Keys.Attention.SLIDING_WINDOW.format(arch=arch) not in header.fields:
        return None
    if Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch) in header.fields:
        raise SpecError(
            f"this {arch} file already sets its own sliding-window pattern; prune the original file instead"
        )
    if arch not in SWA_PERIOD:
        raise SpecError(
            f"which {arch} layers use sliding-window attention is not known here; "
            f"depth pruning supports {', '.join(SWA_PERIOD)} and models without sliding windows"
        )
    period = SWA_PERIOD[arch]
    return [layer % period < period - 1 for layer in range(n_layers)]


def _check_layers(layers: Iterable[int], n_layers: int) -> set[int]:
    layers = set(layers)
    wrong = sorted(i for i in layers if not isinstance(i, int) or not 0 <= i < n_layers)
    if wrong:
        raise SpecError(
            f"no block {', '.join(map(str, wrong))} in a model of {n_layers} blocks: "
            f"use layer indices 0 to {n_layers - 1}"
        )
    return layers


def _check_drop(drop: Iterable[int], n_layers: int) -> set[int]:
    drop = _check_layers(drop, n_layers)
    if len(drop) >= n_layers:
        raise SpecError(f"dropping all {n_layers} blocks leaves no model: keep at least one")
    return drop


def prune_gguf(source: Path, drop: Iterable[int], target: Path) -> Path:
    """Write `source` without the blocks in `drop` to `target` (atomically) and return `target`.

    Metadata is copied byte for byte except the block count; the kept blocks are renumbered in
    order and keep their attention type (see the module docstring).

    Raises:
        SpecError: a layer index outside the model, or every block dropped.
    """
    source, target = Path(source), Path(target)
    header = read_header(source)
    arch = _arch(header)
    count_key = Keys.LLM.BLOCK_COUNT.format(arch=arch)
    n_layers = int(header.fields[count_key])
    dropped = _check_drop(drop, n_layers)
    kept = [layer for layer in range(n_layers) if layer not in dropped]
    renumber = {old: new for new, old in enumerate(kept)}
    sliding = sliding_layers(header)
    tensors = []
    for tensor in header.tensors:
        name = tensor.name
        if name.startswith("blk."):
            _, index, rest = name.split(".", 2)
            if int(index) in dropped:
                continue
            name = f"blk.{renumber[int(index)]}.{rest}"
        tensors.append((name, tensor))

    with source.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        cursor = Cursor(buffer)
        cursor.pos = 24  # magic, version, tensor count, field count
        fields = []
        for _ in range(len(header.fields)):
            start = cursor.pos
            key = cursor.string()
            kind = GGUFValueType(cursor.unpack("<I"))
            value_at = cursor.pos
            cursor.value(kind)
            if key == count_key:
                fields.append(buffer[start:value_at] + struct.pack("<I", len(kept)))
            else:
                fields.append(buffer[start : cursor.pos])
        if sliding is not None:
            key = Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch).encode()
            pattern = [sliding[layer] for layer in kept]
            fields.append(
                struct.pack("<Q", len(key))
                + key
                + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.BOOL, len(pattern))
                + struct.pack(f"<{len(pattern)}?", *pattern)
            )
        with atomic_path(target) as partial, partial.open("wb") as out:
            out.write(GGUF_MAGIC + struct.pack("<IQQ", header.version, len(tensors), len(fields)) + b"".join(fields))
            offset = 0
            for name, tensor in tensors:
                encoded = name.encode()
                out.write(struct.pack("<Q", len(encoded)) + encoded + struct.pack("<I", len(tensor.shape)))
                out.write(
                    struct.pack(f"<{len(tensor.shape)}Q", *tensor.shape) + struct.pack("<IQ", tensor.type, offset)
                )
                offset = align(offset + tensor.n_bytes, header.alignment)
            out.write(b"\0" * (-out.tell() % header.alignment))
            for _, tensor in tensors:
                start = header.data_offset + tensor.offset
                out.write(buffer[start : start + tensor.n_bytes])
                out.write(b"\0" * (-tensor.n_bytes % header.alignment))
    read_header(target)  # the layout llama.cpp will check, checked here first
    return target


# --- the measurements -------------------------------------------------------------------------


class DepthPruner:
    """Measures one model's blocks and depth-pruned copies of it against the full model."""

    def __init__(self, source: Path, *, prune_settings: PruneSettings | None = None, cache: Path | None = None):
        self.source = Path(source)
        self.header = read_header(self.source)
        self.n_layers = block_count(self.source)
        self.sliding = sliding_layers(self.header)
        self.settings = prune_settings or PruneSettings()
        self.cache = Path(cache) if cache else settings().home / "cache" / "prune"
        self.source_sha256 = sha256_file(self.source)
        self._reference: TextScores | None = None
        self._text: str | None = None

    def _key(self, what: str) -> Path:
        key = cache_key(
            method=_METHOD,
            what=what,
            source=self.source_sha256,
            text=hashlib.sha256(eval_text().encode()).hexdigest(),
            settings=asdict(self.settings),
            llama_cpp=version("llama-cpp-python"),
        )
        return self.cache / f"{key}.json"

    def _spec(self, path: Path, n_ctx: int) -> EngineSpec:
        return EngineSpec(model=path, n_ctx=n_ctx, threads=self.settings.threads, batch_size=n_ctx)

    def _scores(self, path: Path, reference: TextScores | None) -> TextScores:
        n_ctx = self.settings.n_ctx
        with InProcessEngine(self._spec(path, n_ctx)) as engine:
            if self._text is None:  # one window of the evaluation text, re-tokenized the same by every copy
                tokens = engine.llama.tokenize(eval_text().encode(), add_bos=False)
                if len(tokens) < n_ctx + n_ctx // 2:
                    raise SpecError(f"the evaluation text has {len(tokens)} tokens: use n_ctx ≤ {len(tokens) * 2 // 3}")
                self._text = engine.llama.detokenize(tokens[: n_ctx + n_ctx // 2]).decode(errors="replace")
            keep = TOP_K if reference is None else 1
            return score_text(engine.llama, self._text, n_ctx=n_ctx, keep_top_k=keep, reference=reference)

    def reference(self) -> TextScores:
        """The full model's scores (its top-k log-probabilities per scored token), computed once."""
        if self._reference is None:
            self._reference = self._scores(self.source, None)
        return self._reference

    def divergence(self, path: Path) -> TextScores:
        """Scores of the model at `path` with its per-token KL from the full model (`.kl`, `.same_top`)."""
        return self._scores(Path(path), self.reference())

    def layer_importance(self, layers: Sequence[int] | None = None) -> list[LayerImportance]:
        """KL of the model without each block in `layers` (all by default), one pruned file at a time."""
        layers = sorted(_check_layers(range(self.n_layers) if layers is None else layers, self.n_layers))
        stored = self._key(f"importance {layers}")
        if stored.exists():
            return [LayerImportance(**row) for row in json.loads(stored.read_text())]
        results = []
        with tempfile.TemporaryDirectory(prefix="llmops-prune-") as folder:
            for layer in layers:
                scores = self.divergence(prune_gguf(self.source, [layer], Path(folder) / "pruned.gguf"))
                full = self.sliding is None or not self.sliding[layer]
                results.append(
                    LayerImportance(
                        layer, "full" if full else "sliding", float(scores.kl.mean()), float(scores.same_top.mean())
                    )
                )
        write_text(stored, json.dumps([asdict(r) for r in results], indent=1) + "\n")
        return results

    def _speed(self, path: Path) -> tuple[float, float]:
        """Prompt and generated tokens per CPU-second of the model at `path` (greedy, one run each)."""
        import llama_cpp

        n_prompt, n_new = self.settings.prompt_tokens, self.settings.generate_tokens
        with InProcessEngine(self._spec(path, n_prompt + n_new)) as engine:
            llama = engine.llama
            tokens = llama.tokenize(eval_text().encode(), add_bos=True)[:n_prompt]
            if len(tokens) < n_prompt:
                raise SpecError(f"the evaluation text has {len(tokens)} tokens: use prompt_tokens ≤ {len(tokens)}")
            llama.reset()
            start = time.process_time()
            llama.eval(tokens)
            prompt_cpu = time.process_time() - start
            start = time.process_time()
            for _ in range(n_new):
                logits = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
                llama.eval([int(np.argmax(np.ctypeslib.as_array(logits, shape=(llama.n_vocab(),))))])
            generation_cpu = time.process_time() - start
        return n_prompt / prompt_cpu, n_new / generation_cpu

    def measure(self, path: Path, name: str) -> ModelSpeed:
        """Size, KL from the full model and speed of any GGUF of this model's vocabulary (a quantized copy too)."""
        path = Path(path)
        scores = self.divergence(path) if path != self.source else None
        prompt, generation = self._speed(path)
        return ModelSpeed(
            name=name,
            layers=block_count(path),
            file_mb=path.stat().st_size / 1e6,
            kl=float(scores.kl.mean()) if scores is not None else 0.0,
            same_top=float(scores.same_top.mean()) if scores is not None else 1.0,
            prompt_tokens_per_cpu_s=prompt,
            generation_tokens_per_cpu_s=generation,
        )

    def pruned_speeds(self, drop_orders: dict[str, Sequence[int]]) -> list[ModelSpeed]:
        """The full model, then one depth-pruned copy per `{name: blocks to drop}`, each measured."""
        stored = self._key(f"speeds {sorted((k, sorted(v)) for k, v in drop_orders.items())}")
        if stored.exists():
            return [ModelSpeed(**row) for row in json.loads(stored.read_text())]
        results = [self.measure(self.source, f"full ({self.n_layers} blocks)")]
        with tempfile.TemporaryDirectory(prefix="llmops-prune-") as folder:
            for name, drop in drop_orders.items():
                path = prune_gguf(self.source, drop, Path(folder) / "pruned.gguf")
                results.append(self.measure(path, name))
                path.unlink()
        write_text(stored, json.dumps([asdict(r) for r in results], indent=1) + "\n")
        return results


def least_important(importance: Sequence[LayerImportance], n: int) -> list[int]:
    """The `n` blocks whose single removal changed the output least (ShortGPT's greedy choice)."""
    return sorted(r.layer for r in sorted(importance, key=lambda r: r.kl)[:n])
