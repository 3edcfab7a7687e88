"""`llmops render` (Kubernetes manifests from our specs) and `llmops validate` (them, offline and strictly).

Exit codes: 0 done / every document valid · 2 bad input (unknown target, a file that does not load;
nothing written) or, for `validate`, a manifest a cluster would refuse (one line per problem).
Light to import: the renderer and the validator load when a command runs.
Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmops_lib.errors import ExitCode, LLMOpsError, fail
from llmops_lib.scale.targets import TARGETS

#: where `--target all` puts the production stack's chart values: they are not a Kubernetes object,
#: so they stay out of the `*.yaml` manifests that `llmops validate DIR/*.yaml` checks
VALUES_FILE = Path("production-stack") / "values.yaml"

RENDER_HELP = (
    "Render Kubernetes manifests from the engine spec, the gateway configuration and a rollout spec that run "
    "here: the container args are the local engine's argv (listening on 0.0.0.0, the model on the PVC "
    "llmops-models at /models), a RayService holds the Serve config the local Ray cluster deploys, an Argo "
    "Rollout takes the rollout's steps and its analysis as Prometheus queries over the gateway's metrics. "
    f"Targets: {', '.join(TARGETS)}, or all (one file per target into --out; needs --rollout for "
    "argo-rollout and kserve-llmisvc). Printed to stdout without --out.\n\n"
    "Example: llmops render --target argo-rollout --rollout deploy/rollouts/canary.yaml "
    "--gateway-config deploy/gateway.example.yaml"
)
VALIDATE_HELP = (
    "Validate Kubernetes manifests offline: built-in kinds strictly (kubernetes-validate), custom resources "
    "against their vendored CRD schemas (unknown fields refused) and CEL rules, a RayService's serveConfigV2 "
    "against Ray's Serve schema; a kind with no vendored schema is a problem. Exit 0 when every document is "
    "valid, 2 with one line per problem: file#document kind/name: path: message.\n\n"
    "Example: llmops render --target all --rollout deploy/rollouts/canary.yaml --out k8s && "
    "llmops validate k8s/*.yaml"
)


def render_command(
    target: Annotated[str, typer.Option("--target", "-t", help=f"One of {', '.join(TARGETS)}, or all.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="A model name (gemma3-270m, smollm2) or a GGUF file. Default: gemma3-270m."),
    ] = None,
    engine: Annotated[str, typer.Option("--engine", help="llama-server or vllm.")] = "llama-server",
    rollout: Annotated[
        Path | None, typer.Option("--rollout", help="A rollout spec (e.g. deploy/rollouts/canary.yaml).")
    ] = None,
    gateway_config: Annotated[
        Path | None,
        typer.Option("--gateway-config", help="The gateway's YAML configuration: its route names the backends."),
    ] = None,
    image: Annotated[str | None, typer.Option("--image", help="The container image instead of the default.")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of every object.")] = "llmops",
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Pods (Ray: workers and replicas).")] = 2,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Engine threads (CPU requested). Default: the spec's.")
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Requests each engine serves at once.")] = 1,
    gpu: Annotated[bool, typer.Option("--gpu", help="vLLM's GPU command and GPU resources.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write <target>.yaml files here instead of stdout.")] = None,
) -> None:
    """Render manifests (see RENDER_HELP)."""
    from llmops_lib import models
    from llmops_lib.atomic import write_text
    from llmops_lib.engines.spec import EngineSpec
    from llmops_lib.gateway.config import load_config
    from llmops_lib.release.rollout import load_rollout
    from llmops_lib.scale.render import render, render_all, to_yaml

    try:
        if target == "all" and out is None:
            raise LLMOpsError("--target all writes one file per target: give --out DIR")
        spec = EngineSpec(
            models.model_path() if model is None else models.resolve_model(model),
            parallel=parallel,
            **({"threads": threads} if threads else {}),
        )
        options = {
            "spec": spec,
            "engine": engine,
            "gateway": load_config(gateway_config) if gateway_config else None,
            "rollout": load_rollout(rollout) if rollout else None,
            "image": image,
            "namespace": namespace,
            "replicas": replicas,
            "gpu": gpu,
        }
        rendered = render_all(**options) if target == "all" else {target: render(target, **options)}
    except LLMOpsError as exc:
        raise fail(exc, ExitCode.BAD_PARAMETERS) from None
    left_out = [name for name in TARGETS if target == "all" and name not in rendered]
    if left_out:
        typer.echo(f"note: not rendered without --rollout: {', '.join(left_out)}", err=True)
    if out is None:
        typer.echo(to_yaml(rendered[target]), nl=False)
        return
    for name, docs in rendered.items():
        path = out / (VALUES_FILE if name == "production-stack" else Path(f"{name}.yaml"))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, to_yaml(docs))
        typer.echo(f"{path}: {'values' if name == 'production-stack' else f'{len(docs)} object(s)'}")


def validate_command(
    files: Annotated[list[Path], typer.Argument(help="YAML files of Kubernetes objects (several documents each).")],
) -> None:
    """Validate manifests (see VALIDATE_HELP)."""
    from llmops_lib.scale.validate import check_files

    try:
        result = check_files(files)
    except LLMOpsError as exc:
        raise fail(exc, ExitCode.BAD_PARAMETERS) from None
    for problem in result.problems:
        typer.echo(f"error: {problem}", err=True)
    if result.problems:
        raise typer.Exit(int(ExitCode.BAD_PARAMETERS))
    skipped = sum(result.cel_skipped.values())
    typer.echo(
        f"valid: {result.documents} documents in {len(files)} files "
        f"(CEL rules: {result.cel_evaluated} evaluated, {skipped} not evaluable here)"
    )
