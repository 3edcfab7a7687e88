"""Perplexity and KL divergence of a model on a fixed text, from llama.cpp's own logits.

The method follows llama.cpp's `llama-perplexity`: the tokenized text is cut into non-overlapping
windows of `n_ctx` tokens, each window starts with BOS, and only the second half of each window is
scored, so every scored token has at least `n_ctx / 2` tokens of context. Only the scored
positions ask llama.cpp for logits: with a 262,144-token vocabulary the output layer is as costly
as the rest of Gemma 3 270M, and every logits row is 1 MiB.

KL divergence needs the reference's distribution at every scored token. Storing it whole would
take 1 MiB per token, so the reference keeps its top `TOP_K` (32) log-probabilities and the KL is
taken over those tokens plus one bucket for the rest of the vocabulary. Merging outcomes never
increases a KL divergence, so this is a (close) lower bound of the full KL, and it is exactly 0
for identical distributions.

`held_out_perplexity` keeps one value per model file on disk: the release analysis's quality gate.

Explained in: book/chapters/02_optimization/quantization (and 04_delivery/canary_release for the gate)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmops_lib.atomic import write_text
from llmops_lib.config import settings
from llmops_lib.engines import EngineSpec, InProcessEngine
from llmops_lib.errors import EngineError, SpecError

if TYPE_CHECKING:
    from llama_cpp import Llama

TOP_K = 32


def eval_text() -> str:
    """The English text that ships with the library for measuring quality (original prose, ~800 words)."""
    return (files("llmops_lib") / "data" / "eval_text.txt").read_text(encoding="utf-8")


def cache_key(**inputs: object) -> str:
    """sha256 of the inputs as canonical JSON: any change of any input gives another key."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def held_out_perplexity(path: str | Path, sha256: str, n_ctx: int = 256) -> float:
    """Perplexity of the GGUF at `path` on `eval_text()` with llama.cpp in-process (one thread).

    Computed once per file and kept under `LLMOPS_HOME/cache/perplexity/`, keyed by the file's
    `sha256`, the text, the window and llama.cpp's version: the release analysis asks for the
    same two versions' values at every rollout.
    """
    text = eval_text()
    key = cache_key(model=sha256, text=text, n_ctx=n_ctx, llama_cpp=version("llama-cpp-python"))
    stored = settings().home / "cache" / "perplexity" / f"{key}.json"
    if stored.exists():
        return float(json.loads(stored.read_text())["perplexity"])
    with InProcessEngine(EngineSpec(model=path, n_ctx=n_ctx, threads=1, batch_size=n_ctx)) as engine:
        value = score_text(engine.llama, text, n_ctx=n_ctx).perplexity
    write_text(stored, json.dumps({"perplexity": value, "path": str(path)}))
    return value


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float32 (stable: the row maximum is subtracted first)."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def perplexity(token_logprobs: np.ndarray) -> float:
    """exp of the mean negative log-likelihood of the scored tokens."""
    return float(np.exp(-np.mean(token_logprobs, dtype=np.float64)))


def top_k(logprobs: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The `k` most likely token ids per row (most likely first) and their log-probabilities."""
    if k == 1:  # argmax is ~100× faster than a partition on 262,144 columns
        ids = logprobs.argmax(axis=1)[:, None]
        return ids.astype(np.int32), np.take_along_axis(logprobs, ids, axis=1)
    ids = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(logprobs, ids, axis=1)
    order = np.argsort(-values, axis=1)
    return np.take_along_axis(ids, order, axis=1).astype(np.int32), np.take_along_axis(values, order, axis=1)


def kl_divergence(ref_ids: np.ndarray, ref_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """Per-row KL(reference ‖ model) over the reference's top-k tokens plus one bucket for the rest.

    Args:
        ref_ids, ref_logprobs: the reference's top-k ids and log-probabilities, shape (rows, k).
        logprobs: the model's full log-probabilities, shape (rows, vocabulary).
    """
    model_top = np.take_along_axis(logprobs, ref_ids, axis=1).astype(np.float64)
    ref_top = ref_logprobs.astype(np.float64)
    kl = (np.exp(ref_top) * (ref_top - model_top)).sum(axis=1)
    ref_rest = np.clip(1.0 - np.exp(ref_top).sum(axis=1), 0.0, 1.0)
    model_rest = np.clip(1.0 - np.exp(model_top).sum(axis=1), 1e-12, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = np.where(ref_rest > 0, ref_rest * (np.log(ref_rest) - np.log(model_rest)), 0.0)
    return np.maximum(kl + rest, 0.0)  # float rounding can dip a hair below 0


@dataclass(frozen=True)
class TextScores:
    """What a model made of the scored tokens of a text."""

    token_logprobs: np.ndarray
    """log-probability of each scored token, shape (n,)."""
    top_ids: np.ndarray
    """the model's top-k token ids per scored position, shape (n, k) (k = 1 unless asked for more)."""
    top_logprobs: np.ndarray
    kl: np.ndarray | None = None
    """per-token KL divergence from the reference, when one was given."""
    same_top: np.ndarray | None = None
    """per token, whether the model's most likely token is the reference's."""

    @property
    def perplexity(self) -> float:
        return perplexity(self.token_logprobs)


def scored_windows(n_tokens: int, n_ctx: int) -> list[tuple[int, int]]:
    """(start, end) of each full window of `n_ctx` tokens; a text shorter than one window is refused."""
    if n_ctx < 8:
        raise SpecError(f"the perplexity window must be at least 8 tokens, got {n_ctx}")
    if n_tokens < n_ctx:
        raise SpecError(
            f"the text has {n_tokens} tokens, fewer than one window of {n_ctx}: use a longer text or a smaller window"
        )
    return [(start, start + n_ctx) for start in range(0, n_tokens - n_ctx + 1, n_ctx)]


def score_text(
    llama: Llama,
    text: str,
    *,
    n_ctx: int,
    keep_top_k: int = 1,
    reference: TextScores | None = None,
) -> TextScores:
    """Score `text` with a loaded llama-cpp-python `Llama` whose context holds at least `n_ctx` tokens.

    Args:
        keep_top_k: how many top tokens to keep per position (`TOP_K` when this is the reference).
        reference: the reference's scores on the same text and window, for KL and top-token agreement.
    """
    import llama_cpp

    tokens = llama.tokenize(text.encode("utf-8"), add_bos=False)
    windows = scored_windows(len(tokens), n_ctx)
    n_batch = min(llama.n_batch, n_ctx)
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    parts: list[TextScores] = []
    done = 0  # scored tokens so far: the row in the reference that the next row matches
    try:
        for start, end in windows:
            window = [llama.token_bos(), *tokens[start + 1 : end]]
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llama.ctx), True)
            # logits at position i predict token i + 1; as llama-perplexity, positions n_ctx/2 … n_ctx - 2
            scored = _decode(
                llama, batch, window, n_batch, lambda at: n_ctx // 2 <= at <= n_ctx - 2, f"the window at token {start}"
            )
            for logprobs, targets in scored:
                parts.append(_score_rows(logprobs, targets, keep_top_k, reference, done))
                done += len(targets)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama.reset()  # the Llama object's own token bookkeeping no longer matches its cache
    if reference is not None and done != len(reference.token_logprobs):
        raise SpecError(
            f"the reference scored {len(reference.token_logprobs)} tokens and this model {done}: "
            "score the same text and window"
        )
    return TextScores(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in ("token_logprobs", "top_ids", "top_logprobs")),
        *(
            np.concatenate([getattr(p, name) for p in parts]) if reference is not None else None
            for name in ("kl", "same_top")
        ),
    )


def _decode(
    llama: Llama, batch, sequence: list[int], n_batch: int, wanted: Callable[[int], bool], what: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode one sequence from position 0 in pieces of `n_batch` tokens, asking llama.cpp for
    logits only at the positions where `wanted(position)`; yield, per piece, the log-probabilities
    at those positions and the tokens they predict (the logits at position i predict token i + 1)."""
    import llama_cpp

    for offset in range(0, len(sequence), n_batch):
        piece = sequence[offset : offset + n_batch]
        flags = [wanted(offset + i) for i in range(len(piece))]
        _fill(batch, piece, offset, flags)
        if llama_cpp.llama_decode(llama.ctx, batch) != 0:
            raise EngineError(f"llama.cpp failed to decode {what} (llama_decode at token {offset})")
        if n_out := sum(flags):
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llama.ctx), shape=(n_out, llama.n_vocab()))
            first = offset + flags.index(True)
            yield log_softmax(rows), np.asarray(sequence[first + 1 : first + 1 + n_out])


def _fill(batch, tokens: list[int], first_pos: int, wanted: list[bool]) -> None:
    """Put one sequence's tokens into a llama_batch, asking for logits only where `wanted`."""
    batch.n_tokens = len(tokens)
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = first_pos + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = wanted[i]


def _score_rows(
    logprobs: np.ndarray, targets: np.ndarray, keep_top_k: int, reference: TextScores | None, first_row: int
) -> TextScores:
    ids, values = top_k(logprobs, keep_top_k)
    kl = same_top = None
    if reference is not None:
        rows = slice(first_row, first_row + len(targets))
        kl = kl_divergence(reference.top_ids[rows], reference.top_logprobs[rows], logprobs)
        same_top = ids[:, 0] == reference.top_ids[rows, 0]
    return TextScores(logprobs[np.arange(len(targets)), targets], ids, values, kl, same_top)


def continuation_logprobs(llama: Llama, prompt: str, continuation: str) -> np.ndarray:
    """log-probability of each token of `continuation` following `prompt` (after BOS), by one pass
    over the text that asks llama.cpp for logits only where a continuation token is predicted.

    The quality monitors score sampled completions this way (book/chapters/03_observability/monitoring).
    """
    import llama_cpp

    head = llama.tokenize(prompt.encode("utf-8"), add_bos=True)
    tokens = llama.tokenize((prompt + continuation).encode("utf-8"), add_bos=True)
    # Tokenizing the whole text may merge across the boundary: score from the last shared token on.
    shared = next(
        (i for i, (a, b) in enumerate(zip(head, tokens, strict=False)) if a != b), min(len(head), len(tokens))
    )
    first = max(shared, 1)
    if first >= len(tokens):
        raise SpecError("the continuation is empty: there is nothing to score")
    if len(tokens) > llama.n_ctx():
        raise SpecError(
            f"prompt and continuation take {len(tokens)} tokens, more than the context of {llama.n_ctx()}: "
            "load the model with a larger n_ctx"
        )
    batch = llama_cpp.llama_batch_init(llama.n_batch, 0, 1)
    try:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llama.ctx), True)
        scored = _decode(
            llama,
            batch,
            tokens,
            llama.n_batch,
            lambda at: first - 1 <= at <= len(tokens) - 2,
            "the prompt and completion",
        )
        scores = [logprobs[np.arange(len(targets)), targets] for logprobs, targets in scored]
    finally:
        llama_cpp.llama_batch_free(batch)
        llama.reset()
    return np.concatenate(scores)
