"""Release engineering: a model registry, canary rollouts judged by analysis, promotion and rollback.

- `registry`: MLflow's model registry, with verified registration and audited alias moves.
- `rollout`: the rollout spec (steps, analysis metrics, hooks) as validated data.
- `analysis`: measurements of canary against stable, and Argo's Successful/Failed/Inconclusive.
- `controller`: moves the gateway's weights, analyses, promotes or rolls back; survives restarts.
- `state`, `hooks`, `traffic`, `report`: persisted state and audit, Flagger-style hooks,
  background traffic, and the figures of a rollout.

Explained in: book/chapters/04_delivery/canary_release
"""

from llmops_lib.release.controller import Controller, rollback_to
from llmops_lib.release.hooks import Hook
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
    "Controller",
    "Hook",
    "HookSpec",
    "MetricSpec",
    "ModelRecord",
    "Pause",
    "Registry",
    "RolloutSpec",
    "RolloutStore",
    "SetWeight",
    "load_rollout",
    "rollback_to",
    "standard_canary",
    "steps_from_text",
]
