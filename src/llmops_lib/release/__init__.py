"""Release engineering: a model registry, canary rollouts judged by analysis, promotion and rollback.

- `registry`: MLflow's model registry, with verified registration and audited alias moves.
- `rollout`: the rollout spec (steps, analysis metrics, hooks) as validated data (pydantic).
- `conditions`: the queries a metric may name and the safe evaluator of its conditions.
- `phases`: the rollout's and the analysis's phases (`Phase`, `AnalysisPhase`).
- `analysis`: measurements of canary against stable, and Argo's Successful/Failed/Inconclusive.
- `controller`: moves the gateway's weights, analyses, promotes or rolls back; survives restarts.
- `state`, `hooks`, `traffic`, `report`: persisted state and audit, Flagger-style hooks,
  background traffic, and the figures of a rollout.
- `local`: a release rehearsed on one machine (engines, gateway, a registry to rehearse in).

Explained in: book/chapters/04_delivery/canary_release
"""

from llmops_lib.release.controller import Controller, rollback_to
from llmops_lib.release.hooks import Hook
from llmops_lib.release.phases import AnalysisPhase, Phase
from llmops_lib.release.registry import ModelRecord, Registry
from llmops_lib.release.rollout import (
    HookSpec,
    MetricSpec,
    Pause,
    RolloutSpec,
    SetWeight,
    load_rollout,
    standard_canary,
    steps_from_text,
)
from llmops_lib.release.state import RolloutStore

__all__ = [
    "AnalysisPhase",
    "Controller",
    "Hook",
    "HookSpec",
    "MetricSpec",
    "ModelRecord",
    "Pause",
    "Phase",
    "Registry",
    "RolloutSpec",
    "RolloutStore",
    "SetWeight",
    "load_rollout",
    "rollback_to",
    "standard_canary",
    "steps_from_text",
]
