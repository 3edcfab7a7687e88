"""The llama-server app on a real two-node Ray cluster: config checked offline, replicas on both nodes,
requests spread, the OpenAI routes proxied, the gateway in front, an engine killed under load."""

from __future__ import annotations

import contextlib
import copy
import json
import time

import httpx
import psutil
import pytest
from pydantic import ValidationError

from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.engines.server import free_port
from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.observe.request_log import RequestLogReader
from llmops_lib.scale import drills
from llmops_lib.scale.serve_config import (
    SERVED_BY,
    Autoscaling,
    check_serve_config,
    deploy,
    proxy_url,
    replicas,
    serve_config,
    undeploy,
)


def _deployment(config: dict) -> dict:
    return config["applications"][0]["deployments"][0]


def _logged(log, count: int, timeout_s: float = 30.0) -> list[dict]:
    """The log's rows once it holds `count` (the gateway writes them in the background)."""
    deadline = time.monotonic() + timeout_s
    with RequestLogReader(log) as reader:
        while len(rows := reader.rows() if reader.exists() else []) < count and time.monotonic() < deadline:
            time.sleep(0.2)
    return rows


def _processes(cluster, name: str) -> list[psutil.Process]:
    """The cluster's processes whose command line mentions `name` (those gone meanwhile left out)."""
    found = []
    for pid in cluster.pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if name in " ".join(process.cmdline()):
                found.append(process)
    return found


# --- offline: the config ------------------------------------------------------------------------------


def test_config_carries_the_spec_and_passes_rays_schema(spec):
    config = serve_config(spec, replicas=3, num_cpus=0.5, http_host="127.0.0.9", http_port=8123)
    assert check_serve_config(config) == []
    app, deployment = config["applications"][0], _deployment(config)
    assert app["import_path"] == "llmops_lib.scale.serve_app:build_app"
    assert (deployment["name"], deployment["num_replicas"], deployment["ray_actor_options"]) == (
        "llama_server",
        3,
        {"num_cpus": 0.5},
    )
    assert config["http_options"] == {"host": "127.0.0.9", "port": 8123}
    # what each replica rebuilds from the config (as JSON, as it travels) runs the local engine's argv
    rebuilt = EngineSpec(**json.loads(json.dumps(app["args"]))["spec"])
    assert LlamaServer(rebuilt).command(4242) == LlamaServer(spec).command(4242)


def test_autoscaling_replaces_a_fixed_count(spec):
    config = serve_config(spec, autoscaling=Autoscaling(min_replicas=1, max_replicas=3, target_ongoing_requests=2))
    deployment = _deployment(config)
    assert "num_replicas" not in deployment
    assert deployment["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 2,
        "downscale_delay_s": 20,
    }
    assert check_serve_config(config) == []
    with pytest.raises(ValidationError, match="above max_replicas"):
        Autoscaling(min_replicas=3, max_replicas=2)


@pytest.mark.parametrize(
    ("where", "key", "value", "fragment"),
    [
        ("deployment", "num_replica", 2, "applications[0].deployments[0]: unknown key 'num_replica'"),
        ("actor", "num_cpu", 1, "applications[0].deployments[0].ray_actor_options: unknown key 'num_cpu'"),
        ("root", "http_option", {}, "<root>: unknown key 'http_option'"),
        ("deployment", "max_ongoing_requests", "four", "max_ongoing_requests: Input should be a valid integer"),
        ("autoscaling", "min_replicas", 5, "must be greater than or equal to min_replicas (5)"),
        ("autoscaling", "max_replica", 5, "autoscaling_config: unknown key 'max_replica'"),
    ],
)
def test_a_broken_config_is_named_and_never_deployed(spec, where, key, value, fragment):
    config = copy.deepcopy(serve_config(spec, autoscaling=Autoscaling(min_replicas=1, max_replicas=2)))
    target = {
        "root": config,
        "deployment": _deployment(config),
        "actor": _deployment(config)["ray_actor_options"],
        "autoscaling": _deployment(config)["autoscaling_config"],
    }[where]
    target[key] = value
    problems = check_serve_config(config)
    assert any(fragment in problem for problem in problems), problems

    class Nowhere:  # deploy refuses before it talks to any cluster
        dashboard_url = "http://127.0.0.1:9"

    with pytest.raises(SpecError, match="the Serve config is invalid"):
        deploy(Nowhere(), config)


def test_bad_arguments_are_refused(spec):
    with pytest.raises(SpecError, match="replicas must be positive, got 0"):
        serve_config(spec, replicas=0)
    assert check_serve_config(["not", "a", "mapping"]) == ["a Serve config is a mapping, got list"]


# --- on the cluster -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_app(ray_cluster, spec):
    """Two replicas of the session spec's llama-server on the session cluster, deleted afterwards."""
    head = ray_cluster.ips[0]
    deploy(ray_cluster, serve_config(spec, replicas=2, http_host=head, http_port=free_port(head)), timeout_s=240)
    try:
        yield ray_cluster
    finally:
        undeploy(ray_cluster)


def test_two_replicas_on_two_nodes_share_the_requests(serve_app):
    running = [r for r in replicas(serve_app) if r.state == "RUNNING"]
    assert sorted(r.node_ip for r in running) == sorted(serve_app.ips)
    # the proxy does not keep requests on its own node (Ray's default would send all 32 to the head's replica)
    proxies = _processes(serve_app, "ProxyActor")
    assert proxies and all(p.environ().get("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING") == "0" for p in proxies)
    traffic = drills.send(proxy_url(serve_app), requests=32, concurrency=4)
    assert traffic.errors == 0, traffic.error_messages
    assert set(traffic.spread) == {f"{r.node_ip}/{r.replica_id}" for r in running}
    assert all(count >= 8 for count in traffic.spread.values()), traffic.spread


def test_the_openai_routes_are_proxied_with_the_replica_named(serve_app):
    url = proxy_url(serve_app)
    names = {f"{r.node_ip}/{r.replica_id}" for r in replicas(serve_app)}
    with httpx.Client(base_url=url, timeout=120) as http:
        body = {"prompt": "Once upon a time", "max_tokens": 4, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [line for line in stream.iter_lines() if line.startswith("data: ")]
            assert stream.headers[SERVED_BY] in names
        assert events[-1] == "data: [DONE]" and len(events) >= 3
        chat = http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        )
        assert chat.json()["object"] == "chat.completion" and chat.headers[SERVED_BY] in names
        models = http.get("/v1/models")
        assert models.status_code == 200 and models.headers[SERVED_BY] in names
        assert http.get("/health").json() == {"status": "ok"}
        assert "llamacpp:prompt_tokens_total" in http.get("/metrics").text


@pytest.fixture(scope="module")
def gateway(serve_app, server, tmp_path_factory):
    """The project's gateway: route `default` = the Ray app (all traffic), fallback a plain llama-server."""
    log = tmp_path_factory.mktemp("scale-gateway") / "requests.sqlite"
    route = Route(
        model="default",
        deployments=[
            Deployment(name="ray", url=proxy_url(serve_app), weight=100),
            Deployment(name="direct", url=server.base_url, weight=0),
        ],
        fallback="direct",
    )
    with GatewayServer(GatewayConfig(routes=[route], request_log=str(log), cache_size=0)) as gw:
        yield gw, log


def test_the_gateway_sends_the_route_through_ray(gateway):
    gw, log = gateway
    traffic = drills.send(gw.base_url, requests=16, concurrency=4)
    assert traffic.errors == 0, traffic.error_messages
    assert traffic.deployments == {"ray": 16}
    rows = _logged(log, 16)
    assert len(rows) == 16 and {(r["deployment"], r["http_status"]) for r in rows} == {("ray", 200)}
    assert sum(r["gen_ai_usage_output_tokens"] for r in rows) == 16 * 16


def test_an_engine_killed_under_gateway_load_costs_no_client_an_answer(gateway, serve_app):
    gw, log = gateway
    drill = drills.kill_engine(serve_app, gw.base_url, requests=24, concurrency=4, after=4, timeout_s=180)
    assert drill.traffic.errors == 0, drill.traffic.error_messages
    assert not psutil.pid_exists(drill.detail["engine_pid"]) or (
        psutil.Process(drill.detail["engine_pid"]).status() == psutil.STATUS_ZOMBIE
    )
    # replaced: two replicas run again, on both nodes, and the killed one is not among them
    rows = _logged(log, 16 + 24)[16:]
    assert {(r["deployment"], r["fallback_from"]) for r in rows} <= {("ray", None), ("direct", "ray")}, rows
    running = [r for r in replicas(serve_app) if r.state == "RUNNING"]
    assert len(running) == 2 and drill.detail["killed"] not in {f"{r.node_ip}/{r.replica_id}" for r in running}
    after = drills.send(gw.base_url, requests=8, concurrency=4)
    assert after.errors == 0 and after.deployments == {"ray": 8}, after.deployments


def test_undeploy_stops_every_engine(serve_app):
    undeploy(serve_app)
    assert replicas(serve_app) == []
    assert _processes(serve_app, "llama-server") == []
