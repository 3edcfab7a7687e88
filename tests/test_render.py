"""Kubernetes manifests rendered from our own specs: every target validates offline, the containers run the
local engine's argv, canary.yaml becomes Argo's steps, the RayService holds the Serve config run locally."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llmops_lib.cli import app
from llmops_lib.engines.llamacpp import LlamaServer
from llmops_lib.engines.vllm import VLLMEngine
from llmops_lib.errors import SpecError
from llmops_lib.gateway.config import load_config
from llmops_lib.release.rollout import MetricSpec, load_rollout
from llmops_lib.scale.argo_analysis import prometheus_metric
from llmops_lib.scale.render import TARGETS, VLLM_VERSION, render, render_all
from llmops_lib.scale.serve_config import check_serve_config, serve_config
from llmops_lib.scale.validate import validate_manifests

ROOT = Path(__file__).resolve().parents[1]
CANARY = ROOT / "deploy" / "rollouts" / "canary.yaml"
GATEWAY = ROOT / "deploy" / "gateway.example.yaml"
GGUF_IN_POD = "/models/gemma-3-270m-q4_k_m.gguf"
#: vLLM flags of its HTTP server (a runtime with its own server takes the others), with their value counts
VLLM_SERVER_FLAGS = {
    "--model": 1,
    "--served-model-name": 1,
    "--host": 1,
    "--port": 1,
    "--disable-uvicorn-access-log": 0,
}


@pytest.fixture(scope="module")
def inputs(spec):
    return {"spec": spec, "gateway": load_config(GATEWAY), "rollout": load_rollout(CANARY)}


@pytest.fixture(scope="module")
def rendered(inputs):
    every = render_all(**inputs)
    every["deployment-vllm"] = render("deployment", engine="vllm", **inputs)
    every["argo-rollout-vllm-gpu"] = render("argo-rollout", engine="vllm", gpu=True, **inputs)
    return every


@pytest.fixture(scope="module")
def vllm_argv(spec):
    """The local vLLM server's command, split: env assignments, the module it runs, its flags."""
    argv = VLLMEngine(spec).command_for(gpu=False, port=8000)
    module = argv.index("-m")
    return argv[1 : module - 1], argv[module + 1], argv[module + 2 :]


def _in_pod(args, local_model, pod_model):
    return ["0.0.0.0" if a == "127.0.0.1" else pod_model if a == local_model else a for a in args]


def _without_server_flags(args):
    kept, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg in VLLM_SERVER_FLAGS:
            skip = VLLM_SERVER_FLAGS[arg]
        else:
            kept.append(arg)
    return kept


def _containers(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "Rollout"):
        return doc["spec"]["template"]["spec"]["containers"]
    if kind == "LLMInferenceService":
        return doc["spec"]["template"]["containers"]
    return []


def test_every_target_renders_and_validates(rendered):
    kinds = {target: [doc.get("kind") for doc in docs] for target, docs in rendered.items()}
    assert kinds == {
        "deployment": ["Deployment", "Service", "Deployment", "Service"],  # the route's stable and canary
        "rayservice": ["RayService"],
        "kserve-isvc": ["InferenceService"],
        "kserve-llmisvc": ["LLMInferenceService", "LLMInferenceService"],
        "argo-rollout": ["Rollout", "AnalysisTemplate", "Service", "Service", "HTTPRoute"],
        "httproute": ["HTTPRoute"],
        "inferencepool": ["InferencePool", "HTTPRoute"],
        "production-stack": [None],  # the chart's values, not an object
        "deployment-vllm": ["Deployment", "Service", "Deployment", "Service"],
        "argo-rollout-vllm-gpu": ["Rollout", "AnalysisTemplate", "Service", "Service", "HTTPRoute"],
    }
    for target, docs in rendered.items():
        if target != "production-stack":
            assert [str(p) for p in validate_manifests(docs, source=target)] == [], target


def test_container_args_are_the_local_engines_argv(rendered, spec, vllm_argv):
    llama = _in_pod(LlamaServer(spec).command(8080)[1:], str(spec.model), GGUF_IN_POD)
    assert "--host" in llama and "0.0.0.0" in llama and GGUF_IN_POD in llama
    env, module, flags = vllm_argv
    hf_dir = flags[flags.index("--model") + 1]
    vllm = _in_pod(flags, hf_dir, f"/models/{Path(hf_dir).name}")
    env_in_pod = [{"name": a.split("=")[0], "value": a.split("=")[1]} for a in env]
    checked = 0
    for target, docs in rendered.items():
        for doc in docs:
            for container in _containers(doc):
                checked += 1
                if container["name"] == "llama-server":
                    assert (container["command"], container["args"]) == (["/app/llama-server"], llama), target
                elif container["name"] == "vllm" and target.endswith("gpu"):
                    gpu = VLLMEngine(spec).command_for(gpu=True, port=8000)
                    gpu_flags = gpu[gpu.index("-m") + 2 :]
                    assert container["args"] == _in_pod(gpu_flags, hf_dir, f"/models/{Path(hf_dir).name}")
                    assert "--enforce-eager" not in container["args"]
                    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
                elif container["name"] == "vllm":
                    assert container["command"] == ["python3", "-m", module] and container["args"] == vllm
                    assert container["env"] == env_in_pod
                else:  # KServe's LLMInferenceService brings vLLM's server: our engine flags only
                    assert container["args"] == _without_server_flags(vllm), target
    assert checked == 2 + 1 + 2 + 2 + 1  # deployments, rollout, LLMISVCs, vLLM deployments, GPU rollout
    isvc = rendered["kserve-isvc"][0]["spec"]["predictor"]["model"]
    assert isvc["args"] == ["--model_name=gemma", "--backend=vllm", *_without_server_flags(vllm)]
    assert isvc["storageUri"] == f"pvc://llmops-models/{Path(hf_dir).name}"


def test_canary_yaml_becomes_argo_steps_and_analysis(rendered):
    rollout, template, stable, canary, route = rendered["argo-rollout"]
    strategy = rollout["spec"]["strategy"]["canary"]
    assert strategy["steps"] == [
        {"setWeight": 10},
        {"pause": {"duration": "120s"}},
        {"setWeight": 30},
        {"pause": {"duration": "120s"}},
        {"setWeight": 60},
        {"pause": {"duration": "120s"}},
        {"pause": {}},
    ]
    assert (strategy["stableService"], strategy["canaryService"]) == ("gemma-stable", "gemma-canary")
    assert (stable["metadata"]["name"], canary["metadata"]["name"]) == ("gemma-stable", "gemma-canary")
    assert strategy["trafficRouting"]["plugins"] == {
        "argoproj-labs/gatewayAPI": {"httpRoute": "gemma", "namespace": "llmops"}
    }
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("gemma-stable", 100),
        ("gemma-canary", 0),
    ]
    assert strategy["analysis"] == {"templates": [{"templateName": "gemma-canary"}]}
    error_rate, latency = template["spec"]["metrics"]
    assert (error_rate["name"], error_rate["interval"], error_rate["failureLimit"]) == ("error-rate", "30s", 1)
    assert error_rate["successCondition"] == "len(result) > 0 && (result[0] <= 0.01)"
    assert error_rate["failureCondition"] == "len(result) > 0 && (result[0] > 0.05)"
    query = error_rate["provider"]["prometheus"]["query"]
    assert 'llmops_gateway_requests_total{model="gemma",deployment="canary",status=~"[4-5].."}[30s]' in query
    assert query.endswith(">= 5)")  # minSamples: 5
    assert (latency["name"], latency["failureLimit"], latency["successCondition"]) == (
        "p95-latency",
        2,
        "result[0] == 1",
    )
    query = latency["provider"]["prometheus"]["query"]
    for side in ("canary", "stable"):
        assert f'llmops_gateway_e2e_seconds_bucket{{model="gemma",deployment="{side}"}}[30s]' in query
    assert "<= bool" in query and "* 1.5" in query
    assert template["metadata"]["annotations"]["llmops/not-rendered"].startswith("perplexity (evaluation")


def test_llmisvc_canary_is_one_route_group_with_the_first_weights(rendered):
    stable, canary = rendered["kserve-llmisvc"]
    assert [(d["metadata"]["name"], d["spec"]["router"]["route"]) for d in (stable, canary)] == [
        ("gemma-stable", {"group": "gemma-canary", "weight": 90}),
        ("gemma-canary", {"group": "gemma-canary", "weight": 10}),
    ]


def test_rayservice_holds_the_serve_config_run_locally(rendered, spec):
    service = rendered["rayservice"][0]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    expected = serve_config(spec, replicas=2, http_host="0.0.0.0")
    expected["applications"][0]["args"]["spec"]["model"] = GGUF_IN_POD
    assert config == expected and check_serve_config(config) == []
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "value": "0"} in head["env"]


def test_production_stack_values(rendered, vllm_argv):
    values = rendered["production-stack"][0]
    (model,) = values["servingEngineSpec"]["modelSpec"]
    _, _, flags = vllm_argv
    hf_dir = Path(flags[flags.index("--model") + 1]).name
    setup = (ROOT / "scripts" / "setup_vllm.sh").read_text()
    assert re.search(r"^VLLM_VERSION=(\S+)$", setup, re.M).group(1) == VLLM_VERSION
    assert (model["name"], model["tag"], model["modelURL"], model["replicaCount"]) == (
        "gemma",
        f"v{VLLM_VERSION}",
        f"/models/{hf_dir}",
        2,
    )
    # the chart writes `vllm serve <modelURL> --host --port` and the prefix-caching flag itself
    assert model["vllmConfig"]["enablePrefixCaching"] is True
    assert model["vllmConfig"]["extraArgs"] == [
        a for a in _without_server_flags(flags) if a != "--enable-prefix-caching"
    ]
    assert values["routerSpec"] == {"routingLogic": "roundrobin"}


def test_bad_input_is_refused(inputs):
    spec, gateway, rollout = inputs["spec"], inputs["gateway"], inputs["rollout"]
    with pytest.raises(SpecError, match="unknown target 'helm'"):
        render("helm", spec=spec)
    with pytest.raises(SpecError, match="--target kserve-isvc runs vllm, not llama-server"):
        render("kserve-isvc", spec=spec)
    with pytest.raises(SpecError, match="--target argo-rollout needs a rollout spec"):
        render("argo-rollout", spec=spec, gateway=gateway)
    with pytest.raises(SpecError, match="--gpu renders vLLM's GPU command"):
        render("deployment", spec=spec, gpu=True)
    other = load_rollout({**rollout.to_dict(), "model": "llama"})
    with pytest.raises(SpecError, match="model 'llama', not a route of the gateway"):
        render("httproute", spec=spec, gateway=gateway, rollout=other)


def test_cli_render_then_validate(tmp_path, spec):
    runner = CliRunner()
    out = tmp_path / "k8s"
    files = ["--rollout", str(CANARY), "--gateway-config", str(GATEWAY), "--model", str(spec.model)]
    done = runner.invoke(app, ["render", "--target", "all", *files, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in out.glob("*.yaml")) == sorted(f"{t}.yaml" for t in TARGETS if t != "production-stack")
    assert (out / "production-stack" / "values.yaml").is_file()
    valid = runner.invoke(app, ["validate", *map(str, sorted(out.glob("*.yaml")))])
    assert valid.exit_code == 0 and valid.stdout.startswith("valid: 16 documents in 7 files"), valid.output

    printed = runner.invoke(app, ["render", "--target", "httproute", "--gateway-config", str(GATEWAY)])
    assert printed.exit_code == 0 and [d["kind"] for d in yaml.safe_load_all(printed.stdout)] == ["HTTPRoute"]

    broken = tmp_path / "broken.yaml"
    broken.write_text((out / "argo-rollout.yaml").read_text().replace("setWeight: 30", "setWeight: thirty"))
    refused = runner.invoke(app, ["validate", str(broken)])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"error: {broken}#1 Rollout/gemma: spec.strategy.canary.steps[2]")

    unknown = runner.invoke(app, ["render", "--target", "helm"])
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: unknown target 'helm'")
    assert unknown.stderr.count("\n") == 1
    missing = runner.invoke(app, ["render", "--target", "argo-rollout", "--rollout", str(tmp_path / "none.yaml")])
    assert (
        missing.exit_code == 2
        and missing.stderr
        == f"error: no rollout spec at {tmp_path / 'none.yaml'}: give a YAML file like deploy/rollouts/canary.yaml\n"
    )
    everything = runner.invoke(app, ["render", "--target", "all"])
    assert (
        everything.exit_code == 2
        and everything.stderr == "error: --target all writes one file per target: give --out DIR\n"
    )


@pytest.mark.parametrize(
    "metric, success, failure",
    [
        (  # only a success condition: not holding fails; too few samples is neither (inconclusive)
            {"success_condition": "result <= 0.01", "on_missing": "inconclusive"},
            "len(result) > 0 && (result[0] <= 0.01)",
            "len(result) > 0 && !((result[0] <= 0.01))",
        ),
        (
            {"success_condition": "result <= 0.01", "on_missing": "failed"},
            "len(result) > 0 && (result[0] <= 0.01)",
            None,
        ),
        (
            {"failure_condition": "result > 0.05", "on_missing": "successful"},
            None,
            "len(result) > 0 && (result[0] > 0.05)",
        ),
        (
            {"success_condition": "0 < result < 1 and not result == 0.5", "on_missing": "skip"},
            "((0 < result[0] && result[0] < 1) && !((result[0] == 0.5)))",
            None,
        ),
        (  # against the baseline: PromQL answers 1 (success), -1 (failure, judged first) or 0
            {"success_condition": "result <= baseline * 1.5", "failure_condition": "result > baseline * 3"},
            "len(result) > 0 && result[0] == 1",
            "len(result) > 0 && result[0] == -1",
        ),
    ],
)
def test_analysis_conditions_keep_their_meaning_in_argo(metric, success, failure):
    ours = MetricSpec(name="m", provider="request_log", query="p95_latency_s", interval="20s", **metric)
    argo = prometheus_metric(ours, model="gemma", canary="canary", stable="stable")
    assert (argo.get("successCondition"), argo.get("failureCondition"), argo["interval"]) == (success, failure, "20s")
    query = argo["provider"]["prometheus"]["query"]
    assert 'llmops_gateway_e2e_seconds_bucket{model="gemma",deployment="canary"}[20s]' in query
    assert ('deployment="stable"' in query) == ours.needs_baseline


def test_metrics_without_a_series_are_not_rendered():
    for provider, query in (("evaluation", "perplexity"), ("request_log", "feedback_score")):
        metric = MetricSpec(name="m", provider=provider, query=query, success_condition="result > 0")
        assert prometheus_metric(metric, model="gemma", canary="canary", stable="stable") is None
