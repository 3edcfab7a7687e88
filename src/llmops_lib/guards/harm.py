"""The `harm` output scanner: the classifier trained on PyRIT's human-scored model answers.

Profanity lists miss most harmful answers (a calm recipe for a weapon has no bad word); this
classifier learned from answers people scored for harm across eight categories. Its quality on a
category it never saw is measured leave-one-category-out in `evaluate.harm_table`.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from llmops_lib.guards.base import Finding, Verdict, register
from llmops_lib.guards.classifier import harm_classifier


@register("harm")
class HarmScanner:
    """Harmful content in a model's answer.

    Args:
        threshold: the harm probability at or above which the answer is not allowed.
    """

    name = "harm"

    def __init__(self, threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5) -> None:
        self.threshold = threshold
        self.model = harm_classifier()  # trained or loaded now, not per answer

    def scan(self, text: str) -> Verdict:
        probability = float(self.model.scores([text])[0])
        blocked = probability >= self.threshold
        findings = (Finding("harmful_content", f"harm probability {probability:.2f}"),) if blocked else ()
        return Verdict(allowed=not blocked, score=probability, findings=findings)
