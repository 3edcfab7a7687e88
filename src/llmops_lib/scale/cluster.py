"""A real Ray cluster on this machine: one node per loopback address, started and stopped by its own PIDs.

Ray rewrites 127.0.0.1 to the machine's routable address, but 127.0.0.2, 127.0.0.3, … stay on
loopback and count as distinct nodes, so `LocalRayCluster(nodes=2)` is a genuine two-node cluster
(head on 127.0.0.2, a worker on 127.0.0.3) that a test or a reader can start and kill. Everything
that could collide with another cluster on the same machine is its own: every port is picked free
(the GCS port outside Ray's worker-port range, the agents' and metrics ports per node), a short temp
dir (Ray's Unix sockets live there and AF_UNIX paths stop at 107 bytes), and the processes, found
by that temp dir and the GCS address in their command lines (plus their descendants: the workers,
and whatever a replica started). `stop` ends exactly those, never `ray stop` (which ends every Ray
on the machine), and returns once none of them runs or listens.

Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import psutil
from pydantic import BaseModel

from llmops_lib.errors import EngineError, SpecError

# Every Ray process of the cluster runs with these: no telemetry; Serve's proxy spreads requests over every
# node's replicas instead of preferring its own node's (which starves the other nodes below saturation); and
# workers at normal priority (Ray nices them to 15 by default, and each replica's llama-server inherits that,
# so on a busy machine a replica loses to a direct engine for that reason alone).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
    "RAY_worker_niceness": "0",
}
# Ray's default worker-port range: a GCS port inside it is refused ("used by other components").
RAY_WORKER_PORTS = range(10002, 20000)
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# `ray start` gives a node 30 s (fixed in Ray) to register with the GCS; a loaded machine can miss that once
START_ATTEMPTS = 3
STOP_GRACE_S = 5.0  # the GCS and the autoscaler monitor ignore SIGTERM for longer; nothing of ours needs more


@dataclass(frozen=True)
class NodeInfo:
    """One node as Ray's GCS knows it (a killed node stays listed, not alive)."""

    ip: str
    node_id: str
    alive: bool
    cpus: float
    head: bool


class NodePorts(BaseModel):
    """The ports one node's processes listen on, all picked free (Ray's defaults collide between nodes)."""

    node_manager: int
    object_manager: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int


class ClusterLayout(BaseModel):
    """What identifies a started cluster: enough to find, watch and stop it from another process."""

    ips: list[str]
    cpus: list[int]
    object_store_mb: int
    temp_dir: Path
    own_temp_dir: bool  # made by us, so removed by `stop`
    gcs_port: int
    dashboard_port: int
    client_server_port: int
    nodes: list[NodePorts]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on every address, outside Ray's worker-port range (the OS picks them)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("0.0.0.0", 0))  # free on all addresses: several Ray servers bind 0.0.0.0 or 127.0.0.1 too
            if (port := sock.getsockname()[1]) not in RAY_WORKER_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def node_addresses(head_ip: str, nodes: int) -> list[str]:
    """The head's address and the next ones, all on loopback but not 127.0.0.1 (which Ray rewrites)."""
    if nodes < 1:
        raise SpecError(f"a cluster needs at least 1 node, got nodes={nodes}")
    try:
        first = ipaddress.ip_address(head_ip)
    except ValueError:
        raise SpecError(f"head_ip {head_ip!r} is not an IP address: use a loopback one such as 127.0.0.2") from None
    ips = [first + index for index in range(nodes)]
    if first == ipaddress.ip_address("127.0.0.1") or not all(ip in LOOPBACK for ip in ips):
        raise SpecError(
            f"head_ip {head_ip} with {nodes} nodes leaves 127.0.0.2-127.255.255.254: Ray rewrites 127.0.0.1 "
            "to the machine's address, so use 127.0.0.2 or a later loopback address"
        )
    return [str(ip) for ip in ips]


def ray_cli() -> Path:
    """The `ray` command of the running interpreter's environment (the same Ray version as the caller's)."""
    return Path(sys.executable).parent / "ray"


class LocalRayCluster:
    """A Ray cluster of `nodes` nodes on consecutive loopback addresses, as a context manager.

    Args:
        nodes: how many nodes; node 0 is the head (GCS, dashboard with Serve's REST API).
        cpus: logical CPUs per node, one number for all or one per node (Ray schedules replicas by them).
        head_ip: the head's address; node i runs on head_ip + i.
        temp_dir: Ray's temp dir (short!); default a new /tmp/lr-XXXXXXXX removed by `stop`.
        object_store_mb: each node's object store (Serve needs little; Ray's default takes 30 % of RAM).
        start_timeout_s: how long `start` waits for each `ray start` and for every node to be alive.
    """

    def __init__(
        self,
        *,
        nodes: int = 2,
        cpus: int | Sequence[int] = 1,
        head_ip: str = "127.0.0.2",
        temp_dir: Path | None = None,
        object_store_mb: int = 100,
        start_timeout_s: float = 180.0,
    ) -> None:
        ips = node_addresses(head_ip, nodes)
        per_node = [cpus] * nodes if isinstance(cpus, int) else list(cpus)
        if len(per_node) != nodes or any(not isinstance(n, int) or n < 1 for n in per_node):
            raise SpecError(f"cpus must be a positive whole number or one per node ({nodes}), got {cpus!r}")
        if object_store_mb < 1:
            raise SpecError(f"object_store_mb must be positive, got {object_store_mb}")
        self.start_timeout_s = start_timeout_s
        self._layout = ClusterLayout(
            ips=ips,
            cpus=per_node,
            object_store_mb=object_store_mb,
            temp_dir=temp_dir or Path("/tmp/lr-unstarted"),
            own_temp_dir=temp_dir is None,
            gcs_port=0,
            dashboard_port=0,
            client_server_port=0,
            nodes=[],
        )
        self._started = False

    # --- identity -------------------------------------------------------------------------------------
    @property
    def ips(self) -> list[str]:
        return list(self._layout.ips)

    @property
    def temp_dir(self) -> Path:
        return self._layout.temp_dir

    @property
    def address(self) -> str:
        """The GCS address (`ray start --address`, `RAY_ADDRESS`)."""
        return f"{self._layout.ips[0]}:{self._layout.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard, which serves Serve's REST API (`serve deploy --address`, KubeRay's path)."""
        return f"http://{self._layout.ips[0]}:{self._layout.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment every node runs with (also for `serve`/`ray` commands aimed at this cluster)."""
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        return env | RAY_ENV

    def state(self) -> dict:
        """What `attach` needs to find this cluster again, as JSON-ready data (`llmops scale`'s state file)."""
        return self._layout.model_dump(mode="json")

    @classmethod
    def attach(cls, state: dict) -> LocalRayCluster:
        """The cluster a `state()` describes, started by another process: to watch it or stop it."""
        layout = ClusterLayout.model_validate(state)
        cluster = cls(nodes=len(layout.ips), cpus=layout.cpus, head_ip=layout.ips[0])
        cluster._layout = layout
        cluster._started = True
        return cluster

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the head, then every worker, and return once Ray's GCS lists every node alive.

        Raises:
            EngineError: a `ray start` failed or a node did not come up in time (with the log's tail);
                whatever had started is stopped first.
        """
        if self._started:
            raise EngineError(f"the cluster at {self.address} is already started")
        if self._layout.own_temp_dir:
            self._layout.temp_dir = Path(tempfile.mkdtemp(prefix="lr-", dir="/tmp"))
        else:
            self._layout.temp_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        atexit.register(self.stop)
        try:
            for index in range(len(self.ips)):
                self._start_node(index)
            self._wait_alive()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, index: int) -> None:
        """`ray start` node `index` on fresh ports; again when it fails, after killing what it left running
        (Ray gives a node a fixed 30 s to register with the GCS, which a loaded machine can miss)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            if index == 0:
                gcs, dashboard, client = free_ports(3)
                self._layout.gcs_port, self._layout.dashboard_port = gcs, dashboard
                self._layout.client_server_port = client
            ports = dict(zip(NodePorts.model_fields, free_ports(len(NodePorts.model_fields)), strict=True))
            if index < len(self._layout.nodes):
                self._layout.nodes[index] = NodePorts(**ports)
            else:
                self._layout.nodes.append(NodePorts(**ports))
            try:
                self._ray_start(index)
                return
            except EngineError:
                if attempt == START_ATTEMPTS:
                    raise
                _end(self._processes() if index == 0 else list(self._node_processes(index)), grace_s=0)

    def detach(self) -> None:
        """Leave the cluster running when this process exits (`llmops scale up`); stop it later via `attach`."""
        atexit.unregister(self.stop)

    def _ray_start(self, index: int) -> None:
        ports = self._layout.nodes[index]
        ip = self.ips[index]
        argv = [
            str(ray_cli()),
            "start",
            f"--node-ip-address={ip}",
            f"--num-cpus={self._layout.cpus[index]}",
            f"--object-store-memory={self._layout.object_store_mb * 1024 * 1024}",
            f"--temp-dir={self.temp_dir}",
            f"--node-manager-port={ports.node_manager}",
            f"--object-manager-port={ports.object_manager}",
            f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
            f"--runtime-env-agent-port={ports.runtime_env_agent}",
            f"--metrics-export-port={ports.metrics_export}",
            "--disable-usage-stats",
        ]
        if index == 0:
            argv += [
                "--head",
                f"--port={self._layout.gcs_port}",
                "--include-dashboard=true",
                f"--dashboard-host={ip}",
                f"--dashboard-port={self._layout.dashboard_port}",
                f"--ray-client-server-port={self._layout.client_server_port}",
            ]
        else:
            argv.append(f"--address={self.address}")
        log = self.temp_dir / f"ray-start-{ip}.log"
        with log.open("ab") as out:
            try:
                done = subprocess.run(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, timeout=self.start_timeout_s
                )
            except subprocess.TimeoutExpired:
                raise EngineError(
                    f"`ray start` for node {ip} did not return in {self.start_timeout_s:.0f} s: {_tail(log)}"
                ) from None
            except FileNotFoundError:
                raise EngineError(
                    f"{argv[0]} not found: install ray[serve] into this environment (make setup)"
                ) from None
        if done.returncode != 0:
            raise EngineError(f"`ray start` for node {ip} failed (exit {done.returncode}): {_tail(log)}")

    def _wait_alive(self, *, ignore: frozenset[str] = frozenset()) -> None:
        """Poll the GCS (through the dashboard) until every address has an alive node not in `ignore` (ids)."""
        deadline = time.monotonic() + self.start_timeout_s
        wanted = set(self.ips)
        seen: set[str] = set()
        while time.monotonic() < deadline:
            with contextlib.suppress(EngineError):
                seen = {node.ip for node in self.nodes() if node.alive and node.node_id not in ignore}
                if wanted <= seen:
                    return
            time.sleep(0.5)
        missing = ", ".join(sorted(wanted - seen))
        raise EngineError(
            f"Ray nodes {missing} were not alive after {self.start_timeout_s:.0f} s: {_tail(self._raylet_err())}"
        )

    def _raylet_err(self) -> Path:
        logs = sorted(self.temp_dir.glob("session_*/logs/raylet*.err"))
        return logs[-1] if logs else self.temp_dir / "ray-start.log"

    def stop(self) -> None:
        """Stop every process of the cluster (SIGTERM, then SIGKILL after a grace) and remove its own temp dir.

        Returns once none of them runs and none of its ports listens; safe to call twice.

        Raises:
            EngineError: something of it still runs or listens after SIGKILL (names the PIDs or ports).
        """
        atexit.unregister(self.stop)
        if not self._started:
            return
        _end(self._processes(), grace_s=STOP_GRACE_S)
        _end(self._processes(), grace_s=0)  # anything started while we stopped it
        left, listening = self.pids(), self.listening()
        if left or listening:
            raise EngineError(f"Ray cluster {self.address} still has processes {left} / listeners {listening}")
        self._started = False
        if self._layout.own_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- processes and ports --------------------------------------------------------------------------
    def _processes(self) -> list[psutil.Process]:
        """The cluster's processes: command line names its temp dir or GCS address, and their descendants."""
        marker = re.compile(rf"{re.escape(str(self.temp_dir))}(?:/|$)|(?<![\d.]){re.escape(self.address)}(?!\d)")
        roots = [
            process
            for process in psutil.process_iter(["cmdline"])
            if any(marker.search(arg) for arg in process.info["cmdline"] or ())
        ]
        found: dict[int, psutil.Process] = {}
        for root in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                for process in [root, *root.children(recursive=True)]:
                    found[process.pid] = process
        return list(found.values())

    def pids(self) -> list[int]:
        """Every process of the cluster (Ray's daemons, workers, replicas and what they started)."""
        return sorted(process.pid for process in self._processes())

    def node_pids(self, index: int) -> list[int]:
        """The processes of node `index` (its raylet, agents, workers and their children; for the head
        also the GCS, dashboard and the rest)."""
        self._check_index(index, allow_head=True)
        others = set()
        for other in range(1, len(self.ips)):
            if other == index:
                continue
            others.update(self._node_processes(other))
        if index == 0:
            return sorted(set(self.pids()) - {p.pid for p in others})
        return sorted(p.pid for p in self._node_processes(index))

    def _node_processes(self, index: int) -> set[psutil.Process]:
        pattern = re.compile(rf"--node[-_]ip[-_]address={re.escape(self.ips[index])}$")
        found: set[psutil.Process] = set()
        for process in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                if any(pattern.search(arg) for arg in process.cmdline()):
                    found.update([process, *process.children(recursive=True)])
        return found

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every TCP listener of the cluster's processes or on its picked ports."""
        pids = set(self.pids())
        ports = {self._layout.gcs_port, self._layout.dashboard_port, self._layout.client_server_port}
        for node in self._layout.nodes:
            ports.update(node.model_dump().values())
        return sorted(
            {
                (conn.laddr.ip, conn.laddr.port)
                for conn in psutil.net_connections(kind="tcp")
                if conn.status == psutil.CONN_LISTEN and (conn.pid in pids or conn.laddr.port in ports)
            }
        )

    # --- nodes ----------------------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        """Every node the GCS knows, by address (a killed one stays listed with alive=False, before its
        successor), from the dashboard's state API: no `ray.init` in the caller.

        Raises:
            EngineError: the dashboard did not answer.
        """
        url = f"{self.dashboard_url}/api/v0/nodes?detail=1&limit=1000"
        try:
            response = httpx.get(url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise EngineError(f"the Ray dashboard at {self.dashboard_url} did not answer: {exc}") from None
        if response.status_code != 200:
            raise EngineError(f"the Ray dashboard at {url} answered HTTP {response.status_code}")
        found = [
            NodeInfo(
                ip=node["node_ip"],
                node_id=node["node_id"],
                alive=node["state"] == "ALIVE",
                cpus=float(node.get("resources_total", {}).get("CPU", 0.0)),
                head=bool(node["is_head_node"]),
            )
            for node in response.json()["data"]["result"]["result"]
        ]
        return sorted(found, key=lambda node: (ipaddress.ip_address(node.ip), node.alive))

    def metrics_urls(self) -> list[str]:
        """Each node's Prometheus endpoint (Ray's and Serve's metrics; vLLM's as `ray_vllm_*`)."""
        return [
            f"http://{ip}:{ports.metrics_export}/metrics"
            for ip, ports in zip(self.ips, self._layout.nodes, strict=True)
        ]

    # --- drills ---------------------------------------------------------------------------------------
    def _check_index(self, index: int, *, allow_head: bool = False) -> None:
        low = 0 if allow_head else 1
        if not low <= index < len(self.ips):
            raise SpecError(
                f"node index {index} is outside {low}..{len(self.ips) - 1}"
                + ("" if allow_head else " (node 0 is the head: killing it ends the cluster, use stop())")
            )

    def kill_node(self, index: int) -> None:
        """Kill worker node `index` at once (SIGKILL to its raylet, agents, workers and their children), as a
        machine failure would; Ray marks it dead after its health checks fail."""
        self._check_index(index)
        _end(list(self._node_processes(index)), grace_s=0)

    def restart_node(self, index: int) -> None:
        """Start worker node `index` again on its address (fresh ports) and wait until it is alive."""
        self._check_index(index)
        if self.node_pids(index):
            raise EngineError(f"node {self.ips[index]} is still running: kill_node({index}) first")
        before = frozenset(node.node_id for node in self.nodes() if node.ip == self.ips[index])
        self._start_node(index)
        self._wait_alive(ignore=before)


def _end(processes: list[psutil.Process], *, grace_s: float) -> None:
    """SIGTERM (or SIGKILL at once when `grace_s` is 0), then SIGKILL what is left, and wait for all."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate() if grace_s else process.kill()
    _, alive = psutil.wait_procs(processes, timeout=grace_s or 10.0)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10.0)


def _tail(log: Path, lines: int = 3) -> str:
    if not log.exists():
        return "no log"
    text = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:]) or "empty log"
