"""A release environment on one machine: an engine per registered version, and a gateway in front.

The book, the runbooks and the tests rehearse a release the way production runs one: each
version is served from *its registered* engine spec (artifact verified by sha256 at every start),
and the gateway routes the model's traffic between them by weight, logging every request.
`rehearsal_registry` fills a registry with the versions such a rehearsal releases.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from llmops_lib.engines import EngineSpec
from llmops_lib.engines.llamacpp import LlamaServer
from llmops_lib.models import default_model, inspect_gguf
from llmops_lib.optimize.perplexity import held_out_perplexity
from llmops_lib.optimize.quantize import model_as
from llmops_lib.release.phases import Phase
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
        self.stable, self.candidate = stable, candidate
        self.model, self.request_log, self.admin_key, self.threads = stable.name, str(request_log), admin_key, threads
        self.stable_deployment, self.canary_deployment = stable_deployment, canary_deployment
        self.engines: dict[str, LlamaServer] = {}
        self.gateway: Any = None
        self._stack = ExitStack()

    def start(self) -> Self:
        """Start both engines and the gateway; both artifacts' sha256 are checked before anything starts.

        Raises:
            ModelError: an artifact changed or vanished since it was registered (nothing started).
        """
        from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
        from llmops_lib.gateway.access import key_entry

        records = {self.stable_deployment: self.stable.verify(), self.canary_deployment: self.candidate.verify()}
        try:
            for deployment, record in records.items():
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
            admin = key_entry(self.admin_key, "release", admin=True, routes=[])  # admin only: traffic needs no key
            config = GatewayConfig(routes=[route], keys=[admin], request_log=self.request_log, cache_size=0)
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
        if payload.get("phase") == Phase.ROLLED_BACK:
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
                    stop_when=(lambda s: s.phase == Phase.PAUSED) if on_pause else None,
                )
                if state.done or state.phase != Phase.PAUSED:
                    break
                on_pause(controller)
    return controller, dict(traffic.outcomes)


def on_a_short_scale(rollout: dict[str, Any], evaluation_interval: str = "21s") -> dict[str, Any]:
    """A rollout's analysis (as `RolloutSpec.to_dict()` gives it) on a rehearsal's time scale: its own
    metrics and conditions, measured every 10 s on what traffic there is (never pausing for want of
    samples), and each evaluation once, after the first latency measurements."""
    for metric in rollout["analysis"]["metrics"]:
        if metric["provider"] == "evaluation":
            metric["interval"] = evaluation_interval
        else:
            metric |= {"interval": "10s", "minSamples": 2, "onMissing": "skip"}
    return rollout


def rehearsal_registry(
    registry: Registry,
    model: str = "gemma",
    candidates: Sequence[str | Path] = ("Q8_0",),
    *,
    threads: int = 1,
    perplexity: bool = False,
    who: str | None = None,
) -> dict[str, ModelRecord]:
    """Fill `registry` with what a rehearsed release needs: the shipped model (made `stable` when
    the registry has no stable version yet) and each candidate.

    A candidate given as a string is a llama.cpp type (e.g. "Q8_0"): the shipped model in that type
    (`optimize.quantize.model_as`, made once and cached); a `Path` is that GGUF file. Every
    version is served with n_ctx 1024, two slots and `threads` threads. With `perplexity`, each
    version keeps its held-out perplexity as the registry metric `perplexity`.

    Returns:
        the versions registered, by label: the shipped model's file type (e.g. "Q4_K_M", absent
        when the registry already had a stable version), then each candidate's type or file name.
    """
    shipped = default_model()
    has_stable = "stable" in registry.aliases(model)
    files = {} if has_stable else {inspect_gguf(shipped).file_type: shipped}
    for candidate in candidates:
        label = candidate.name if isinstance(candidate, Path) else candidate
        files[label] = candidate if isinstance(candidate, Path) else model_as(shipped, candidate)
    records = {}
    for label, path in files.items():
        spec = EngineSpec(model=path, n_ctx=1024, threads=threads, parallel=2)
        record = registry.register(model, path, spec=spec, description=f"{label} ({Path(path).name})")
        if perplexity:
            value = held_out_perplexity(record.path, record.sha256)
            record = registry.log_metrics(model, record.version, {"perplexity": value})
        records[label] = record
    if not has_stable:
        first = next(iter(records.values()))
        registry.set_alias(
            model, "stable", first.version, why="rehearsal: the shipped model is what users have", who=who
        )
    return records
