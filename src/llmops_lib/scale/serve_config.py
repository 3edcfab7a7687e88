"""The Serve config of the llama-server app, checked offline, deployed over Ray's REST API.

`serve_config()` is the one description of the app: what `serve deploy` takes and what a KubeRay
`RayService` holds as `serveConfigV2`. It carries the engine spec's fields, not a finished argv: each
replica builds its argv with `LlamaServer(spec).command(port)`, as the local engine does. Ray's own
schema accepts unknown keys silently (a misspelt `num_replica` deploys one replica), so
`check_serve_config()` adds an unknown-key check. `deploy()` uses the dashboard's REST API, the path
`serve deploy` and KubeRay take, and waits until every replica runs.

Explained in: book/chapters/10_scale/beyond_one_machine.ipynb
"""

from __future__ import annotations

import time
import types
import typing
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import EngineError, SpecError

#: the app builder Serve imports in every replica
IMPORT_PATH = "llmops_lib.scale.serve_app:build_app"
#: the deployment's name inside the app
DEPLOYMENT = "llama_server"
#: response header of every proxied answer: "<node-ip>/<replica-id>"
SERVED_BY = "x-served-by"
#: Serve asks each replica this often whether its engine answers; 3 failures in a row replace it
HEALTH_CHECK_PERIOD_S = 2.0
HEALTH_CHECK_TIMEOUT_S = 10.0
APPLICATIONS_API = "/api/serve/applications/"


class Autoscaling(BaseModel):
    """Replicas follow the requests in flight: about `target_ongoing_requests` per replica, up after
    `upscale_delay_s` of more, down after `downscale_delay_s` of fewer (Ray's `autoscaling_config`)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(1, gt=0)
    upscale_delay_s: float = Field(2, ge=0)
    downscale_delay_s: float = Field(20, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


def serve_config(
    spec: EngineSpec,
    *,
    name: str = "llm",
    replicas: int = 2,
    autoscaling: Autoscaling | None = None,
    num_cpus: float = 1,
    max_ongoing_requests: int = 4,
    http_host: str = "127.0.0.2",
    http_port: int = 8000,
) -> dict:
    """The Serve config of one llama-server app (`replicas` fixed, or `autoscaling` instead).

    The proxy runs on the head only: on one machine every node's proxy would bind the same host and
    port. Spreading over nodes needs `RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=0` in the proxy's
    environment (`LocalRayCluster.env`), which no Serve config can set.

    Raises:
        SpecError: fewer than one replica, CPU or request in flight.
    """
    for field, value in (
        ("replicas", replicas),
        ("num_cpus", num_cpus),
        ("max_ongoing_requests", max_ongoing_requests),
    ):
        if value <= 0:
            raise SpecError(f"serve_config: {field} must be positive, got {value}")
    deployment: dict[str, Any] = {"name": DEPLOYMENT}
    if autoscaling is None:
        deployment["num_replicas"] = replicas
    else:
        deployment["autoscaling_config"] = autoscaling.model_dump()
    deployment |= {
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": num_cpus},
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
    }
    app = {
        "name": name,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": {"spec": spec.as_dict()},
        "deployments": [deployment],
    }
    return {"proxy_location": "HeadOnly", "http_options": {"host": http_host, "port": http_port}, "applications": [app]}


def check_serve_config(config: dict) -> list[str]:
    """Problems of a Serve config, one line each ([] when valid): Ray's `ServeDeploySchema`, every key
    that schema does not know (it ignores them: a misspelt option would silently take its default),
    and options Ray keeps as a plain mapping until deploy time (`autoscaling_config`) against their model."""
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(config, dict):
        return [f"a Serve config is a mapping, got {type(config).__name__}"]
    problems = _nested_problems(config, ServeDeploySchema, "")
    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        problems += [_problem(error, "") for error in exc.errors()]
    return problems


def _problem(error: dict, where: str) -> str:
    path = where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    return f"{path.lstrip('.') or '<root>'}: {error['msg']}"


def _nested_problems(value: object, model: type[BaseModel], where: str) -> list[str]:
    """Keys of `value` (a mapping meant for `model`) that `model` has no field for, in nested models too;
    a nested mapping the schema would take as a plain dict is validated against its model as well."""
    if not isinstance(value, dict):
        return []
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    problems = [f"{where or '<root>'}: unknown key {key!r}" for key in value if key not in fields]
    for key, info in fields.items():
        nested, is_list, loose = _model_in(info.annotation)
        if nested is None or key not in value:
            continue
        inner = f"{where}.{key}" if where else key
        items = enumerate(value[key]) if is_list and isinstance(value[key], list) else [(None, value[key])]
        for index, item in items:
            at = inner if index is None else f"{inner}[{index}]"
            problems += _nested_problems(item, nested, at)
            if loose and isinstance(item, dict):
                try:
                    nested.model_validate(item)
                except ValidationError as exc:
                    problems += [_problem(error, at) for error in exc.errors()]
    return problems


def _model_in(annotation: object) -> tuple[type[BaseModel] | None, bool, bool]:
    """The pydantic model a field holds (through Optional, Union, List), whether in a list, and whether
    the field takes a plain dict instead (then the schema does not check it against the model)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False, False
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List):  # noqa: UP006 (Ray's schema annotates with typing.List)
        return _model_in(typing.get_args(annotation)[0])[0], True, False
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        loose = any(arg is dict or typing.get_origin(arg) is dict for arg in args)
        for arg in args:
            found, is_list, _ = _model_in(arg)
            if found is not None:
                return found, is_list, loose
    return None, False, False


class HasDashboard(Protocol):
    dashboard_url: str


@dataclass(frozen=True)
class Replica:
    """One replica as Serve reports it; `pid` is its actor's process, the parent of its llama-server."""

    replica_id: str
    node_ip: str
    state: str
    pid: int


def _serve_details(cluster: HasDashboard) -> dict:
    try:
        response = httpx.get(cluster.dashboard_url + APPLICATIONS_API, timeout=30)
    except httpx.HTTPError as exc:
        raise EngineError(
            f"Ray's dashboard at {cluster.dashboard_url} did not answer ({exc}): is the cluster up?"
        ) from None
    if response.status_code != 200:
        raise EngineError(f"Ray's dashboard answered {response.status_code} for the Serve apps: {response.text[:200]}")
    return response.json()


def deploy(cluster: HasDashboard, config: dict, *, timeout_s: float = 180) -> None:
    """Deploy `config` (as `serve deploy` does) and return once every app in it runs all its replicas.

    Raises:
        SpecError: the config has a problem (`check_serve_config`).
        EngineError: the dashboard refused it, an app failed to deploy, or it was not running in time
            (with Ray's message).
    """
    problems = check_serve_config(config)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpecError(f"the Serve config is invalid: {problems[0]}{more}; fix it as check_serve_config names")
    response = httpx.put(cluster.dashboard_url + APPLICATIONS_API, json=config, timeout=60)
    if response.status_code != 200:
        raise EngineError(f"Ray's dashboard refused the Serve config ({response.status_code}): {response.text[:300]}")
    names = [app["name"] for app in config["applications"]]
    deadline = time.monotonic() + timeout_s
    while True:
        states = {name: app_status(cluster, name) for name in names}
        failed = {n: s for n, s in states.items() if s.get("status") in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            name, state = next(iter(failed.items()))
            raise EngineError(f"Serve app {name!r} is {state['status']}: {_last_line(state.get('message', ''))}")
        if all(_running(state) for state in states.values()):
            return
        if time.monotonic() > deadline:
            waiting = {n: s.get("status", "missing") for n, s in states.items() if not _running(s)}
            raise EngineError(f"Serve apps not running after {timeout_s:.0f} s: {waiting}; see `llmops scale status`")
        time.sleep(1.0)


def _running(app: dict) -> bool:
    """The app is RUNNING and each deployment runs as many replicas as it targets."""
    if app.get("status") != "RUNNING":
        return False
    for deployment in app.get("deployments", {}).values():
        running = [r for r in deployment.get("replicas", []) if r.get("state") == "RUNNING"]
        if len(running) < deployment.get("target_num_replicas", 0):
            return False
    return True


def _last_line(message: str) -> str:
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def undeploy(cluster: HasDashboard, *, timeout_s: float = 60) -> None:
    """Delete every Serve app (their replicas stop their engines) and return once none is left."""
    response = httpx.delete(cluster.dashboard_url + APPLICATIONS_API, timeout=60)
    if response.status_code != 200:
        raise EngineError(f"Ray's dashboard refused to delete the Serve apps ({response.status_code})")
    deadline = time.monotonic() + timeout_s
    while _serve_details(cluster).get("applications"):
        if time.monotonic() > deadline:
            raise EngineError(f"Serve apps still present {timeout_s:.0f} s after deleting them")
        time.sleep(0.5)


def app_status(cluster: HasDashboard, name: str = "llm") -> dict:
    """Ray's details of app `name`: `status`, `message`, `deployments` with their `replicas`; {} if none."""
    return _serve_details(cluster).get("applications", {}).get(name, {})


def replicas(cluster: HasDashboard, name: str = "llm") -> list[Replica]:
    """The replicas of app `name`'s llama-server deployment, whatever their state."""
    deployment = app_status(cluster, name).get("deployments", {}).get(DEPLOYMENT, {})
    return [
        Replica(replica_id=r["replica_id"], node_ip=r.get("node_ip") or "", state=r["state"], pid=r.get("pid") or 0)
        for r in deployment.get("replicas", [])
    ]


def proxy_url(cluster: HasDashboard) -> str:
    """Base URL (no /v1) of Serve's HTTP proxy, as Ray reports it: the gateway's deployment URL."""
    options = _serve_details(cluster).get("http_options") or {}
    if not options.get("host"):
        raise EngineError("Serve is not running on this cluster: deploy an app first")
    return f"http://{options['host']}:{options['port']}"
