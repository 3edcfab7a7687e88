"""What a rollout did, from its audit trail: the canary's weight and each metric over time, the decision.

Pure functions of the audit events (`RolloutStore.audit()`), so the book, the runbook's output
notebook and an operator's post-mortem draw the same figure from the same record.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmops_lib.release.phases import AnalysisPhase, Phase

PHASE_COLORS = {
    AnalysisPhase.SUCCESSFUL: "#2ca02c",
    AnalysisPhase.FAILED: "#d62728",
    AnalysisPhase.INCONCLUSIVE: "#ff7f0e",
    AnalysisPhase.ERROR: "#7f7f7f",
}
#: audit events drawn as vertical lines: the rollout entering a phase, and what operators and restarts did.
DECISIONS = (Phase.PAUSED, Phase.PROMOTED, Phase.ROLLED_BACK, "ControllerRestarted", "OperatorPromote", "OperatorAbort")


def _start(events: Sequence[Mapping[str, Any]]) -> float:
    return next((e["at"] for e in events if e["type"] == "RolloutStarted"), events[0]["at"] if events else 0.0)


def weight_series(events: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[int]]:
    """(seconds since the start, canary weight) at every weight move, starting at 0 %."""
    t0 = _start(events)
    times, weights = [0.0], [0]
    for event in events:
        if event["type"] == "WeightSet":
            times.append(event["at"] - t0)
            weights.append(event["canary_weight"])
    if events:
        times.append(events[-1]["at"] - t0)
        weights.append(weights[-1])
    return times, weights


def measurements(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per measurement: when (s since start), metric, phase, canary value, stable baseline, samples."""
    t0 = _start(events)
    return [
        {
            "t_s": round(e["finished_at"] - t0, 1),
            "metric": e["metric"],
            "phase": e["phase"],
            "canary": e.get("value"),
            "stable": e.get("baseline"),
            "samples": e.get("samples"),
            "canary_weight": e.get("canary_weight"),
            "note": e.get("message", ""),
        }
        for e in events
        if e["type"] == "Measurement"
    ]


def decision(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rollout's ending: phase, reason, and seconds from start (empty while it runs)."""
    t0 = _start(events)
    for event in reversed(events):
        if event["type"] in (Phase.PROMOTED, Phase.ROLLED_BACK):
            return {"phase": event["type"], "reason": event.get("reason", ""), "t_s": round(event["at"] - t0, 1)}
    return {}


def timeline(events: Sequence[Mapping[str, Any]], title: str = "Canary release") -> go.Figure:
    """Canary weight (top) and every metric's canary and stable values (below) against time."""
    rows = measurements(events)
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    fig = make_subplots(
        rows=1 + len(metrics),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=["canary weight (%)", *metrics],
    )
    times, weights = weight_series(events)
    fig.add_scatter(x=times, y=weights, mode="lines", line_shape="hv", name="canary weight", row=1, col=1)
    t0 = _start(events)
    for event in events:
        if event["type"] in DECISIONS:
            fig.add_vline(x=event["at"] - t0, line_dash="dot", line_color="#888")
            fig.add_annotation(x=event["at"] - t0, y=100, text=event["type"], showarrow=False, yshift=10, row=1, col=1)
    for i, metric in enumerate(metrics, start=2):
        mine = [r for r in rows if r["metric"] == metric]
        fig.add_scatter(
            x=[r["t_s"] for r in mine],
            y=[r["canary"] for r in mine],
            mode="lines+markers",
            name=f"{metric}: canary",
            marker={"color": [PHASE_COLORS.get(r["phase"], "#000") for r in mine], "size": 10},
            row=i,
            col=1,
        )
        if any(r["stable"] is not None for r in mine):
            fig.add_scatter(
                x=[r["t_s"] for r in mine],
                y=[r["stable"] for r in mine],
                mode="lines+markers",
                name=f"{metric}: stable",
                line={"dash": "dash"},
                row=i,
                col=1,
            )
    fig.update_xaxes(title_text="seconds since the rollout started", row=1 + len(metrics), col=1)
    fig.update_layout(title=title, height=260 + 220 * len(metrics), legend={"orientation": "h", "y": -0.15})
    return fig
