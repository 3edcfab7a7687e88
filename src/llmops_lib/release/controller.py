"""The release controller: move gateway weights step by step, analyse, then promote or roll back.

One `reconcile()` looks at the persisted state and does the next thing: take the measurements
that are due, abort on a Failed analysis, pause on an Inconclusive one, run the current step
(`setWeight` moves the gateway's weights, `pause` waits), and after the last step promote. Every
change is written to the state file and every measurement and decision to the audit trail before
the next one, so `run()` can be killed at any moment: started again it takes the controller lock,
re-applies the weight of the step it was in and resumes (or, with `onRestart: abort`, rolls back).

- **Promote**: canary 100 %, stable 0 % (kept in the route, so `undo` can shift back); registry
  aliases `previous` → the old stable, `stable` → the candidate; `canary` removed.
- **Roll back**: stable 100 %, the canary deployment removed from the route (it gets no traffic,
  whatever happens to its engine; `post-rollout` hooks stop it), `canary` alias removed, `stable`
  restored if anyone moved it.

Operators act through the same object (`promote`, `abort`, `undo`), under the same lock, from
another process (the CLI) while a controller runs.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmops_lib import audit
from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.release import analysis
from llmops_lib.release.conditions import check_query
from llmops_lib.release.hooks import Hook, call_all
from llmops_lib.release.phases import AnalysisPhase, Phase
from llmops_lib.release.registry import Registry
from llmops_lib.release.rollout import Pause, RolloutSpec, SetWeight
from llmops_lib.release.state import RolloutState, RolloutStore

#: The trail's events that are decisions, also put into the tamper-evident audit log (`rollout.decision`):
#: the controller's promotion or rollback, an operator's promote, abort or undo, and how the rollout ended.
DECISIONS = frozenset(
    {"PromotionStarted", "RollbackStarted", "OperatorPromote", "OperatorAbort", "OperatorUndo"}
    | {Phase.PROMOTED, Phase.ROLLED_BACK}
)

ADMIN_KEY_ENV = "LLMOPS_GATEWAY_ADMIN_KEY"
#: reconciliations failing in a row (gateway or registry unreachable) before the controller gives up; a new one resumes
MAX_FAILED_RECONCILES = 20


def _admin(url: str, admin_key: str | None):  # noqa: ANN202 - GatewayAdmin, imported lazily (FastAPI-free client)
    from llmops_lib.gateway.admin import GatewayAdmin

    return GatewayAdmin(url, admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV))


def _route(admin: Any, model: str) -> dict:
    for route in admin.routes():
        if route["model"] == model:
            return route
    raise SpecError(f"the gateway has no route for model {model!r}: add it to the gateway configuration first")


class Controller:
    """Drives one rollout (by name) to its end. Build a new one with `Controller.create(spec, ...)`."""

    def __init__(
        self,
        name: str,
        *,
        admin_key: str | None = None,
        hooks: Sequence[Hook] = (),
        evaluations: Mapping[str, Callable[[analysis.Target], float]] | None = None,
        store_root: Path | None = None,
        who: str | None = None,
    ) -> None:
        self.store = RolloutStore(name, store_root)
        state = self.store.load()
        self.spec = RolloutSpec.from_dict(state.spec)
        self.admin = _admin(state.gateway_url, admin_key)
        self.registry = Registry(state.registry_uri or None)
        self.hooks = [*(Hook.of(h) for h in self.spec.hooks), *hooks]
        self.evaluations = {**analysis.EVALUATIONS, **(evaluations or {})}
        self.who = who
        self._providers: dict[str, Any] = {}
        self._targets: tuple[analysis.Target, analysis.Target] | None = None

    # --- starting ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        spec: RolloutSpec,
        *,
        gateway_url: str,
        request_log: str | None = None,
        registry: Registry | None = None,
        admin_key: str | None = None,
        hooks: Sequence[Hook] = (),
        evaluations: Mapping[str, Callable[[analysis.Target], float]] | None = None,
        store_root: Path | None = None,
        who: str | None = None,
    ) -> Controller:
        """Check everything, then record the rollout (Pending). No weight moves here.

        Raises:
            SpecError: an unknown evaluation, a candidate or stable version the registry lacks,
                a route or deployment the gateway lacks, or a rollout of that name still running.
        """
        registry = registry or Registry()
        for metric in spec.metrics:
            if metric.provider == "evaluation":
                known = [*analysis.EVALUATIONS, *(evaluations or {})]
                check_query("evaluation", metric.query, f"metric {metric.name!r}", known)
        candidate = registry.get(spec.model, spec.candidate).verify()
        stable = registry.get(spec.model, "stable")
        if candidate.version == stable.version:
            raise SpecError(f"candidate v{candidate.version} of {spec.model!r} is already stable: nothing to roll out")
        admin = _admin(gateway_url, admin_key)
        names = [d["name"] for d in _route(admin, spec.model)["deployments"]]
        if spec.stable_deployment not in names:
            raise SpecError(
                f"the gateway route {spec.model!r} has no stable deployment {spec.stable_deployment!r} (it has {names})"
            )
        if spec.canary_deployment not in names and not spec.canary_url:
            raise SpecError(
                f"the gateway route {spec.model!r} has no canary deployment {spec.canary_deployment!r}: "
                "add it or give the canary's url in the spec"
            )
        store = RolloutStore(spec.name, store_root)
        with store.locked():
            store.archive()  # refuses while a rollout of this name is unfinished
            if spec.canary_deployment not in names:
                admin.add_deployment(spec.model, spec.canary_deployment, spec.canary_url, 0)
            state = RolloutState(
                name=spec.name,
                spec=spec.to_dict(),
                phase=Phase.PENDING,
                candidate_version=candidate.version,
                stable_version=stable.version,
                started_at=time.time(),
                gateway_url=gateway_url,
                request_log=request_log,
                registry_uri=registry.uri,
            )
            store.save(state)
            store.append(
                {
                    "type": "RolloutStarted",
                    "candidate": candidate.version,
                    "stable": stable.version,
                    "candidate_sha256": candidate.sha256,
                    "spec": state.spec,
                }
            )
        controller = cls(
            spec.name, admin_key=admin_key, hooks=hooks, evaluations=evaluations, store_root=store_root, who=who
        )
        controller.registry = registry
        controller._move_alias("canary", candidate.version, f"rollout {spec.name} started")
        return controller

    # --- the loop ----------------------------------------------------------------------------

    def run(
        self,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        stop_when: Callable[[RolloutState], bool] | None = None,
    ) -> RolloutState:
        """Reconcile until the rollout is promoted or rolled back, `stop_when(state)` holds, or
        `timeout_s` passes (a rollout left running can be resumed by the next `run`)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        failures = 0
        with self.store.controller_lock():
            self._take_over()
            while True:
                try:
                    state = self.reconcile()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - e.g. the gateway restarting: recorded, retried next tick
                    failures += 1
                    self.store.append(
                        {"type": "ReconcileFailed", "error": f"{type(exc).__name__}: {exc}"[:500], "in_a_row": failures}
                    )
                    if failures >= MAX_FAILED_RECONCILES:
                        raise
                    time.sleep(poll_s)
                    continue
                if (
                    state.done
                    or (stop_when and stop_when(state))
                    or (deadline is not None and time.monotonic() > deadline)
                ):
                    self._hand_over()
                    return state
                time.sleep(poll_s)

    def _hand_over(self) -> None:
        """Leave on purpose: the next controller continues as if this one had never run (no restart)."""
        with self.store.locked():
            state = self.store.load()
            state.controller = {}
            self.store.save(state)

    def _take_over(self) -> None:
        """Become this rollout's controller; if another one ran it before (and died), resume or abort."""
        with self.store.locked():
            state = self.store.load()
            previous = state.controller
            state.controller = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.time(),
                "heartbeat": time.time(),
            }
            if state.done or not previous:
                self.store.save(state)
                return
            gap = time.time() - previous.get("heartbeat", time.time())
            if self.spec.on_restart == "abort":
                self._audit(
                    state, "ControllerRestarted", action="abort", previous_pid=previous.get("pid"), gap_s=round(gap, 3)
                )
                self._begin_rollback(state, "controller restarted and the spec says onRestart: abort")
            else:
                self._audit(
                    state,
                    "ControllerRestarted",
                    action="resume",
                    previous_pid=previous.get("pid"),
                    gap_s=round(gap, 3),
                    step_index=state.step_index,
                    canary_weight=state.canary_weight,
                )
                if state.phase in (Phase.PROGRESSING, Phase.PAUSED) and state.step_index >= 0:
                    try:  # the dead controller may have moved the weight without saving that it had
                        self._set_weight(state, self.spec.weight_after(state.step_index))
                    except LLMOpsError as exc:
                        self._begin_rollback(state, f"could not restore the canary weight after a restart: {exc}")
            self.store.save(state)

    def reconcile(self) -> RolloutState:
        """Do the next thing this rollout needs, once (see the module docstring)."""
        with self.store.locked():
            state = self.store.load()
            if state.done:
                return state
            state.controller["heartbeat"] = time.time()
            if state.phase == Phase.PROMOTING:
                self._complete_promotion(state)
            elif state.phase == Phase.ROLLING_BACK:
                self._complete_rollback(state)
            elif state.phase == Phase.PENDING:
                self._confirm_start(state)
            else:
                self._progress(state)
            self.store.save(state)
            return state

    def _confirm_start(self, state: RolloutState) -> None:
        answers = call_all(self.hooks, "confirm-rollout", self._payload(state))
        if answers:
            self._audit(state, "HooksCalled", answers=answers)
        if not all(a["yes"] for a in answers):
            state.message = "waiting for confirm-rollout hooks"
            return
        state.phase = Phase.PROGRESSING
        state.analysis_started_at = time.time()
        self._enter(state, 0)

    def _progress(self, state: RolloutState) -> None:
        answers = call_all(self.hooks, "rollback", self._payload(state))
        if any(a["yes"] for a in answers):
            self._audit(state, "HooksCalled", answers=answers)
            self._begin_rollback(state, "a rollback hook asked for it")
            return
        phase, why = self._analyze(state)
        if phase == AnalysisPhase.FAILED:
            self._begin_rollback(state, f"analysis failed: {why}")
            return
        if phase == AnalysisPhase.INCONCLUSIVE and state.phase != Phase.PAUSED:
            self._pause(state, "inconclusive", f"analysis inconclusive: {why}; promote to go on or abort")
        if state.phase == Phase.PAUSED:
            return
        steps = self.spec.steps
        while state.step_index < len(steps):
            step = steps[state.step_index]
            if isinstance(step, Pause):
                if step.duration_s is None:
                    self._pause(state, "step", f"paused at step {state.step_index}: promote to go on")
                    return
                if time.time() - state.step_started_at < step.duration_s:
                    state.message = (
                        f"step {state.step_index}: pause {step.duration_s:g} s at canary weight {state.canary_weight}"
                    )
                    return
            self._enter(state, state.step_index + 1)
        if phase != AnalysisPhase.SUCCESSFUL:
            state.message = f"all steps done; {why}"
            return
        answers = call_all(self.hooks, "confirm-promotion", self._payload(state))
        if answers:
            self._audit(state, "HooksCalled", answers=answers)
        if not all(a["yes"] for a in answers):
            state.message = "waiting for confirm-promotion hooks"
            return
        self._begin_promotion(state, "all steps done and the analysis is successful")

    def _enter(self, state: RolloutState, index: int) -> None:
        state.step_index, state.step_started_at = index, time.time()
        if index >= len(self.spec.steps):
            return
        step = self.spec.steps[index]
        self._audit(state, "StepStarted", step_index=index, step=step.model_dump(), step_kind=type(step).__name__)
        if isinstance(step, SetWeight):
            self._set_weight(state, step.weight)
        self.store.save(state)

    def _pause(self, state: RolloutState, reason: str, message: str) -> None:
        state.phase, state.pause_reason, state.message = Phase.PAUSED, reason, message
        self._audit(state, Phase.PAUSED, reason=reason, message=message)

    # --- analysis ----------------------------------------------------------------------------

    def _provider(self, name: str, state: RolloutState) -> Any:
        if name not in self._providers:
            self._providers[name] = {
                "request_log": lambda: analysis.RequestLogProvider(state.request_log),
                "prometheus": lambda: analysis.PrometheusProvider(state.gateway_url),
                "evaluation": lambda: analysis.EvaluationProvider(self.evaluations),
            }[name]()
        return self._providers[name]

    def targets(self, state: RolloutState) -> tuple[analysis.Target, analysis.Target]:
        """(canary, stable): deployment, URL and registered version of each side."""
        if self._targets is None:
            urls = {d["name"]: d["url"] for d in _route(self.admin, self.spec.model)["deployments"]}
            self._targets = (
                analysis.Target(
                    self.spec.canary_deployment,
                    urls.get(self.spec.canary_deployment),
                    self.registry.get(self.spec.model, state.candidate_version),
                ),
                analysis.Target(
                    self.spec.stable_deployment,
                    urls.get(self.spec.stable_deployment),
                    self.registry.get(self.spec.model, state.stable_version),
                ),
            )
        return self._targets

    def _analyze(self, state: RolloutState) -> tuple[AnalysisPhase, str]:
        """Take every measurement that is due; the analysis outcome so far."""
        if state.analysis_started_at is None:
            return AnalysisPhase.RUNNING, "analysis not started"
        statuses = {m.name: analysis.MetricStatus(**state.metrics.get(m.name, {})) for m in self.spec.metrics}
        for metric in self.spec.metrics:
            status = statuses[metric.name]
            if metric.count is not None and status.measured - status.errors >= metric.count:
                continue
            since = status.last_at or state.analysis_started_at
            now = time.time()
            if now - since < metric.interval_s:
                continue
            provider = self._provider(metric.provider, state)
            if isinstance(provider, analysis.PrometheusProvider) and not provider.started:  # open its first window now
                provider.start()
                status.last_at = now
                continue
            canary, stable = self.targets(state)
            measurement = analysis.measure(metric, provider, canary, stable, since, now)
            if measurement is None:
                status.last_at = now
                self._audit(
                    state,
                    "MeasurementSkipped",
                    metric=metric.name,
                    since=since,
                    until=now,
                    reason="missing data (onMissing: skip)",
                )
                continue
            status.add(measurement)
            self._audit(state, "Measurement", canary_weight=state.canary_weight, **measurement.as_dict())
        state.metrics = {name: asdict(s) for name, s in statuses.items()}
        phase, why = analysis.outcome(self.spec.metrics, statuses)
        if phase in (AnalysisPhase.FAILED, AnalysisPhase.INCONCLUSIVE) and state.phase != Phase.PAUSED:
            self._audit(state, "AnalysisOutcome", phase=phase, reason=why)
        return phase, why

    # --- gateway and registry ----------------------------------------------------------------

    def _set_weight(self, state: RolloutState, canary_weight: int) -> None:
        names = [d["name"] for d in _route(self.admin, self.spec.model)["deployments"]]
        weights = {name: 0 for name in names} | {self.spec.stable_deployment: 100 - canary_weight}
        if self.spec.canary_deployment in names:
            weights[self.spec.canary_deployment] = canary_weight
        elif canary_weight:  # gone from the route (someone removed it): nothing can be sent there
            raise SpecError(
                f"the canary deployment {self.spec.canary_deployment!r} is no longer in the gateway route "
                f"{self.spec.model!r}: add it back or abort the rollout"
            )
        self.admin.set_weights(self.spec.model, weights)
        state.canary_weight = canary_weight
        self._audit(state, "WeightSet", canary_weight=canary_weight, stable_weight=100 - canary_weight)

    def _move_alias(self, alias: str, version: str | None, why: str) -> None:
        if version is None:
            event = self.registry.remove_alias(self.spec.model, alias, why=why, who=self.who)
        else:
            event = self.registry.set_alias(self.spec.model, alias, version, why=why, who=self.who)
        if event is not None:
            self.store.append({"type": "AliasMoved", **asdict(event)})

    # --- endings -----------------------------------------------------------------------------

    def _begin_promotion(self, state: RolloutState, reason: str) -> None:
        state.phase, state.reason = Phase.PROMOTING, reason
        self._audit(state, "PromotionStarted", reason=reason)
        self.store.save(state)  # from here a restarted controller finishes the promotion
        self._complete_promotion(state)

    def _complete_promotion(self, state: RolloutState) -> None:
        """Idempotent: a controller that died half-way through runs it again."""
        self._set_weight(state, 100)
        self._move_alias(
            "previous", state.stable_version, f"rollout {self.spec.name}: v{state.candidate_version} promoted"
        )
        self._move_alias("stable", state.candidate_version, f"rollout {self.spec.name} promoted: {state.reason}")
        self._move_alias("canary", None, f"rollout {self.spec.name} promoted")
        self._finish(state, Phase.PROMOTED)

    def _begin_rollback(self, state: RolloutState, reason: str) -> None:
        state.phase, state.reason = Phase.ROLLING_BACK, reason
        self._audit(state, "RollbackStarted", reason=reason)
        self.store.save(state)
        self._complete_rollback(state)

    def _complete_rollback(self, state: RolloutState) -> None:
        """Idempotent: stable 100 %, canary out of the route, aliases as before the rollout."""
        self._set_weight(state, 0)
        try:
            self.admin.remove_deployment(self.spec.model, self.spec.canary_deployment)
            self._audit(state, "DeploymentRemoved", deployment=self.spec.canary_deployment)
        except SpecError:
            pass  # already removed by a controller that died after doing it
        self._move_alias("canary", None, f"rollout {self.spec.name} rolled back: {state.reason}")
        self._move_alias("stable", state.stable_version, f"rollout {self.spec.name} rolled back: stable restored")
        self._finish(state, Phase.ROLLED_BACK)

    def _finish(self, state: RolloutState, phase: Phase) -> None:
        state.phase, state.finished_at, state.pause_reason = phase, time.time(), None
        state.message = f"{phase}: {state.reason}"
        self._audit(state, phase, reason=state.reason, candidate=state.candidate_version, stable=state.stable_version)
        answers = call_all(self.hooks, "post-rollout", self._payload(state))
        if answers:
            self._audit(state, "HooksCalled", answers=answers)

    # --- operators -----------------------------------------------------------------------------

    def promote(self, *, full: bool = False, why: str = "promoted by an operator") -> RolloutState:
        """Go on from a pause (Argo's promote); `full` promotes now, skipping remaining steps and analysis."""
        with self.store.locked():
            state = self.store.load()
            if state.done:
                raise SpecError(f"rollout {state.name!r} is already {state.phase}")
            self._audit(state, "OperatorPromote", full=full, why=why, who=self.who)
            if full:
                self._begin_promotion(state, f"full promotion by an operator: {why}")
            elif state.phase == Phase.PAUSED:
                if state.pause_reason == "inconclusive":  # the human looked at it: start counting afresh
                    for status in state.metrics.values():
                        status["inconclusive"] = 0
                state.phase, resumed_step = Phase.PROGRESSING, state.pause_reason == "step"
                state.pause_reason, state.message = None, "resumed by an operator"
                if resumed_step:
                    self._enter(state, state.step_index + 1)
            else:
                raise SpecError(f"rollout {state.name!r} is {state.phase}, not paused: use --full to promote at once")
            self.store.save(state)
            return state

    def abort(self, *, why: str = "aborted by an operator") -> RolloutState:
        """Roll back now (stable 100 %, canary out, aliases restored)."""
        with self.store.locked():
            state = self.store.load()
            if state.done:
                raise SpecError(
                    f"rollout {state.name!r} is already {state.phase}: use undo to go back after a promotion"
                )
            self._audit(state, "OperatorAbort", why=why, who=self.who)
            self._begin_rollback(state, f"aborted: {why}")
            self.store.save(state)
            return state

    def undo(self, *, why: str = "undone by an operator") -> RolloutState:
        """After a promotion, go back: the old stable gets 100 % again and the `stable` alias back."""
        with self.store.locked():
            state = self.store.load()
            if state.phase != Phase.PROMOTED:
                raise SpecError(
                    f"rollout {state.name!r} is {state.phase}; "
                    "undo goes back from a promotion (use abort while it runs)"
                )
            self._audit(state, "OperatorUndo", why=why, who=self.who)
            rollback_to(
                self.registry,
                self.admin,
                self.spec.model,
                state.stable_version,
                self.spec.stable_deployment,
                why=f"undo of {state.name}: {why}",
                who=self.who,
            )
            state.phase, state.reason, state.canary_weight = Phase.ROLLED_BACK, f"undone: {why}", 0
            self._audit(
                state,
                Phase.ROLLED_BACK,
                reason=state.reason,
                candidate=state.candidate_version,
                stable=state.stable_version,
            )
            self.store.save(state)
            return state

    # --- reading -------------------------------------------------------------------------------

    def state(self) -> RolloutState:
        return self.store.load()

    def audit(self) -> list[dict[str, Any]]:
        return self.store.audit()

    def _payload(self, state: RolloutState) -> dict[str, Any]:
        """What hooks receive (Flagger sends name, namespace, phase and metadata)."""
        return {
            "name": state.name,
            "model": self.spec.model,
            "phase": state.phase,
            "candidate": state.candidate_version,
            "stable": state.stable_version,
            "canary_weight": state.canary_weight,
            "step_index": state.step_index,
            "reason": state.reason,
        }

    def _audit(self, state: RolloutState, event_type: str, **data: Any) -> None:
        event = self.store.append({"type": event_type, "phase": state.phase, **data})
        if event_type in DECISIONS:
            audit.record("rollout.decision", rollout=state.name, model=self.spec.model, decision=event_type, **data)
        for hook in (h for h in self.hooks if h.kind == "event"):
            yes, detail = hook(event)
            if not yes:
                self.store.append({"type": "HookFailed", "hook": "event", "target": hook.label, "detail": detail})


def rollback_to(
    registry: Registry,
    admin: Any,
    model: str,
    version: str,
    deployment: str,
    *,
    why: str,
    url: str | None = None,
    who: str | None = None,
) -> None:
    """Serve `version` of `model` from `deployment` again: 100 % of the route to it, `stable` → it,
    `previous` → the version that was stable until now.

    The deployment must be in the gateway route, or `url` given to add it (the engine serving
    that version must be running). The registry is checked before the gateway changes.
    """
    record = registry.get(model, version).verify()
    names = [d["name"] for d in _route(admin, model)["deployments"]]
    if deployment not in names:
        if not url:
            raise SpecError(
                f"the gateway route {model!r} has no deployment {deployment!r} (it has {names}): give its url to add it"
            )
        admin.add_deployment(model, deployment, url, 0)
        names.append(deployment)
    admin.set_weights(model, {name: 100 if name == deployment else 0 for name in names})
    before = registry.aliases(model).get("stable")
    registry.set_alias(model, "stable", record.version, why=why, who=who)
    if before is not None and before != record.version:  # `previous` names what was just taken out of service
        registry.set_alias(model, "previous", before, why=f"rolled back from v{before}: {why}", who=who)
