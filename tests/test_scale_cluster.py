"""The local Ray cluster: two real nodes on two loopback addresses, and nothing of it left after a stop.

Expected values are literals or read independently of the code under test (`/proc` through psutil,
`ss`-like socket tables, Ray's own HTTP endpoints). The end-to-end CLI test starts its own cluster
because it tests the start and the teardown themselves; the others share the session's `ray_cluster`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from llmops_lib.cli import app
from llmops_lib.errors import SpecError
from llmops_lib.scale.cluster import RAY_WORKER_PORTS, LocalRayCluster, free_ports

HEAD_IP = os.environ.get("LLMOPS_TEST_RAY_HEAD_IP", "127.0.0.2")
WORKER_IP = HEAD_IP.rsplit(".", 1)[0] + "." + str(int(HEAD_IP.rsplit(".", 1)[1]) + 1)


def _llmops(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = os.environ | {"LLMOPS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "llmops_lib", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _listening(ports: set[int]) -> list[tuple[str, int]]:
    """Whatever listens on one of `ports`, whoever it is (the kernel's socket table)."""
    return [
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports
    ]


def _ray_daemons() -> set[int]:
    """Ray daemons on this test's addresses (other checkouts' clusters on the machine use others)."""
    return {
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] in ("raylet", "gcs_server")
        and any(arg.endswith(f"ip_address={HEAD_IP}") for arg in p.info["cmdline"] or [])
    }


def _ports(state: dict) -> set[int]:
    cluster = state["cluster"]
    ports = {cluster["gcs_port"], cluster["dashboard_port"], cluster["client_server_port"]}
    return ports | {port for node in cluster["nodes"] for port in node.values()}


@pytest.mark.engine
def test_scale_up_status_down_end_to_end_leaves_nothing(model_path, tmp_path):
    """`llmops scale up` starts 2 nodes on 2 addresses and 2 replicas that answer through the proxy;
    `down` leaves no process, port or temp dir. (A worker node killed and restarted under load is
    tests/test_scale_drills.py's drill.)"""
    state_file = tmp_path / "scale" / "cluster.json"
    try:
        up = _llmops("scale", "up", "--head-ip", HEAD_IP, "--model", str(model_path), home=tmp_path)
        assert up.returncode == 0, up.stderr
        state = json.loads(state_file.read_text())
        cluster = LocalRayCluster.attach(state["cluster"])
        proxy = next(line.split("url: ")[1] for line in up.stdout.splitlines() if "url: " in line)
        assert proxy.startswith(f"http://{HEAD_IP}:")

        status = _llmops("scale", "status", "--json", home=tmp_path)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert shown["status"] == "RUNNING"
        assert sorted((n["ip"], n["head"], n["alive"], n["replicas"]) for n in shown["nodes"]) == [
            (HEAD_IP, True, True, 1),
            (WORKER_IP, False, True, 1),
        ]
        answer = httpx.post(
            f"{proxy}/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 4}, timeout=120
        )
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4

        pids, temp_dir = set(cluster.pids()), cluster.temp_dir
        ports = _ports(state) | _ports({"cluster": cluster.state()}) | {int(proxy.rsplit(":", 1)[1])}
        assert len(pids) > 10 and temp_dir.is_dir() and _listening(ports)
        down = _llmops("scale", "down", home=tmp_path)
        assert down.returncode == 0, down.stderr
        assert not [pid for pid in pids if psutil.pid_exists(pid)]
        assert _listening(ports) == []
        assert not temp_dir.exists() and not state_file.exists()
        assert not [
            p.pid for p in psutil.process_iter(["cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])
        ]
    finally:
        if state_file.exists():  # the test failed half-way: stop what it started
            LocalRayCluster.attach(json.loads(state_file.read_text())["cluster"]).stop()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--head-ip", "127.0.0.1"], "Ray rewrites 127.0.0.1"),
        (["--head-ip", "10.0.0.2"], "use 127.0.0.2 or a later loopback address"),
        (["--head-ip", "localhost"], "is not an IP address"),
        (["--nodes", "0"], "at least 1 node"),
        (["--cpus", "0"], "cpus must be a positive whole number"),
        (["--replicas", "3"], "--replicas 3 needs 3 CPUs and the cluster has 2"),
        (["--replicas", "0"], "replicas must be positive"),
    ],
)
def test_scale_up_bad_input_exits_2_with_one_line_and_starts_nothing(args, fragment, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    before = _ray_daemons()
    result = CliRunner().invoke(app, ["scale", "up", *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and fragment in result.output
    assert not (tmp_path / "scale").exists()
    assert _ray_daemons() <= before


def test_status_and_down_without_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    status = CliRunner().invoke(app, ["scale", "status"])
    assert status.exit_code == 1 and status.output.count("\n") == 1 and "llmops scale up" in status.output
    down = CliRunner().invoke(app, ["scale", "down"])
    assert down.exit_code == 0 and "nothing to stop" in down.output


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"head_ip": "127.0.0.1"}, "Ray rewrites 127.0.0.1"),
        ({"head_ip": "127.255.255.255"}, "leaves 127.0.0.2-127.255.255.254"),
        ({"nodes": 3, "cpus": [1, 1]}, "one per node (3)"),
        ({"object_store_mb": 0}, "object_store_mb must be positive"),
    ],
)
def test_cluster_refuses_bad_layouts(kwargs, fragment):
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        LocalRayCluster(**kwargs)


def test_free_ports_are_distinct_and_outside_rays_worker_range():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not [port for port in ports if 10002 <= port <= 19999]


@pytest.mark.engine
def test_two_nodes_on_two_loopback_addresses(ray_cluster):
    nodes = [(n.ip, n.head, n.alive, n.cpus) for n in ray_cluster.nodes() if n.alive]
    assert nodes == [(HEAD_IP, True, True, 1.0), (WORKER_IP, False, True, 1.0)]
    assert ray_cluster.address.startswith(f"{HEAD_IP}:") and ray_cluster.dashboard_url.startswith(f"http://{HEAD_IP}:")
    assert len(str(ray_cluster.temp_dir)) <= 20  # Ray's socket paths below it must stay under AF_UNIX's 107 bytes


@pytest.mark.engine
def test_each_node_has_its_own_processes_and_raylet(ray_cluster):
    head, worker = set(ray_cluster.node_pids(0)), set(ray_cluster.node_pids(1))
    assert head and worker and not head & worker and head | worker == set(ray_cluster.pids())
    raylets = {pid: psutil.Process(pid).cmdline() for pid in head | worker if psutil.Process(pid).name() == "raylet"}
    ips = {
        pid: next(a.split("=")[1] for a in argv if a.startswith("--node_ip_address=")) for pid, argv in raylets.items()
    }
    assert sorted(ips.values()) == [HEAD_IP, WORKER_IP]
    for argv in raylets.values():  # the range the GCS port is kept out of is the one Ray really uses
        assert f"--min_worker_port={RAY_WORKER_PORTS.start}" in argv
        assert f"--max_worker_port={RAY_WORKER_PORTS.stop - 1}" in argv
    assert {ip for pid, ip in ips.items() if pid in worker} == {WORKER_IP}


@pytest.mark.engine
def test_every_node_runs_with_telemetry_off_and_spread_routing(ray_cluster):
    """Read from /proc: the environment Ray's daemons really run with (the workers inherit it)."""
    checked = 0
    for pid in ray_cluster.pids():
        process = psutil.Process(pid)
        if process.name() not in ("raylet", "gcs_server"):
            continue  # Python workers rewrite their title over their environment block
        env = process.environ()
        assert env.get("RAY_USAGE_STATS_ENABLED") == "0"
        assert env.get("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING") == "0"
        checked += 1
    assert checked == 3  # one GCS, two raylets


@pytest.mark.engine
def test_metrics_urls_serve_each_nodes_prometheus_text(ray_cluster):
    urls = ray_cluster.metrics_urls()
    assert [url.split("//")[1].split(":")[0] for url in urls] == [HEAD_IP, WORKER_IP]
    for url in urls:
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200 and "# TYPE " in response.text and url.endswith("/metrics")


@pytest.mark.engine
def test_drills_refuse_the_head_and_unknown_nodes(ray_cluster):
    for index, fragment in ((0, "node 0 is the head"), (2, "outside 1..1")):
        with pytest.raises(SpecError, match=fragment):
            ray_cluster.kill_node(index)
    with pytest.raises(SpecError, match="outside 0..1"):
        ray_cluster.node_pids(-1)
