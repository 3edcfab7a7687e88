"""An LLM as a classifier: a few-shot prompt and the log-probabilities of two label words.

The teacher of task distillation. The prompt is `shots` demos (`Review: …\\nSentiment: positive`)
followed by the text; the label is the label word with the higher next-token log-probability, and
P(positive) is the softmax over the two. No text is generated, so one forward pass over the new
tokens answers: in-process the demos' prefix is evaluated ONCE and its KV cache reused for every
text (`n_tokens` rewound to the prefix), which makes labelling thousands of snippets a matter of
minutes on two cores.

Calibration ("contextual", Zhao et al. 2021, *Calibrate Before Use*) subtracts the label words'
log-probs for a content-free input ("N/A"); whether it helps is measured on the dev split by
`choose_calibration`, never assumed. The raw log-probs are cached as JSONL under
`LLMOPS_HOME/cache/distill/`, one file per (model sha256, prompt hash), one line per text, so the
chapter, the lab, the runbook, the tests and the benchmark pay for each text once.

`teacher_over_http` sends the same prompt to an OpenAI-compatible `/v1/completions` (llama-server,
vLLM) with `max_tokens=1` and `logprobs=k`: the engine-parity check.

Explained in: book/chapters/02_optimization/distillation
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import httpx
import numpy as np
from tqdm.auto import tqdm

from llmops_lib.atomic import write_text
from llmops_lib.config import settings
from llmops_lib.engines.spec import default_threads
from llmops_lib.errors import EngineError, SpecError
from llmops_lib.models import default_model, resolve_model, sha256_file
from llmops_lib.optimize.distill_data import Snippet, demos, load_snippets

LABEL_WORDS = (" negative", " positive")  # index = label
CALIBRATIONS = ("none", "contextual")
CONTENT_FREE = "N/A"
MAX_CHARS = 600
CHECKPOINT = 200  # new texts between two cache writes


def build_prefix(shots: int) -> str:
    """The few-shot demos, the same for every engine."""
    return "".join(f"{_suffix(s.text)}{LABEL_WORDS[s.label]}\n\n" for s in demos(load_snippets(), shots))


def _suffix(text: str) -> str:
    return f"Review: {' '.join(text.split())[:MAX_CHARS]}\nSentiment:"


def _p_positive(logprobs: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Softmax over the two label words of `logprobs` (n, 2) minus a calibration `offset` (2,)."""
    diff = (logprobs[:, 1] - offset[1]) - (logprobs[:, 0] - offset[0])
    return 1.0 / (1.0 + np.exp(-diff))


def _check(calibration: str, texts: Sequence[str]) -> None:
    if calibration not in CALIBRATIONS:
        raise SpecError(f"calibration={calibration!r} is not one of {', '.join(CALIBRATIONS)}")
    if isinstance(texts, str):
        raise SpecError("texts must be a list of strings, not one string: wrap it in a list")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise SpecError(f"text #{bad[0]} is empty or not a string: every text needs words to classify")


@cache
def _sha256(path: Path, size: int, mtime: float) -> str:
    return sha256_file(path)


class LabelWordTeacher:
    """Gemma (or any GGUF) in-process as a few-shot label-word classifier with a disk cache."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        shots: int = 8,
        threads: int | None = None,
        calibration: str = "none",
        cache_dir: Path | None = None,
    ) -> None:
        _check(calibration, [])
        self.model_path = resolve_model(model_path) if model_path else default_model()
        self.shots, self.threads, self.calibration = shots, threads or default_threads(), calibration
        self.prefix = build_prefix(shots)
        stat = self.model_path.stat()
        model_sha = _sha256(self.model_path, stat.st_size, stat.st_mtime)
        prompt_hash = hashlib.sha256(json.dumps([self.prefix, _suffix("{text}"), LABEL_WORDS]).encode()).hexdigest()
        folder = cache_dir or settings().home / "cache" / "distill"
        self.cache_path = folder / f"{model_sha[:16]}-{prompt_hash[:16]}.jsonl"
        self._cache = self._read_cache()
        self._llama = None
        self._prefix_tokens: list[int] = []
        self._label_ids: tuple[int, int] = (0, 0)
        self.cpu_seconds_per_request: float | None = None

    def prompt(self, text: str) -> str:
        """The exact prompt a text is classified with."""
        return self.prefix + _suffix(text)

    def _read_cache(self) -> dict[str, list[float]]:
        entries: dict[str, list[float]] = {}
        if self.cache_path.exists():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    entries[row["text"]] = [float(v) for v in row["logprobs"]]
                except (ValueError, KeyError, TypeError):
                    continue  # a line another writer was cutting: recomputed if needed
        return entries

    def _write_cache(self) -> None:
        merged = {**self._read_cache(), **self._cache}  # keep what another process added meanwhile
        lines = (json.dumps({"text": t, "logprobs": lp}, ensure_ascii=False) for t, lp in merged.items())
        write_text(self.cache_path, "\n".join(lines) + "\n")
        self._cache = merged

    def _engine(self):
        if self._llama is None:
            from llama_cpp import Llama

            try:
                self._llama = Llama(
                    str(self.model_path),
                    n_ctx=512,
                    n_batch=512,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise EngineError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
            ids = [self._llama.tokenize(w.encode(), add_bos=False) for w in LABEL_WORDS]
            if any(len(i) != 1 for i in ids):
                raise EngineError(f"label words {LABEL_WORDS} are not single tokens for {self.model_path.name}")
            self._label_ids = (ids[0][0], ids[1][0])
            self._prefix_tokens = self._llama.tokenize(self.prefix.encode(), add_bos=True)
            self._llama.eval(self._prefix_tokens)
        return self._llama

    def _score(self, text: str) -> list[float]:
        """Log-probs of the two label words after the prefix and `text`; the prefix KV is reused."""
        llama = self._engine()
        llama.n_tokens = len(self._prefix_tokens)  # rewind: eval() drops the KV beyond this point
        llama.eval(llama.tokenize(_suffix(text).encode(), add_bos=False))
        logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),)).astype(np.float64)
        top = logits.max()
        log_z = top + math.log(np.exp(logits - top).sum())
        return [float(logits[i] - log_z) for i in self._label_ids]

    def logprobs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Raw (n, 2) log-probs of (negative, positive); uncached texts are scored and cached."""
        _check(self.calibration, texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            start = time.process_time()
            for done, text in enumerate(tqdm(missing, desc="teacher", disable=not progress, mininterval=5), 1):
                self._cache[text] = self._score(text)
                if done % CHECKPOINT == 0:
                    self._write_cache()
            self.cpu_seconds_per_request = (time.process_time() - start) / len(missing)
            self._write_cache()
        return np.array([self._cache[t] for t in texts], dtype=np.float64).reshape(len(texts), 2)

    def _offset(self, calibration: str) -> np.ndarray:
        return self.logprobs([CONTENT_FREE])[0] if calibration == "contextual" else np.zeros(2)

    def probabilities(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """P(positive) per text under the teacher's calibration."""
        return _p_positive(self.logprobs(texts, progress), self._offset(self.calibration))

    __call__ = probabilities

    def labels(self, texts: Sequence[str]) -> np.ndarray:
        """The teacher's decisions, 1 positive / 0 negative."""
        return (self.probabilities(texts) >= 0.5).astype(int)

    def choose_calibration(self, dev: Sequence[Snippet]) -> dict[str, float]:
        """Gold accuracy on `dev` per calibration; keeps the best (ties go to "none", the simpler)."""
        raw = self.logprobs([s.text for s in dev])
        gold = np.array([s.label for s in dev])
        scores = {c: float(((_p_positive(raw, self._offset(c)) >= 0.5) == gold).mean()) for c in CALIBRATIONS}
        self.calibration = max(CALIBRATIONS, key=lambda c: (scores[c], c == "none"))
        return scores

    def measure_cpu(self, texts: Sequence[str]) -> float:
        """CPU seconds (process time, all engine threads) per request, scored afresh without the cache."""
        _check(self.calibration, texts)
        self._engine()
        start = time.process_time()
        for text in texts:
            self._score(text)
        self.cpu_seconds_per_request = (time.process_time() - start) / max(1, len(texts))
        return self.cpu_seconds_per_request

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def __enter__(self) -> LabelWordTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _top_logprobs(choice: dict) -> dict[str, float]:
    """The first generated position's top log-probs, in vLLM's or llama-server's shape.

    Token texts are normalised: SentencePiece marks a leading space as "▁", which some servers keep.
    """
    logprobs = choice.get("logprobs") or {}
    if logprobs.get("top_logprobs"):  # OpenAI legacy completions (vLLM): [{token: logprob}]
        pairs = logprobs["top_logprobs"][0].items()
    elif logprobs.get("content"):  # llama-server: [{"top_logprobs": [{"token", "logprob"}]}]
        pairs = ((e["token"], e["logprob"]) for e in logprobs["content"][0]["top_logprobs"])
    else:
        raise EngineError(f"the completion carries no top log-probs: {str(choice)[:200]}")
    top: dict[str, float] = {}
    for token, value in pairs:
        top.setdefault(token.replace("\u2581", " "), float(value))
    return top


def teacher_over_http(
    base_url: str,
    model: str,
    *,
    shots: int = 8,
    calibration: str = "none",
    top_logprobs: int = 20,
    timeout: float = 60.0,
) -> Callable[[Sequence[str]], np.ndarray]:
    """The same teacher through `/v1/completions` of a running server: texts -> P(positive).

    A label word outside the returned top-k gets the lowest returned log-prob (an upper bound).
    """
    _check(calibration, [])
    prefix = build_prefix(shots)

    def score(text: str) -> list[float]:
        body = {
            "model": model,
            "prompt": prefix + _suffix(text),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": top_logprobs,
        }
        try:
            response = httpx.post(f"{base_url.rstrip('/')}/v1/completions", json=body, timeout=timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EngineError(f"{base_url} did not answer the completion: {exc}") from exc
        top = _top_logprobs(response.json()["choices"][0])
        floor = min(top.values())
        return [top.get(w, floor) for w in LABEL_WORDS]

    def probabilities(texts: Sequence[str]) -> np.ndarray:
        _check(calibration, texts)
        offset = np.array(score(CONTENT_FREE)) if calibration == "contextual" else np.zeros(2)
        return _p_positive(np.array([score(t) for t in texts]).reshape(len(texts), 2), offset)

    return probabilities
