"""Task distillation: a cheap student learns the LLM teacher's decisions; a cascade keeps quality.

The teacher (`teacher.LabelWordTeacher`) labels texts with P(positive). A student is a scikit-learn
logistic regression on features that cost microseconds: TF-IDF (word 1-2-grams + character
2-5-grams) and the teacher's OWN token-embedding table, read from the GGUF with gguf-py,
dequantized row by row and mean-pooled over the teacher tokenizer's tokens (a static embedding,
as in Model2Vec). Soft targets (Hinton et al. 2015) are the teacher's probabilities, used by
duplicating every text as a positive row weighted p and a negative row weighted 1 - p; hard
targets are the teacher's labels.

A student alone agrees with the teacher only so far. The `Cascade` answers with the student when
it is confident (|p - 0.5| >= threshold) and asks the teacher otherwise; the threshold is chosen
on the DEV split for a target agreement (`choose_threshold`) and then reported on test. A
`Cascade` is a plain callable (texts -> labels), so the gateway can use it as a router or a guard.

Costs are CPU time of this process (`time.process_time`, every thread), per single request, so
teacher and student measured in the same run are comparable on a busy machine.

Explained in: book/chapters/02_optimization/distillation
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from scipy import sparse

from llmops_lib.errors import SpecError
from llmops_lib.gguf_header import read_header
from llmops_lib.models import default_model, resolve_model
from llmops_lib.optimize.distill_data import DataError, Snippet, Splits, load_snippets, split
from llmops_lib.optimize.teacher import CALIBRATIONS, LabelWordTeacher, teacher_over_http

FEATURES = ("tfidf", "embeddings")


class StaticEmbeddings:
    """Mean of the teacher's token-embedding rows over a text's tokens (dequantized on first use)."""

    def __init__(self, model_path: Path | None = None) -> None:
        from llama_cpp import Llama

        path = resolve_model(model_path) if model_path else default_model()
        header = read_header(path)  # gguf-py's GGUFReader parses the 262k-token vocabulary: 30 s
        tensor = next(t for t in header.tensors if t.name == "token_embd.weight")
        row_bytes = tensor.n_bytes // tensor.shape[1]
        self._raw = np.memmap(path, np.uint8, "r", header.data_offset + tensor.offset, (tensor.shape[1], row_bytes))
        self._type = tensor.type
        self._index: dict[int, int] = {}  # token id -> row of self._table
        self._table = np.zeros((0, tensor.shape[0]), dtype=np.float32)
        self._tokenizer = Llama(str(path), vocab_only=True, n_ctx=8, verbose=False)

    def _ids(self, text: str) -> list[int]:
        return self._tokenizer.tokenize(f" {text}".encode(), add_bos=False) or [0]

    def _load(self, ids: set[int]) -> None:
        """Dequantize the rows not seen yet, in one call (the table grows once per batch)."""
        import gguf

        missing = sorted(ids - self._index.keys())
        if missing:
            self._index.update({i: len(self._index) + n for n, i in enumerate(missing)})
            self._table = np.vstack([self._table, gguf.quants.dequantize(self._raw[missing], self._type)])

    def _pool(self, ids: list[int]) -> np.ndarray:
        pooled = self._table[[self._index[i] for i in ids]].mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-9)

    def one(self, text: str) -> np.ndarray:
        """The L2-normalised mean embedding of one text."""
        ids = self._ids(text)
        self._load(set(ids))
        return self._pool(ids)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        ids = [self._ids(t) for t in texts]
        self._load(set().union(*ids))
        return np.stack([self._pool(row) for row in ids])


@cache
def _static_embeddings(path: Path) -> StaticEmbeddings:
    """One table per model file: every student of a page shares its dequantized rows."""
    return StaticEmbeddings(path)


class _Tfidf:
    """A fitted TfidfVectorizer's transform for one text in plain Python (sklearn's per-call checks
    cost more than the arithmetic): sublinear tf times idf, L2-normalised, as a {column: value} dict."""

    def __init__(self, vectorizer) -> None:
        self.vectorizer, self.analyze = vectorizer, vectorizer.build_analyzer()
        self.vocabulary, self.idf = vectorizer.vocabulary_, vectorizer.idf_
        self.width = len(self.vocabulary)

    def one(self, text: str) -> dict[int, float]:
        counts = Counter(j for term in self.analyze(text) if (j := self.vocabulary.get(term)) is not None)
        values = {j: (1 + math.log(c)) * self.idf[j] for j, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in values.values())) or 1.0
        return {j: v / norm for j, v in values.items()}


class _Features:
    """The student's feature extractors: a sparse matrix to train on, a dot product to serve."""

    def __init__(self, texts: Sequence[str], features: tuple[str, ...], model_path: Path | None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.tfidf: list[_Tfidf] = []
        if "tfidf" in features:
            words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
            chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
            self.tfidf = [_Tfidf(words.fit(texts)), _Tfidf(chars.fit(texts))]
        path = resolve_model(model_path) if model_path else default_model()
        self.embeddings = _static_embeddings(path) if "embeddings" in features else None

    def matrix(self, texts: Sequence[str]) -> sparse.csr_matrix:
        parts = [t.vectorizer.transform(texts) for t in self.tfidf]
        if self.embeddings is not None:
            parts.append(sparse.csr_matrix(self.embeddings(texts)))
        return sparse.hstack(parts, format="csr")

    def score(self, text: str, weights: np.ndarray) -> float:
        """weights · features(text), without building a matrix (one request's path)."""
        total, offset = 0.0, 0
        for part in self.tfidf:
            total += sum(weights[offset + j] * v for j, v in part.one(text).items())
            offset += part.width
        if self.embeddings is not None:
            total += float(weights[offset:] @ self.embeddings.one(text))
        return total


@dataclass
class Student:
    """A trained student: texts -> P(positive), and what one request costs."""

    name: str
    features: tuple[str, ...]
    soft: bool
    _features: _Features = field(repr=False)
    _weights: np.ndarray = field(repr=False)
    _intercept: float = field(repr=False)
    cpu_ms_per_request: float | None = None

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text (the logistic regression's, computed one text at a time)."""
        _check_texts(texts)
        scores = np.array([self._features.score(t, self._weights) for t in texts]) + self._intercept
        return 1.0 / (1.0 + np.exp(-scores))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Labels, 1 positive / 0 negative."""
        return (self.predict_proba(texts) >= 0.5).astype(int)

    __call__ = predict_proba

    def measure_cpu(self, texts: Sequence[str]) -> float:
        """CPU milliseconds per SINGLE-text request (featurisation included), averaged over `texts`."""
        start = time.process_time()
        for text in texts:
            self.predict_proba([text])
        self.cpu_ms_per_request = 1000 * (time.process_time() - start) / max(1, len(texts))
        return self.cpu_ms_per_request


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise SpecError("texts must be a list of strings: wrap a single text in a list")


def train_student(
    texts: Sequence[str],
    p_teacher: Sequence[float],
    *,
    features: tuple[str, ...] = ("embeddings",),
    soft: bool = True,
    model_path: Path | None = None,
    C: float = 16.0,
) -> Student:
    """Fit a logistic-regression student on the teacher's probabilities (`soft`) or labels.

    The defaults (the static embeddings alone, `C` = 16, the inverse regularisation) are what
    agreement with the teacher on the DEV split chose; TF-IDF is there to compare.
    """
    from sklearn.linear_model import LogisticRegression

    _check_texts(texts)
    p = np.asarray(p_teacher, dtype=np.float64)
    if len(p) != len(texts) or len(texts) < 2:
        raise SpecError(f"{len(texts)} texts and {len(p)} teacher probabilities: give one per text, at least two")
    if not np.all((p >= 0) & (p <= 1)):
        raise SpecError("teacher probabilities must lie in [0, 1]")
    if not features or set(features) - set(FEATURES):
        raise SpecError(f"features={features!r}: choose one or more of {', '.join(FEATURES)}")
    if len(set((p >= 0.5).tolist())) < 2:
        raise SpecError("the teacher gave every text the same label: a student needs both labels to learn")
    extractors = _Features(texts, tuple(features), model_path)
    x = extractors.matrix(texts)
    if soft:
        x, y, weight = sparse.vstack([x, x]), np.r_[np.ones(len(p)), np.zeros(len(p))], np.r_[p, 1 - p]
    else:
        y, weight = (p >= 0.5).astype(int), None
    model = LogisticRegression(C=C, max_iter=2000).fit(x, y, sample_weight=weight)
    name = " + ".join(features) + (" (soft)" if soft else " (hard)")
    return Student(name, tuple(features), soft, extractors, model.coef_[0], float(model.intercept_[0]))


def agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of items on which two P(positive) (or 0/1) arrays give the same label."""
    a, b = np.asarray(a) >= 0.5, np.asarray(b) >= 0.5
    if a.shape != b.shape or a.size == 0:
        raise SpecError(f"cannot compare {a.size} with {b.size} predictions: give two equal, non-empty arrays")
    return float((a == b).mean())


def _routed(p_student: np.ndarray, threshold: float) -> np.ndarray:
    """True where the student is NOT confident enough: those go to the teacher."""
    return np.abs(p_student - 0.5) < threshold


def cascade_table(
    p_student: Sequence[float],
    p_teacher: Sequence[float],
    thresholds: Sequence[float] | None = None,
    *,
    student_cpu: float | None = None,
    teacher_cpu: float | None = None,
) -> list[dict[str, float]]:
    """Agreement with the teacher and share sent to it per threshold (+ cost relative to the teacher)."""
    ps, pt = np.asarray(p_student, dtype=float), np.asarray(p_teacher, dtype=float)
    agreement(ps, pt)  # checks the shapes
    rows = []
    for threshold in np.linspace(0, 0.5, 51) if thresholds is None else thresholds:
        routed = _routed(ps, float(threshold))
        same = np.where(routed, True, (ps >= 0.5) == (pt >= 0.5))
        row = {"threshold": float(threshold), "agreement": float(same.mean()), "teacher_share": float(routed.mean())}
        if student_cpu is not None and teacher_cpu:
            row["relative_cost"] = row["teacher_share"] + student_cpu / teacher_cpu
        rows.append(row)
    return rows


def choose_threshold(
    p_student_dev: Sequence[float], p_teacher_dev: Sequence[float], *, target_agreement: float = 0.95
) -> float:
    """The smallest threshold whose agreement on DEV reaches the target (0.5: everything to the teacher).

    Candidates sit just above each dev margin, so each one sends that item (and all less sure) on.
    """
    if not 0 < target_agreement <= 1:
        raise SpecError(f"target_agreement={target_agreement} is outside (0, 1]")
    margins = np.abs(np.asarray(p_student_dev, dtype=float) - 0.5) + 1e-9
    candidates = np.unique(np.r_[0.0, np.minimum(margins, 0.5), 0.5])
    for row in cascade_table(p_student_dev, p_teacher_dev, candidates):
        if row["agreement"] >= target_agreement:
            return row["threshold"]
    return 0.5


@dataclass
class Cascade:
    """Student first, teacher for the unsure: texts -> labels. Usable as a gateway router or guard."""

    student: Student
    teacher: Callable[[Sequence[str]], np.ndarray]
    threshold: float
    teacher_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 0.5:
            raise SpecError(f"threshold={self.threshold} is outside [0, 0.5] (a margin around P = 0.5)")

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text: the student's, or the teacher's where the student is unsure."""
        p = self.student.predict_proba(texts)
        routed = _routed(p, self.threshold)
        if routed.any():
            p[routed] = self.teacher([t for t, r in zip(texts, routed, strict=True) if r])
        self.teacher_share = float(routed.mean()) if len(p) else 0.0
        return p

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return (self.probabilities(texts) >= 0.5).astype(int)


__all__ = [
    "CALIBRATIONS",
    "FEATURES",
    "Cascade",
    "DataError",
    "LabelWordTeacher",
    "Snippet",
    "Splits",
    "StaticEmbeddings",
    "Student",
    "agreement",
    "cascade_table",
    "choose_threshold",
    "load_snippets",
    "split",
    "teacher_over_http",
    "train_student",
]
