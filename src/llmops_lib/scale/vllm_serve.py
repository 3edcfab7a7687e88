"""vLLM on Ray Serve LLM: the Serve config of `ray.serve.llm:build_openai_app` for an engine spec.

Ray Serve LLM (`ray.serve.llm`) wraps vLLM in Serve replicas behind an OpenAI ingress; it is configured
by `LLMConfig`s, not by an argv. The engine's settings are read from the argv the local vLLM server
runs (`VLLMEngine.command_for`), so one spec drives both and nothing is restated: `--max-num-seqs 4`
becomes `engine_kwargs["max_num_seqs"] = 4`, its `env` settings become the replica's environment.
On CPU each replica's engine gets a placement bundle of `threads` CPUs (Ray Serve LLM then runs vLLM's
multiprocessing executor inside the replica); on GPUs a bundle of one GPU per tensor/pipeline rank,
optionally pinned to an `accelerator_type`. vLLM's CPU platform refuses the Ray executor, so on CPU
"beyond one machine" means data-parallel replicas, never a model split over nodes.

The cluster's Python must have vLLM and `ray[serve]` (never `ray[llm]`, which pulls CUDA vLLM): here
`.venv-vllm`, given as `python=` (Ray's `py_executable`) when the cluster itself runs another Python.

Explained in: book/chapters/10_scale/beyond_one_machine
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmops_lib.engines.spec import EngineSpec
from llmops_lib.engines.vllm import SERVED_MODEL_NAME, VLLMEngine
from llmops_lib.errors import SpecError
from llmops_lib.scale.serve_config import Autoscaling, check_serve_config

#: the app builder of Ray Serve LLM: an OpenAI ingress in front of one LLMServer deployment per model
IMPORT_PATH = "ray.serve.llm:build_openai_app"
#: the name Ray Serve LLM gives the replicas' deployment (the ingress is "OpenAiIngress")
DEPLOYMENT = f"LLMServer:{SERVED_MODEL_NAME}"
#: flags of vLLM's HTTP server, not of its engine: Ray Serve LLM serves HTTP itself and names the model
#: through `model_loading_config` (it refuses `model` and `served_model_name` in engine_kwargs)
SERVER_FLAGS = frozenset({"model", "served_model_name", "host", "port", "disable_uvicorn_access_log"})
#: the switches `VLLMEngine` writes: vLLM takes no value after them (a word there is a stray argument)
SWITCHES = frozenset({"enforce_eager", "enable_prefix_caching", "disable_uvicorn_access_log"})
#: the keys `build_openai_app` reads from its args (Ray's `LLMServingArgs`)
BUILDER_ARGS = frozenset({"llm_configs", "ingress_cls_config", "ingress_deployment_config"})


def engine_settings(spec: EngineSpec, *, gpu: bool = False, kv_cache_bytes: int | None = None) -> dict[str, Any]:
    """What the local vLLM server runs with for `spec`, as Ray Serve LLM takes it: `model_source`
    (the Hugging Face export), `env_vars` and `engine_kwargs` (typed: numbers and JSON as values).

    Raises:
        SpecError: vLLM cannot serve the spec (`check_vllm_spec`), or an `extra_args` item is not a flag.
    """
    argv = VLLMEngine(spec, kv_cache_bytes=kv_cache_bytes).command_for(gpu=gpu)
    module = argv.index("-m")
    env_vars = dict(item.split("=", 1) for item in argv[1 : module - 1])  # "env K=V ... python -m ..."
    flags = argv[module + 2 :]
    kwargs: dict[str, Any] = {}
    while flags:
        flag = flags.pop(0)
        if not flag.startswith("--"):
            raise SpecError(f"vLLM argument {flag!r} follows no flag: write extra_args as '--name', 'value' pairs")
        name, has_value, value = flag[2:].partition("=")
        key = name.replace("-", "_")
        if has_value:
            kwargs[key] = _typed(value)
        elif key.startswith("no_"):
            kwargs[key[3:]] = False
        elif key in SWITCHES:
            kwargs[key] = True
        elif flags and not flags[0].startswith("--"):
            kwargs[key] = _typed(flags.pop(0))
        else:
            kwargs[key] = True
    model_source = str(kwargs["model"])
    return {
        "model_source": model_source,
        "env_vars": env_vars,
        "engine_kwargs": {k: v for k, v in kwargs.items() if k not in SERVER_FLAGS},
    }


def _typed(value: str) -> Any:
    """A flag's value as vLLM's parser would type it: numbers, booleans and JSON objects parsed, words kept."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def llm_config(
    spec: EngineSpec,
    *,
    replicas: int = 2,
    autoscaling: Autoscaling | None = None,
    gpu: bool = False,
    accelerator_type: str | None = None,
    kv_cache_bytes: int | None = None,
    model_source: str | Path | None = None,
) -> dict[str, Any]:
    """One `LLMConfig` (as a plain dict) serving `spec` under the name `SERVED_MODEL_NAME`.

    Args:
        replicas: fixed replica count, unless `autoscaling` is given.
        gpu: GPU bundles (one GPU per tensor x pipeline rank) instead of `spec.threads` CPUs per replica.
        accelerator_type: a Ray accelerator type ("L4", "A10G", "H100", ...); implies `gpu`.
        kv_cache_bytes: KV-cache memory per replica (CPU default: `vllm.DEFAULT_KV_CACHE_BYTES`).
        model_source: where the nodes find the Hugging Face export (default: this machine's export folder;
            a path in the image, a `pvc://` or `s3://` URI on Kubernetes).

    Raises:
        SpecError: vLLM cannot serve the spec, fewer than one replica, or an accelerator type without a GPU.
    """
    if replicas < 1:
        raise SpecError(f"llm_config: replicas must be at least 1, got {replicas}")
    gpu = gpu or accelerator_type is not None
    settings = engine_settings(spec, gpu=gpu, kv_cache_bytes=kv_cache_bytes)
    deployment: dict[str, Any] = (
        {"num_replicas": replicas} if autoscaling is None else {"autoscaling_config": autoscaling.model_dump()}
    )
    config: dict[str, Any] = {
        "model_loading_config": {
            "model_id": SERVED_MODEL_NAME,
            "model_source": str(model_source or settings["model_source"]),
        },
        "engine_kwargs": settings["engine_kwargs"],
        "deployment_config": deployment,
        "placement_group_config": {"bundle_per_worker": {"GPU": 1} if gpu else {"CPU": spec.threads}},
        "runtime_env": {"env_vars": settings["env_vars"]},
    }
    if accelerator_type is not None:
        config["accelerator_type"] = accelerator_type
    return config


def vllm_serve_config(
    spec: EngineSpec,
    *,
    name: str = "vllm",
    replicas: int = 2,
    autoscaling: Autoscaling | None = None,
    gpu: bool = False,
    accelerator_type: str | None = None,
    kv_cache_bytes: int | None = None,
    model_source: str | Path | None = None,
    python: Path | None = None,
    http_host: str = "127.0.0.2",
    http_port: int = 8000,
) -> dict[str, Any]:
    """The Serve config (for `serve deploy`, `scale.serve_config.deploy` or a RayService's `serveConfigV2`)
    of one Ray Serve LLM app serving `spec`; the arguments are `llm_config`'s, and:

    Args:
        python: the Python every process of the app runs (Ray's `py_executable`), when the cluster's own
            has no vLLM; same Ray version on both sides. None: the cluster's.
        http_host, http_port: Serve's HTTP proxy, on the head node only (as `serve_config`).
    """
    app: dict[str, Any] = {
        "name": name,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": {
            "llm_configs": [
                llm_config(
                    spec,
                    replicas=replicas,
                    autoscaling=autoscaling,
                    gpu=gpu,
                    accelerator_type=accelerator_type,
                    kv_cache_bytes=kv_cache_bytes,
                    model_source=model_source,
                )
            ]
        },
    }
    if python is not None:
        app["runtime_env"] = {"py_executable": str(python)}
    return {"proxy_location": "HeadOnly", "http_options": {"host": http_host, "port": http_port}, "applications": [app]}


def check_vllm_serve_config(config: dict) -> list[str]:
    """Problems of a Ray Serve LLM config, one line each ([] when valid): Serve's own check
    (`check_serve_config`), then each app's builder args against Ray Serve LLM's `LLMConfig`, which
    refuses unknown keys, a GPU accelerator type on CPU bundles, and bad deployment options."""
    problems = check_serve_config(config)
    for index, app in enumerate(config.get("applications") or []):
        if not isinstance(app, dict) or app.get("import_path") != IMPORT_PATH:
            continue
        where = f"applications[{index}].args"
        args = app.get("args") or {}
        problems += [f"{where}: unknown key {key!r}" for key in args if key not in BUILDER_ARGS]
        configs = args.get("llm_configs")
        if not isinstance(configs, list) or not configs:
            problems.append(f"{where}.llm_configs: a list of at least one LLMConfig is required")
            continue
        for position, item in enumerate(configs):
            problems += [f"{where}.llm_configs[{position}]: {line}" for line in _llm_config_problems(item)]
    return problems


def _llm_config_problems(item: object) -> list[str]:
    # Ray Serve LLM's config model, without importing vLLM (its public module `ray.serve.llm` needs it);
    # Ray warns once that torch and transformers are missing, which does not concern validation.
    logging.getLogger("ray.llm").setLevel(logging.ERROR)
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    try:
        LLMConfig.model_validate(item)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return []
