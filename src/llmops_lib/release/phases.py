"""The phases of a rollout and of its analysis, as typed values (Argo Rollouts' `RolloutPhase` and
`AnalysisPhase`), so the controller, the CLI, the reports and the runbooks compare members, not
strings that could be misspelt. Each is a `StrEnum`: it is written to state files and audit
trails as its plain name ("Promoted") and compares equal to it.

Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a rollout is."""

    PENDING = "Pending"  # recorded, waiting for confirm-rollout hooks
    PROGRESSING = "Progressing"  # moving through its steps, analysis running
    PAUSED = "Paused"  # waiting for an operator (a pause step, or an inconclusive analysis)
    PROMOTING = "Promoting"  # promotion started; a restarted controller finishes it
    ROLLING_BACK = "RollingBack"  # rollback started; a restarted controller finishes it
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"

    @property
    def done(self) -> bool:
        """Whether the rollout has ended (promoted or rolled back): nothing will change it any more."""
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK)


class AnalysisPhase(StrEnum):
    """The phase of one measurement, or of the whole analysis (Argo's rules)."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"  # the measurement could not be taken
    RUNNING = "Running"  # the analysis has not decided yet

    @property
    def completed(self) -> bool:
        """Whether this is a verdict (Argo's `Completed()`): every phase except Running."""
        return self is not AnalysisPhase.RUNNING
