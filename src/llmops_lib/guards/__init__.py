"""Guards: scanners that check what goes into and comes out of a model, and the pipeline that runs them per route.

Explained in: book/chapters/06_security/security.ipynb
"""

from llmops_lib.guards.base import SCANNERS, Finding, Scanner, Verdict, find_scanner, register
from llmops_lib.guards.pipeline import GuardPipeline, Guards, GuardSpec, Outcome, load_guards

__all__ = [
    "SCANNERS",
    "Finding",
    "GuardPipeline",
    "GuardSpec",
    "Guards",
    "Outcome",
    "Scanner",
    "Verdict",
    "find_scanner",
    "load_guards",
    "register",
]
