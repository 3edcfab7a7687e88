"""A release environment on one machine: an engine per registered version, and a gateway in front.

The book, the runbooks and the tests rehearse a release the way production runs one: each
version is served from *its registered* engine spec (artifact verified by sha256 first), and the
gateway routes the model's traffic between them by weight, logging every request.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from llmops_lib.engines.llamacpp import LlamaServer
from llmops_lib.release.registry import ModelRecord, Registry
from llmops_lib.release.rollout import RolloutSpec

if TYPE_CHECKING:
    from llmops_lib.release.controller import Controller


class LocalRelease:
    """`with LocalRelease(stable, candidate, request_log=...) as env:` two llama-servers and a gateway.

    The route `model` has deployments `stable` (weight 100) and `canary` (weight 0);
    `env.stop_canary` is a `post-rollout` hook that stops the canary's engine.
    """

    def __init__(
        self,
        stable: ModelRecord,
        candidate: ModelRecord,
        *,
        request_log: str | Path,
        admin_key: str = "release-admin",
        threads: int = 1,
        stable_deployment: str = "stable",
        canary_deployment: str = "canary",
    ) -> None:
        self.stable, self.candidate = stable.verify(), candidate.verify()
        self.model, self.request_log, self.admin_key, self.threads = stable.name, str(request_log), admin_key, threads
        self.stable_deployment, self.canary_deployment = stable_deployment, canary_deployment
        self.engines: dict[str, LlamaServer] = {}
        self.gateway: Any = None
        self._stack = ExitStack()

    def start(self) -> Self:
        from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route

        try:
            for deployment, record in ((self.stable_deployment, self.stable), (self.canary_deployment, self.candidate)):
                self.engines[deployment] = self._stack.enter_context(LlamaServer(record.spec(threads=self.threads)))
            route = Route(
                model=self.model,
                deployments=[
                    Deployment(
                        name=self.stable_deployment, url=self.engines[self.stable_deployment].base_url, weight=100
                    ),
                    Deployment(
                        name=self.canary_deployment, url=self.engines[self.canary_deployment].base_url, weight=0
                    ),
                ],
            )
            config = GatewayConfig(
                routes=[route], admin_keys=[self.admin_key], request_log=self.request_log, cache_size=0
            )
            self.gateway = self._stack.enter_context(GatewayServer(config))
        except BaseException:
            self._stack.close()
            raise
        return self

    @property
    def gateway_url(self) -> str:
        return self.gateway.base_url

    def stop_canary(self, payload: dict) -> bool:
        """post-rollout hook: a rolled-back canary's engine is stopped (a promoted one keeps serving)."""
        if payload.get("phase") == "RolledBack":
            self.engines[self.canary_deployment].stop()
        return True

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rehearse(
    registry: Registry,
    spec: RolloutSpec,
    *,
    request_log: str | Path,
    concurrency: int = 2,
    max_tokens: int = 8,
    threads: int = 1,
    timeout_s: float = 600,
    who: str | None = None,
    on_pause: Callable[[Controller], object] | None = None,
) -> tuple[Controller, dict[str, int]]:
    """Run `spec` on this machine: engines for the `stable` version and the candidate, the gateway,
    steady traffic, and the controller until it promotes or rolls back (a rolled-back canary's
    engine is stopped by a post-rollout hook). `on_pause(controller)` plays the operator when the
    rollout pauses (e.g. `lambda c: c.promote()`); without it a pause waits until `timeout_s`.
    Returns the controller (state, audit) and the traffic's outcomes."""
    from llmops_lib.release.controller import Controller
    from llmops_lib.release.hooks import Hook
    from llmops_lib.release.state import PAUSED
    from llmops_lib.release.traffic import BackgroundTraffic

    stable, candidate = registry.get(spec.model, "stable"), registry.get(spec.model, spec.candidate)
    with LocalRelease(
        stable,
        candidate,
        request_log=request_log,
        threads=threads,
        stable_deployment=spec.stable_deployment,
        canary_deployment=spec.canary_deployment,
    ) as env:
        controller = Controller.create(
            spec,
            gateway_url=env.gateway_url,
            request_log=str(request_log),
            registry=registry,
            admin_key=env.admin_key,
            hooks=[Hook("post-rollout", env.stop_canary)],
            who=who,
        )
        with BackgroundTraffic(env.gateway_url, spec.model, concurrency=concurrency, max_tokens=max_tokens) as traffic:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                state = controller.run(
                    poll_s=0.25,
                    timeout_s=deadline - time.monotonic(),
                    stop_when=(lambda s: s.phase == PAUSED) if on_pause else None,
                )
                if state.done or state.phase != PAUSED:
                    break
                on_pause(controller)
    return controller, dict(traffic.outcomes)
