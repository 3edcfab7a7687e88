"""Drills on the real two-node Ray cluster: a worker node killed under gateway load, autoscaling under load,
and the `scale_out` runbook run whole. No time limits here: those are goals in benchmarks/scale_out.py.

The drills run on the session's shared cluster (`ray_cluster`, 127.0.0.2/.3): the node drill brings the node
back before it returns (that is what it checks), and every app is deleted at the end. The runbook starts and
stops a cluster of its own, on this file's addresses 127.0.0.8/.9.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from llmops_lib.engines import LlamaServer
from llmops_lib.engines.server import free_port
from llmops_lib.errors import EngineError, ExitCode
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.scale import drills
from llmops_lib.scale.serve_config import Autoscaling, deploy, proxy_url, serve_config, undeploy

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK_IPS = {"127.0.0.8", "127.0.0.9"}
pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def node_ips() -> set[str]:
    """The shared cluster's two addresses, as conftest places them (not as the cluster reports them)."""
    head = ipaddress.ip_address(os.environ.get("LLMOPS_TEST_RAY_HEAD_IP", "127.0.0.2"))
    return {str(head), str(head + 1)}


@pytest.fixture(scope="module")
def serve(ray_cluster, spec):
    """Deploys a Serve config of the default model on the shared cluster (same proxy address for every
    config: Serve keeps the one it started with); deletes every app when the module is done."""
    try:
        host, port = proxy_url(ray_cluster).removeprefix("http://").rsplit(":", 1)
    except EngineError:  # Serve not started on this cluster yet
        host = ray_cluster.ips[0]
        port = str(free_port(host))

    def apply(**kind: object) -> str:
        deploy(ray_cluster, serve_config(spec, http_host=host, http_port=int(port), **kind))
        return proxy_url(ray_cluster)

    yield apply
    undeploy(ray_cluster)


def test_autoscaling_adds_a_replica_under_load_that_serves_a_fair_share(ray_cluster, serve, node_ips):
    proxy = serve(autoscaling=Autoscaling(min_replicas=1, max_replicas=2, target_ongoing_requests=1))
    drills.wait_for_replicas(ray_cluster, 1)
    assert len(drills.running(ray_cluster)) == 1, "no load yet: the minimum of one replica"

    drill = drills.autoscale(ray_cluster, proxy, to=2, concurrency=4, rest=16)

    assert drill.seconds["scaled"] is not None, f"no second replica under load: {drill.as_dict()}"
    assert drill.traffic.errors == 0, drill.traffic.error_messages
    new = set(drill.detail["after"]) - set(drill.detail["before"])
    assert len(new) == 1 and len(drill.detail["after"]) == 2
    assert drill.detail["new_share"] >= 0.25, drill.as_dict()
    assert {served.split("/")[0] for served in drill.detail["after"]} == node_ips


def test_worker_node_killed_under_gateway_load_loses_no_request_and_capacity_returns(
    ray_cluster, serve, spec, node_ips
):
    # two replicas as an autoscaling floor: after the test above, a change Serve makes without new replicas
    proxy = serve(autoscaling=Autoscaling(min_replicas=2, max_replicas=2))
    drills.wait_for_replicas(ray_cluster, 2, distinct_nodes=True)
    with LlamaServer(spec) as direct:
        route = Route(
            model="default",
            deployments=[Deployment(name="ray", url=proxy), Deployment(name="direct", url=direct.base_url, weight=0)],
            fallback="direct",
        )
        with GatewayServer(GatewayConfig(routes=[route], cache_size=0)) as gateway:
            drill = drills.kill_node(ray_cluster, gateway.base_url, index=1, requests=24, concurrency=4)

    assert len(drill.traffic.replies) == 24
    assert drill.traffic.errors == 0, drill.traffic.error_messages
    assert sum(drill.traffic.deployments.values()) == 24, "every answer came from the route's ray or direct"
    assert drill.seconds["noticed"] is not None, f"Serve never saw the replica go: {drill.as_dict()}"
    assert {n.ip for n in ray_cluster.nodes() if n.alive} == node_ips, "the node is back"
    after = drills.send(proxy, requests=8, concurrency=4)
    assert after.errors == 0, after.error_messages
    assert set(after.nodes) == node_ips, f"both nodes serve again: {after.spread}"
    worker = max(node_ips, key=ipaddress.ip_address)
    killed = {s for s in drill.detail["replicas_before"] if s.startswith(worker + "/")}
    assert killed and not killed & set(after.spread), "the worker's replica is a new one"


def listening_on(ips: set[str]) -> list[tuple[str, int]]:
    return sorted(
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.ip in ips
    )


def test_scale_out_runbook_runs_whole_and_leaves_nothing_behind(model_path):
    assert listening_on(RUNBOOK_IPS) == [], "the runbook's addresses are free before it runs"
    result = subprocess.run(
        [sys.executable, "-m", "llmops_lib", "runbook", "run", "scale_out", "--no-progress"]
        # min_share 0.1: 16 requests are few for a share gate (the spread goal is test_scale_serve's, at 32)
        + ["-p", "requests=16", "-p", "max_tokens=8", "-p", "min_share=0.1", "-p", "head_ip=127.0.0.8"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
    )
    assert result.returncode == ExitCode.OK, result.stderr[-2000:]
    folder = Path(result.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    summary = json.loads((folder / "summary.json").read_text())
    records = summary["records"]
    assert summary["status"] == "ok" and summary["parameters"]["head_ip"] == "127.0.0.8"
    assert records["nodes"] == ["127.0.0.8", "127.0.0.9"]
    assert sorted(records["replicas"].values()) == ["127.0.0.8", "127.0.0.9"]
    assert records["gateway_split"] == {"ray": 16} and records["gateway_errors"] == 0
    assert sum(records["spread"].values()) == 16 and len(records["spread"]) == 2
    assert all(records[f"gate.{name}"]["passed"] for name in ("min_share", "healthy", "cluster_stopped"))
    assert (folder / "scale_out.ipynb").is_file()
    assert listening_on(RUNBOOK_IPS) == [], "nothing of the runbook's cluster listens afterwards"
