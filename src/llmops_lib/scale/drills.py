"""Drills on a local Ray cluster serving llama-server replicas: send traffic and count which replica answered
(the `x-served-by` header), wait for replicas, kill one replica's engine or a whole worker node under load and
time the recovery, watch autoscaling add a replica.

Each drill returns what it measured (errors, seconds, shares) and judges nothing: the tests, the `scale_out`
runbook and `benchmarks/scale_out.py` hold the limits. Traffic goes through threads, as in `bench.load`: each
request is one blocking call and the threads wait, not work. Requests are non-streaming completions with
`ignore_eos`, so every answer carries exactly `max_tokens` output tokens and the headers of the replica (from
Ray's proxy) or of the deployment (from the gateway) that served it.

Explained in: book/chapters/10_scale/beyond_one_machine
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING

import httpx
import psutil

from llmops_lib.errors import EngineError, SpecError
from llmops_lib.scale.serve_config import SERVED_BY, Replica, replicas

if TYPE_CHECKING:
    from llmops_lib.scale.cluster import LocalRayCluster

DEPLOYMENT = "x-llmops-deployment"  # set by the gateway: the deployment of the route that answered
PROMPTS = ("The capital of France is", "Once upon a time", "def fibonacci(n):", "The three laws of motion are")
POLL_S = 0.5


@dataclass(frozen=True)
class Reply:
    """One request's outcome; `sent_at` and `done_at` are `time.monotonic()` readings, comparable with a drill's."""

    sent_at: float
    done_at: float
    status: int  # 0: no complete answer (connection refused or reset, timeout, a body cut short)
    served_by: str | None = None
    deployment: str | None = None
    output_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency_s(self) -> float:
        return self.done_at - self.sent_at

    @property
    def node(self) -> str | None:
        """The node address of the replica that answered."""
        return self.served_by.split("/", 1)[0] if self.served_by else None


@dataclass(frozen=True)
class Traffic:
    """Every reply of a run of requests, in the order they finished."""

    replies: tuple[Reply, ...]

    @property
    def errors(self) -> int:
        """Requests the client saw fail (any status but 200, or no answer)."""
        return sum(not r.ok for r in self.replies)

    @property
    def error_messages(self) -> Counter[str]:
        return Counter(r.error or f"HTTP {r.status}" for r in self.replies if not r.ok)

    @property
    def spread(self) -> Counter[str]:
        """Answered requests by replica (`node-ip/replica-id`)."""
        return Counter(r.served_by for r in self.replies if r.ok and r.served_by)

    @property
    def nodes(self) -> Counter[str]:
        """Answered requests by node address."""
        return Counter(r.node for r in self.replies if r.ok and r.node)

    @property
    def deployments(self) -> Counter[str]:
        """Answered requests by the gateway deployment that served them."""
        return Counter(r.deployment for r in self.replies if r.ok and r.deployment)

    def shares(self) -> dict[str, float]:
        """Each replica's share of the requests that carried `x-served-by`."""
        total = sum(self.spread.values())
        return {replica: count / total for replica, count in sorted(self.spread.items())} if total else {}

    def min_share(self, replicas: int) -> float:
        """The smallest share among `replicas` expected replicas (0 when fewer answered)."""
        shares = self.shares()
        return min(shares.values()) if len(shares) >= replicas else 0.0

    def sent_after(self, moment: float) -> Traffic:
        """The replies of requests sent at or after `moment` (a `time.monotonic()` reading)."""
        return Traffic(tuple(r for r in self.replies if r.sent_at >= moment))

    @property
    def duration_s(self) -> float:
        return max(r.done_at for r in self.replies) - min(r.sent_at for r in self.replies) if self.replies else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens of the answered requests over the run's wall time."""
        return sum(r.output_tokens for r in self.replies if r.ok) / self.duration_s if self.duration_s else 0.0

    @property
    def median_latency_s(self) -> float:
        return median(r.latency_s for r in self.replies if r.ok)


def _request(http: httpx.Client, index: int, model: str, max_tokens: int) -> Reply:
    body = {
        "model": model,
        "prompt": PROMPTS[index % len(PROMPTS)],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    sent = time.monotonic()
    try:
        response = http.post("/v1/completions", json=body)
        done = time.monotonic()
        if response.status_code != 200:
            error = f"HTTP {response.status_code}: {response.text[:200]}"
            return Reply(sent, done, response.status_code, response.headers.get(SERVED_BY), error=error)
        tokens = int(response.json()["usage"]["completion_tokens"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:  # a measured outcome, never a crash
        return Reply(sent, time.monotonic(), 0, error=f"{type(exc).__name__}: {exc}")
    headers = response.headers
    return Reply(sent, done, 200, headers.get(SERVED_BY), headers.get(DEPLOYMENT), tokens)


class Load:
    """Requests sent in the background, `concurrency` in flight, until `requests` are sent or `stop()`.

    `with Load(url, requests=64, concurrency=4) as load: ...; traffic = load.result()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        requests: int,
        concurrency: int,
        model: str = "default",
        max_tokens: int = 16,
        timeout_s: float = 120.0,
    ) -> None:
        if requests < 1 or concurrency < 1 or max_tokens < 1:
            raise SpecError(
                f"requests, concurrency and max_tokens must be at least 1, got {requests}, {concurrency}, {max_tokens}"
            )
        self.base_url, self.requests, self.concurrency = base_url.rstrip("/"), requests, concurrency
        self.model, self.max_tokens, self.timeout_s = model, max_tokens, timeout_s
        self.replies: list[Reply] = []  # appended as requests finish (list.append is atomic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-load", daemon=True)

    def _run(self) -> None:
        slots = threading.BoundedSemaphore(self.concurrency)
        timeout = httpx.Timeout(self.timeout_s, connect=5.0)
        limits = httpx.Limits(max_connections=self.concurrency)
        with (
            httpx.Client(base_url=self.base_url, timeout=timeout, limits=limits) as http,
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="drill") as pool,
        ):
            for index in range(self.requests):
                slots.acquire()
                if self._stop.is_set():
                    break
                future = pool.submit(_request, http, index, self.model, self.max_tokens)
                future.add_done_callback(lambda f: (self.replies.append(f.result()), slots.release()))

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send no more requests (those in flight finish and count)."""
        self._stop.set()

    def wait_for(self, replies: int, *, timeout_s: float = 300.0) -> None:
        """Block until at least `replies` requests have finished (or the load is over)."""
        deadline = time.monotonic() + timeout_s
        while len(self.replies) < replies and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise EngineError(f"only {len(self.replies)} of {replies} requests finished in {timeout_s:.0f} s")
            time.sleep(0.05)

    def result(self) -> Traffic:
        """Wait for every request sent and return them all."""
        self._thread.join()
        return Traffic(tuple(self.replies))

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._thread.join()


def send(base_url: str, *, requests: int, concurrency: int, **options: object) -> Traffic:
    """Send `requests` completions with `concurrency` in flight and wait for all (options: see `Load`)."""
    with Load(base_url, requests=requests, concurrency=concurrency, **options) as load:
        return load.result()


# --- replicas ------------------------------------------------------------------------------------


def served_by(replica: Replica) -> str:
    """What the replica writes in `x-served-by`."""
    return f"{replica.node_ip}/{replica.replica_id}"


def running(cluster: LocalRayCluster, app: str = "llm") -> list[Replica]:
    """The replicas of `app` that Serve routes to now."""
    return [r for r in replicas(cluster, app) if r.state == "RUNNING"]


def wait_for_replicas(
    cluster: LocalRayCluster,
    count: int,
    *,
    app: str = "llm",
    distinct_nodes: bool = False,
    exclude: Iterable[str] = (),
    timeout_s: float = 180.0,
) -> float:
    """Seconds until `app` has at least `count` RUNNING replicas (on `count` node addresses with
    `distinct_nodes`; `exclude`: replica ids that do not count, e.g. one whose engine was killed).

    Raises:
        EngineError: not within `timeout_s`, with the replicas last seen.
    """
    excluded = set(exclude)

    def enough() -> bool:
        seen = [r for r in running(cluster, app) if r.replica_id not in excluded]
        return len({r.node_ip for r in seen} if distinct_nodes else seen) >= count

    waited = _wait_until(enough, timeout_s)
    if waited is None:
        where = " on distinct nodes" if distinct_nodes else ""
        raise EngineError(
            f"app {app!r} did not reach {count} running replicas{where} in {timeout_s:.0f} s; last seen: "
            f"{[(served_by(r), r.state) for r in replicas(cluster, app)]}; see the Serve logs under {cluster.temp_dir}"
        )
    return waited


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until `condition()` holds, or None after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(POLL_S)
    return None


# --- drills --------------------------------------------------------------------------------------


@dataclass
class Drill:
    """What a drill measured: the traffic that ran through it and named seconds (None: did not happen in time)."""

    traffic: Traffic
    seconds: dict[str, float | None] = field(default_factory=dict)
    detail: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        t = self.traffic
        return {
            "requests": len(t.replies),
            "errors": t.errors,
            "error_messages": dict(t.error_messages),
            "deployments": dict(t.deployments),
            "spread": dict(t.spread),
            "seconds": {k: None if v is None else round(v, 2) for k, v in self.seconds.items()},
        } | self.detail


def engine_pid(replica: Replica) -> int:
    """The llama-server process the replica owns (a child of the replica's actor process)."""
    if replica.pid <= 0:
        raise EngineError(f"Serve reports no process id for replica {served_by(replica)}")
    children = [p for p in psutil.Process(replica.pid).children(recursive=True) if "llama-server" in p.name()]
    if len(children) != 1:
        raise EngineError(f"replica {served_by(replica)} owns {len(children)} llama-server processes, expected 1")
    return children[0].pid


def kill_engine(
    cluster: LocalRayCluster,
    gateway_url: str,
    *,
    app: str = "llm",
    replicas_expected: int = 2,
    requests: int = 48,
    concurrency: int = 4,
    after: int = 4,
    timeout_s: float = 180.0,
) -> Drill:
    """Under load through the gateway, SIGKILL the llama-server inside one replica (after `after` answers).

    Seconds: `replaced` from the kill until `replicas_expected` replicas other than the killed one run.
    Detail: the killed replica. The gateway's fallback answers what the dead engine could not.
    """
    with Load(gateway_url, requests=requests, concurrency=concurrency) as load:
        load.wait_for(after)
        victim = running(cluster, app)[0]
        pid = engine_pid(victim)
        psutil.Process(pid).send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for_replicas(cluster, replicas_expected, app=app, exclude=[victim.replica_id], timeout_s=timeout_s)
        replaced = time.monotonic() - killed_at
        traffic = load.result()
    return Drill(traffic, {"replaced": replaced}, {"killed": served_by(victim), "engine_pid": pid})


def kill_node(
    cluster: LocalRayCluster,
    gateway_url: str,
    *,
    index: int = 1,
    app: str = "llm",
    replicas_expected: int = 2,
    requests: int = 48,
    concurrency: int = 4,
    after: int = 4,
    timeout_s: float = 180.0,
) -> Drill:
    """Under load through the gateway, kill worker node `index` (all its processes), then bring it back.

    Seconds: `noticed` from the kill until Serve runs fewer than `replicas_expected` replicas (None if not
    within the load), `rejoin` the node's restart, `restored` from the restart until `replicas_expected`
    replicas run on as many node addresses again (capacity back), none of them one the killed node ran.
    """
    seconds: dict[str, float | None] = {}
    node_ip = cluster.nodes()[index].ip
    with Load(gateway_url, requests=requests, concurrency=concurrency) as load:
        load.wait_for(after)
        before = running(cluster, app)
        cluster.kill_node(index)
        killed_at = time.monotonic()
        seconds["noticed"] = _wait_until(lambda: len(running(cluster, app)) < replicas_expected, timeout_s=60.0)
        traffic = load.result()
    restart = time.monotonic()
    try:
        cluster.restart_node(index)
    except EngineError:  # `ray start` gives a raylet 30 s to register: on a loaded machine, try once more
        cluster.kill_node(index)
        cluster.restart_node(index)
    seconds["rejoin"] = time.monotonic() - restart
    lost = [r.replica_id for r in before if r.node_ip == node_ip]
    seconds["restored"] = seconds["rejoin"] + wait_for_replicas(
        cluster, replicas_expected, app=app, distinct_nodes=True, exclude=lost, timeout_s=timeout_s
    )
    seconds["kill_to_restored"] = time.monotonic() - killed_at
    return Drill(traffic, seconds, {"node": node_ip, "replicas_before": [served_by(r) for r in before]})


def autoscale(
    cluster: LocalRayCluster,
    proxy: str,
    *,
    app: str = "llm",
    to: int = 2,
    concurrency: int = 4,
    rest: int = 24,
    timeout_s: float = 120.0,
) -> Drill:
    """Load Ray's proxy at `concurrency` until the app runs `to` replicas, then `rest` more requests.

    Seconds: `scaled` from the load's start until `to` replicas run. Detail: the replicas before and after,
    and `new_share`, the share of the new replicas among the requests sent once they ran (None: no scale-up).
    """
    before = {served_by(r) for r in running(cluster, app)}
    with Load(proxy, requests=1_000_000, concurrency=concurrency) as load:
        scaled = _wait_until(lambda: len(running(cluster, app)) >= to, timeout_s)
        scaled_at = time.monotonic()
        if scaled is not None:
            _wait_until(lambda: sum(r.sent_at >= scaled_at for r in load.replies) >= rest, timeout_s)
        load.stop()
        traffic = load.result()
    after = {served_by(r) for r in running(cluster, app)}
    rest_traffic = traffic.sent_after(scaled_at)
    new = after - before
    answered = sum(rest_traffic.spread.values())
    share = sum(rest_traffic.spread[r] for r in new) / answered if scaled is not None and answered else None
    return Drill(
        traffic,
        {"scaled": scaled},
        {"before": sorted(before), "after": sorted(after), "new_share": share, "rest": len(rest_traffic.replies)},
    )
