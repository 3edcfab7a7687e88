"""The `injection` input scanner: the rules (guards/rules.py) in front of the trained classifier.

Rules catch what is short and literal (override phrases, fake turns, encoded orders) that a
classifier trained on long jailbreak templates misses; the classifier catches the long role-play
templates that no phrase list covers. Each layer gives a score in [0, 1] on one scale (the
classifier's probability is rescaled so that its chosen threshold lands on 0.5, the rules' own
"one strong finding"); the scanner's score is the larger of the two, so either layer alone can block.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from llmops_lib.guards.base import Finding, Verdict, register
from llmops_lib.guards.classifier import injection_classifier
from llmops_lib.guards.rules import rule_score


def on_rule_scale(probability: float, threshold: float) -> float:
    """Map a classifier probability onto [0, 1] so that `threshold` becomes 0.5 (piecewise linear)."""
    if probability < threshold:
        return 0.5 * probability / threshold
    return 0.5 + 0.5 * (probability - threshold) / (1.0 - threshold) if threshold < 1 else 1.0


@register("injection")
class InjectionScanner:
    """Prompt injection and jailbreak detection in two layers.

    Args:
        threshold: the combined score at or above which the text is not allowed (0.5: one strong
            rule finding, or the classifier at its validated threshold).
        rules: use the rules layer (turn off only to measure the classifier alone).
        classifier: use the classifier layer (turn off only to measure the rules alone).
    """

    name = "injection"

    def __init__(
        self, threshold: Annotated[float, Field(gt=0, le=1)] = 0.5, rules: bool = True, classifier: bool = True
    ) -> None:
        self.threshold = threshold
        self.rules = rules
        self.model = injection_classifier() if classifier else None  # trained or loaded now, not per request

    def scan(self, text: str) -> Verdict:
        score, findings = rule_score(text) if self.rules else (0.0, ())
        if self.model is not None:
            probability = float(self.model.scores([text])[0])
            scaled = on_rule_scale(probability, self.model.threshold)
            if scaled >= self.threshold:
                findings += (Finding("classifier", f"injection probability {probability:.2f}"),)
            score = max(score, scaled)
        return Verdict(allowed=score < self.threshold, score=score, findings=findings)
