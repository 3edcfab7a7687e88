"""`llmops rollout …` and `llmops registry …`: the release controller and the model registry for operators.

Exit codes follow the runbooks' (`llmops_lib.runbooks.ExitCode`): 0 promoted (or done) · 2 bad
spec or arguments, nothing moved · 3 rolled back (the analysis, a hook or an operator stopped
the canary) · 4 could not finish (gateway or registry unreachable; run `rollout resume`).
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llmops_lib.errors import LLMOpsError, SpecError, fail
from llmops_lib.runbooks import ExitCode

rollout_app = typer.Typer(
    help="Canary releases behind the gateway: run, watch, promote, abort, undo.", no_args_is_help=True
)
registry_app = typer.Typer(
    help="The model registry (MLflow): register verified versions, move aliases.", no_args_is_help=True
)

WhyOption = Annotated[str, typer.Option("--why", help="Why (kept in the audit trail).")]


def _end(state) -> None:  # noqa: ANN001 - RolloutState
    from llmops_lib.release.phases import Phase

    typer.echo(f"{state.name}: {state.phase} — {state.message}")
    if state.phase == Phase.ROLLED_BACK:
        raise typer.Exit(int(ExitCode.GATE_FAILED))
    if state.phase != Phase.PROMOTED:
        raise typer.Exit(int(ExitCode.INFRASTRUCTURE))


@rollout_app.command("run")
def rollout_run(
    spec: Annotated[Path, typer.Argument(help="Rollout spec (YAML, see deploy/rollouts/).")],
    gateway: Annotated[
        str, typer.Option(help="Gateway base URL (admin key from LLMOPS_GATEWAY_ADMIN_KEY).")
    ] = "http://127.0.0.1:8000",
    request_log: Annotated[
        str | None,
        typer.Option(help="The gateway's request log (path or sqlite:///). Default: LLMOPS_HOME/requests.sqlite."),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between reconciliations.")] = 1.0,
) -> None:
    """Check the spec against the registry and the gateway, then drive the rollout to promotion or rollback."""
    from llmops_lib.release.controller import Controller
    from llmops_lib.release.rollout import load_rollout

    try:
        controller = Controller.create(load_rollout(spec), gateway_url=gateway, request_log=request_log)
        state = controller.run(poll_s=poll)
    except LLMOpsError as exc:
        raise fail(exc) from None
    _end(state)


@rollout_app.command("resume")
def rollout_resume(
    name: str, poll: Annotated[float, typer.Option(help="Seconds between reconciliations.")] = 1.0
) -> None:
    """Start the controller of a rollout whose controller died: it resumes (or aborts, per onRestart)."""
    from llmops_lib.release.controller import Controller

    try:
        state = Controller(name).run(poll_s=poll)
    except LLMOpsError as exc:
        raise fail(exc) from None
    _end(state)


@rollout_app.command("status")
def rollout_status(
    name: Annotated[str | None, typer.Argument(help="Rollout name. Default: list every rollout.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
    events: Annotated[int, typer.Option(help="How many recent audit events to show.")] = 8,
) -> None:
    """Phase, step, canary weight, analysis counts and the latest audit events."""
    from dataclasses import asdict

    from llmops_lib.release.state import RolloutStore, list_rollouts, rollouts_dir

    if name is None:
        if not list_rollouts():
            typer.echo(f"no rollouts under {rollouts_dir()}: start one with `llmops rollout run`")
        failed = None
        for known in list_rollouts():
            try:
                state = RolloutStore(known).load()
            except LLMOpsError as exc:  # printed now; one corrupt state file must not hide the other rollouts
                failed = fail(exc)
                continue
            typer.echo(
                f"{known}: {state.phase} (v{state.candidate_version} over v{state.stable_version}, "
                f"canary {state.canary_weight} %)"
            )
        if failed is not None:
            raise failed
        return
    try:
        store = RolloutStore(name)
        state = store.load()
    except LLMOpsError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(state), indent=2))
        return
    steps = len(state.spec["steps"])
    typer.echo(
        f"{name}: {state.phase} · step {min(state.step_index + 1, steps)}/{steps} · "
        f"canary v{state.candidate_version} at {state.canary_weight} % · stable v{state.stable_version}"
    )
    typer.echo(f"  {state.message}")
    for metric, counts in state.metrics.items():
        typer.echo(f"  {metric}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "last_at"))
    for event in store.audit()[-events:]:
        detail = {k: v for k, v in event.items() if k not in ("at", "rollout", "type", "spec")}
        typer.echo(f"  {event['type']}: {json.dumps(detail, default=str)[:160]}")


def _operate(name: str, action: str, **kwargs: object):  # noqa: ANN202 - RolloutState, imported lazily
    """An operator's action on rollout `name` (promote, abort, undo); a library error exits with one line."""
    from llmops_lib.release.controller import Controller

    try:
        return getattr(Controller(name), action)(**kwargs)
    except LLMOpsError as exc:
        raise fail(exc) from None


@rollout_app.command("promote")
def rollout_promote(
    name: str,
    full: Annotated[bool, typer.Option(help="Promote now, skipping remaining steps and analysis.")] = False,
    why: WhyOption = "promoted by an operator",
) -> None:
    """Go on from a pause (or, with --full, promote at once)."""
    state = _operate(name, "promote", full=full, why=why)
    typer.echo(f"{name}: {state.phase} — {state.message}")


@rollout_app.command("abort")
def rollout_abort(name: str, why: WhyOption = "aborted by an operator") -> None:
    """Roll back now: stable 100 %, canary out of the route, aliases restored."""
    state = _operate(name, "abort", why=why)
    typer.echo(f"{name}: {state.phase} — {state.message}")


@rollout_app.command("undo")
def rollout_undo(name: str, why: WhyOption = "undone by an operator") -> None:
    """After a promotion: the previous stable serves 100 % again and gets the stable alias back."""
    state = _operate(name, "undo", why=why)
    typer.echo(f"{name}: {state.phase} — {state.reason}")


@registry_app.command("register")
def registry_register(
    name: str,
    artifact: Annotated[Path, typer.Argument(help="GGUF file or Hugging Face folder.")],
    sha256: Annotated[str | None, typer.Option(help="Refuse the artifact unless its sha256 is this.")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="name=value evaluation result; repeat for several.")] = None,
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
) -> None:
    """Verify (checksum, real llama.cpp load) and register the next version of a model."""
    from llmops_lib.release.registry import Registry
    from llmops_lib.runbooks import parse_assignments

    try:
        metrics = {k: float(v) for k, v in parse_assignments(metric or []).items()}
        record = Registry().register(name, artifact, expected_sha256=sha256, metrics=metrics, description=description)
    except (LLMOpsError, ValueError) as exc:
        raise fail(
            exc if isinstance(exc, LLMOpsError) else SpecError(f"a metric value is not a number: {exc}")
        ) from None
    typer.echo(f"{record.name} v{record.version}: {record.path} (sha256 {record.sha256[:16]}…)")


@registry_app.command("list")
def registry_list(name: str) -> None:
    """Every version of a model with its aliases, checksum and metrics (exit 2 if no version is registered)."""
    from llmops_lib.release.registry import Registry

    registry = Registry()
    records = registry.versions(name)
    if not records:
        raise fail(
            SpecError(f"no model {name!r} in the registry at {registry.uri}: `llmops registry register` it first")
        )
    for record in records:
        aliases = f" [{', '.join(record.aliases)}]" if record.aliases else ""
        typer.echo(
            f"v{record.version}{aliases}: {Path(record.path).name} sha256 {record.sha256[:12]}… {record.metrics or ''}"
        )


@registry_app.command("alias")
def registry_alias(name: str, alias: str, version: str, why: WhyOption = "") -> None:
    """Point an alias (e.g. stable) at a version; --why is required and kept with who and when."""
    from llmops_lib.release.registry import Registry

    try:
        event = Registry().set_alias(name, alias, version, why=why)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(f"{alias} → v{version}" + ("" if event else " (already)"))


@registry_app.command("history")
def registry_history(name: str) -> None:
    """Every alias move of a model: who, when, why, from and to which version."""
    from llmops_lib.release.registry import Registry

    try:
        events = Registry().history(name)
    except LLMOpsError as exc:
        raise fail(exc) from None
    for e in events:
        typer.echo(f"{e.when} {e.who}: {e.alias} v{e.from_version or '-'} → v{e.to_version or '-'} ({e.why})")
