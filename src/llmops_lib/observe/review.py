"""The human-review queue: answers the gateway was unsure of, read from the request log.

A route with `review_below` asks the engine for token log-probabilities, logs each answer's
confidence (`evals.confidence.confidence_of_choice`) and marks `needs_review = 1` under the
threshold. `queue` lists those requests, least confident first, for a person to check; `stats` says
how much traffic goes to review, and, given which answers were right (a labelled reference set sent
through the gateway, or the reviewers' verdicts), the accuracy of what was accepted automatically
against what was sent to review. Rows without a confidence (streamed answers, routes without
review) are neither accepted nor reviewed: they are counted apart.

Explained in: book/chapters/05_quality/quality_assurance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmops_lib.bench.stats import Interval
from llmops_lib.evals.stats import proportion_interval


def scored(rows: Sequence[dict]) -> list[dict]:
    """The rows the review rule judged: a confidence was logged."""
    return [row for row in rows if row.get("confidence") is not None and row.get("needs_review") is not None]


def queue(rows: Sequence[dict]) -> list[dict]:
    """The rows marked for review, least confident first."""
    return sorted((row for row in scored(rows) if row["needs_review"]), key=lambda row: row["confidence"])


@dataclass(frozen=True)
class ReviewStats:
    """How much traffic goes to review and, with labels, how good the auto-accepted part is.

    `accepted_accuracy` and `reviewed_accuracy` (Wilson intervals) are None without labels or without
    a labelled row in that group; `labelled` counts the judged rows that had a label.
    """

    requests: int
    judged: int
    needs_review: int
    labelled: int
    accepted_accuracy: Interval | None
    reviewed_accuracy: Interval | None
    overall_accuracy: Interval | None

    @property
    def review_rate(self) -> float | None:
        """Share of judged requests sent to review (None when none was judged)."""
        return self.needs_review / self.judged if self.judged else None


def _accuracy(rows: Sequence[dict], correct: Mapping[str, float]) -> Interval | None:
    labels = [correct[row["request_id"]] for row in rows if row["request_id"] in correct]
    return proportion_interval(int(sum(labels)), len(labels)) if labels else None


def stats(rows: Sequence[dict], correct: Mapping[str, float] | None = None) -> ReviewStats:
    """Review rate of the rows and, given `correct` (request id → 1 right / 0 wrong), the accuracy of the
    answers accepted automatically, of those sent to review, and of all judged answers."""
    judged = scored(rows)
    review = [row for row in judged if row["needs_review"]]
    accepted = [row for row in judged if not row["needs_review"]]
    labels = correct or {}
    return ReviewStats(
        requests=len(rows),
        judged=len(judged),
        needs_review=len(review),
        labelled=sum(row["request_id"] in labels for row in judged),
        accepted_accuracy=_accuracy(accepted, labels),
        reviewed_accuracy=_accuracy(review, labels),
        overall_accuracy=_accuracy(judged, labels),
    )
