"""`llmops scale up | status | down`: a local Ray cluster serving llama-server replicas, run from the shell.

`up` starts the cluster, deploys the llama-server app and leaves both running; its state (addresses,
ports, temp dir) goes to `<LLMOPS_HOME>/scale/cluster.json`, written atomically before the deploy,
so `down` finds and stops the cluster even when the deploy failed or the shell that ran `up` is gone.

Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml

from llmops_lib import models
from llmops_lib.atomic import write_text
from llmops_lib.config import settings
from llmops_lib.errors import ExitCode, LLMOpsError, SpecError, fail

scale_app = typer.Typer(
    help=(
        "A Ray cluster on this machine (one node per loopback address: 127.0.0.2, 127.0.0.3, ...) serving "
        "llama-server replicas with Ray Serve, for the gateway to route to: up, status, down."
    ),
    no_args_is_help=True,
)


def state_path() -> Path:
    """Where `up` records the running cluster for `status` and `down`."""
    return settings().home / "scale" / "cluster.json"


def _read_state() -> dict | None:
    path = state_path()
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise fail(f"{path} is not JSON ({exc}): remove it, then stop leftovers by PID", ExitCode.ERROR) from None


def _attach(state: dict):
    from llmops_lib.scale.cluster import LocalRayCluster

    return LocalRayCluster.attach(state["cluster"])


@scale_app.command("up")
def up(
    nodes: Annotated[int, typer.Option(help="Ray nodes: the head and nodes-1 workers, each on its own address.")] = 2,
    cpus: Annotated[int, typer.Option(help="Logical CPUs per node (each replica takes 1).")] = 1,
    head_ip: Annotated[
        str, typer.Option(help="The head's loopback address; node i runs on head_ip + i (never 127.0.0.1).")
    ] = "127.0.0.2",
    replicas: Annotated[int, typer.Option(help="llama-server replicas (Ray spreads them over the nodes).")] = 2,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="A model name (gemma3-270m, smollm2) or a GGUF file. Default: Gemma 3."),
    ] = None,
    threads: Annotated[int, typer.Option(help="CPU threads of each replica's llama-server.")] = 1,
    parallel: Annotated[int, typer.Option(help="Requests each replica serves at once.")] = 2,
    ctx: Annotated[int, typer.Option("--ctx", help="Context length per request, in tokens.")] = 1024,
    route: Annotated[str, typer.Option(help="The model name clients use, in the printed gateway route.")] = "gemma",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the cluster, then for the replicas.")] = 300.0,
) -> None:
    """Start the cluster, deploy the llama-server app, print its proxy URL and the gateway route for it.

    Example: llmops scale up --nodes 2 --replicas 2, then `llmops scale status`, `llmops scale down`.
    """
    from llmops_lib.engines import EngineSpec
    from llmops_lib.scale.cluster import LocalRayCluster, free_ports
    from llmops_lib.scale.serve_config import deploy, proxy_url, serve_config

    previous = _read_state()
    if previous is not None and _attach(previous).pids():
        raise fail(f"a cluster is already up (state: {state_path()}): run `llmops scale down` first", ExitCode.ERROR)
    try:  # every input is checked before anything starts
        cluster = LocalRayCluster(nodes=nodes, cpus=cpus, head_ip=head_ip, start_timeout_s=timeout)
        if replicas > nodes * cpus:
            raise SpecError(
                f"--replicas {replicas} needs {replicas} CPUs and the cluster has {nodes * cpus}: "
                "raise --nodes or --cpus, or lower --replicas"
            )
        spec = EngineSpec(
            model=models.model_path() if model is None else models.resolve_model(model),
            n_ctx=ctx,
            threads=threads,
            parallel=parallel,
        )
        models.check_gguf(spec.model)
        config = serve_config(spec, replicas=replicas, http_host=head_ip, http_port=free_ports(1)[0])
    except LLMOpsError as exc:  # bad input exits 2; a damaged model file 1, as for `llmops serve`
        raise fail(exc, ExitCode.BAD_PARAMETERS if isinstance(exc, SpecError) else ExitCode.ERROR) from None
    started = time.monotonic()
    try:
        cluster.start()
        write_text(state_path(), json.dumps({"cluster": cluster.state(), "app": config["applications"][0]["name"]}))
        cluster_s = time.monotonic() - started
        typer.echo(f"cluster up in {cluster_s:.1f} s: {', '.join(cluster.ips)} (dashboard {cluster.dashboard_url})")
        deploy(cluster, config, timeout_s=timeout)
        url = proxy_url(cluster)
    except LLMOpsError as exc:
        cluster.stop()
        state_path().unlink(missing_ok=True)
        raise fail(exc, ExitCode.ERROR) from None
    cluster.detach()
    typer.echo(f"{replicas} replicas running in {time.monotonic() - started - cluster_s:.1f} s more; proxy: {url}")
    snippet = {"routes": [{"model": route, "deployments": [{"name": "ray", "url": url, "weight": 100}]}]}
    typer.echo("gateway route (add under routes: in its config):")
    typer.echo(yaml.safe_dump(snippet, sort_keys=False).rstrip())
    typer.echo(f"state: {state_path()}; stop with `llmops scale down`")


@scale_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Show the cluster's nodes, the replicas on each, and the app's status."""
    from llmops_lib.scale.serve_config import app_status, replicas

    state = _read_state()
    if state is None:
        raise fail(f"no cluster is up (no {state_path()}): start one with `llmops scale up`", ExitCode.ERROR)
    cluster = _attach(state)
    try:
        nodes = cluster.nodes()
        app = app_status(cluster, state["app"])
        running = replicas(cluster, state["app"])
    except LLMOpsError as exc:
        raise fail(f"{exc}; if it is gone, run `llmops scale down` to clear its state", ExitCode.ERROR) from None
    per_node = {node.ip: sum(r.node_ip == node.ip and r.state == "RUNNING" for r in running) for node in nodes}
    if as_json:
        rows = [dataclasses.asdict(node) | {"replicas": per_node[node.ip]} for node in nodes]
        typer.echo(json.dumps({"nodes": rows, "app": state["app"], "status": app.get("status", "missing")}, indent=2))
        return
    typer.echo(f"cluster {cluster.address}  dashboard {cluster.dashboard_url}  processes {len(cluster.pids())}")
    typer.echo(f"{'node':<12}{'role':<8}{'state':<7}{'cpus':>5}{'replicas':>10}")
    for node in sorted(nodes, key=lambda n: (not n.head, n.ip, not n.alive)):
        role, alive = ("head" if node.head else "worker"), ("alive" if node.alive else "dead")
        typer.echo(f"{node.ip:<12}{role:<8}{alive:<7}{node.cpus:>5.0f}{per_node[node.ip]:>10}")
    typer.echo(f"app {state['app']}: {app.get('status', 'missing')} ({len(running)} replicas known)")


@scale_app.command("down")
def down() -> None:
    """Stop every process of the cluster by its PID (never `ray stop`) and check that none of its ports listens."""
    state = _read_state()
    if state is None:
        typer.echo(f"no cluster is up (no {state_path()}): nothing to stop")
        return
    cluster = _attach(state)
    count = len(cluster.pids())
    try:
        cluster.stop()
    except LLMOpsError as exc:
        raise fail(exc, ExitCode.ERROR) from None
    state_path().unlink()
    typer.echo(f"stopped {count} processes of {cluster.address}; no process left, no port listening")
