"""vLLM on Ray Serve LLM: the Serve config from an engine spec, Ray's per-node metrics under the common
names, and (opt-in, `pytest -m slow`: ~10 GB of RAM and minutes on CPU) two replicas on a real two-node
Ray cluster that answer as a direct vLLM server does.

The slow test's cluster runs the project's Python (`.venv`); the app's processes run vLLM's own
(`.venv-vllm`, with `ray[serve]` of the same version) through Ray's `py_executable`. It needs its own
cluster rather than the session's: each Ray Serve LLM replica reserves two logical CPUs (its actor and
its engine's bundle) and the OpenAI ingress one, so the head gets 3 and the worker 2.
"""

from __future__ import annotations

import time

import psutil
import pytest

from llmops_lib.engines import EngineSpec, VLLMEngine
from llmops_lib.engines.client import OpenAIClient
from llmops_lib.engines.hf_export import export_hf, hf_export_dir, vllm_python
from llmops_lib.engines.metrics import engine_of
from llmops_lib.engines.server import free_port
from llmops_lib.errors import EngineError, SpecError
from llmops_lib.scale.cluster import LocalRayCluster
from llmops_lib.scale.drills import send
from llmops_lib.scale.metrics import by_label, cluster_metrics, cluster_samples, scrape
from llmops_lib.scale.serve_config import Autoscaling, app_status, deploy, proxy_url, undeploy
from llmops_lib.scale.vllm_serve import DEPLOYMENT, check_vllm_serve_config, llm_config, vllm_serve_config

KV_CACHE_BYTES = 256 << 20  # 512 tokens x 4 sequences of the default model fit with room to spare
GiB = 1 << 30
START_TIMEOUT_S = 1800  # a vLLM start is minutes of one core; on a loaded 2-core machine it took over 10

# Two nodes' metrics endpoints as Ray 2.60 writes them (read from a live cluster; Ray's own labels
# Component, SessionName, WorkerId, otel_scope_* trimmed): the head runs the ingress and replica A, the
# worker replica B. A replica's series sit on its own node only.
HEAD_TEXT = """# HELP ray_vllm_generation_tokens_total Number of generation tokens processed.
# TYPE ray_vllm_generation_tokens_total counter
ray_vllm_generation_tokens_total{NodeAddress="127.0.0.6",ReplicaId="aaa",engine="0",model_name="default"} 100.0
ray_vllm_prompt_tokens_total{NodeAddress="127.0.0.6",ReplicaId="aaa",engine="0",model_name="default"} 40.0
ray_vllm_request_success_total{ReplicaId="aaa",engine="0",finished_reason="length",model_name="default"} 10.0
ray_vllm_request_success_total{ReplicaId="aaa",engine="0",finished_reason="stop",model_name="default"} 2.0
# HELP ray_vllm_num_requests_running Number of requests in model execution batches.
# TYPE ray_vllm_num_requests_running gauge
ray_vllm_num_requests_running{NodeAddress="127.0.0.6",ReplicaId="aaa",engine="0",model_name="default"} 1.0
ray_vllm_kv_cache_usage_perc{NodeAddress="127.0.0.6",ReplicaId="aaa",engine="0",model_name="default"} 0.25
ray_vllm_time_to_first_token_seconds_sum{ReplicaId="aaa",engine="0",model_name="default"} 1.5
ray_vllm_time_to_first_token_seconds_count{ReplicaId="aaa",engine="0",model_name="default"} 12.0
ray_serve_deployment_request_counter_total{deployment="OpenAiIngress",replica="i1",route="/v1/completions"} 24.0
ray_serve_deployment_request_counter_total{deployment="OpenAiIngress",replica="i1",route="/v1/models"} 1.0
ray_serve_deployment_request_counter_total{deployment="LLMServer:default",replica="aaa",route="/v1/completions"} 12.0
ray_serve_replica_processing_queries{deployment="OpenAiIngress",replica="i1"} 2.0
ray_serve_deployment_queued_queries{deployment="LLMServer:default",handle="h1"} 0.0
ray_node_cpu_utilization{ip="127.0.0.6"} 93.0
"""
WORKER_TEXT = """ray_vllm_generation_tokens_total{ReplicaId="bbb",engine="0",model_name="default"} 130.0
ray_vllm_prompt_tokens_total{NodeAddress="127.0.0.7",ReplicaId="bbb",engine="0",model_name="default"} 52.0
ray_vllm_request_success_total{ReplicaId="bbb",engine="0",finished_reason="length",model_name="default"} 13.0
ray_vllm_num_requests_running{NodeAddress="127.0.0.7",ReplicaId="bbb",engine="0",model_name="default"} 0.0
ray_vllm_kv_cache_usage_perc{NodeAddress="127.0.0.7",ReplicaId="bbb",engine="0",model_name="default"} 0.5
ray_vllm_time_to_first_token_seconds_sum{ReplicaId="bbb",engine="0",model_name="default"} 2.0
ray_vllm_time_to_first_token_seconds_count{ReplicaId="bbb",engine="0",model_name="default"} 13.0
ray_serve_deployment_request_counter_total{deployment="LLMServer:default",replica="bbb",route="/v1/completions"} 13.0
"""
# A node that runs only Serve's llama-server app: Serve's own series stand in for the engine's.
SERVE_ONLY_TEXT = """ray_serve_deployment_request_counter_total{deployment="llama_server",replica="r1"} 8.0
ray_serve_replica_processing_queries{deployment="llama_server",replica="r1"} 1.0
ray_serve_deployment_queued_queries{deployment="llama_server"} 3.0
"""


def test_nodes_are_summed_under_the_common_names():
    assert engine_of(HEAD_TEXT) == "vllm" and engine_of(SERVE_ONLY_TEXT) == "ray"
    assert cluster_samples([HEAD_TEXT, WORKER_TEXT]) == {
        "generation_tokens_total": 230.0,
        "prompt_tokens_total": 92.0,
        "requests_finished_total": 25.0,  # vLLM's own count first; Serve's counter also counts the ingress
        "requests_running": 1.0,  # vLLM's running requests, not Serve's queries in flight at the ingress
        "requests_waiting": 0.0,  # Serve's queue: vLLM reported no waiting requests
        "kv_cache_usage_ratio": 0.75,  # summed over replicas, as documented
        "ttft_seconds_sum": 3.5,
        "ttft_seconds_count": 25.0,
    }
    assert cluster_samples([SERVE_ONLY_TEXT]) == {
        "requests_finished_total": 8.0,
        "requests_running": 1.0,
        "requests_waiting": 3.0,
    }


def test_requests_per_replica_are_read_across_nodes():
    texts = [HEAD_TEXT, WORKER_TEXT]
    name = "ray_serve_deployment_request_counter_total"
    assert by_label(texts, name, "replica", deployment=DEPLOYMENT) == {"aaa": 12.0, "bbb": 13.0}
    assert by_label(texts, name, "replica") == {"i1": 25.0, "aaa": 12.0, "bbb": 13.0}
    assert by_label(texts, name, "route", deployment="OpenAiIngress") == {"/v1/completions": 24.0, "/v1/models": 1.0}
    assert by_label(texts, "ray_vllm_request_success_total", "ReplicaId") == {"aaa": 12.0, "bbb": 13.0}
    assert by_label(texts, name, "no_such_label") == {}


def test_a_node_that_does_not_answer_or_a_bad_exposition_is_an_error():
    url = f"http://127.0.0.6:{free_port('127.0.0.6')}/metrics"
    with pytest.raises(EngineError, match="did not answer.*is that node up"):
        scrape([url], timeout_s=2)
    with pytest.raises(EngineError, match="not a Prometheus text exposition"):
        by_label(["garbage line here\n"], "x", "y")


def test_the_llm_config_carries_the_local_servers_settings(model_path):
    spec = EngineSpec(
        model_path,
        n_ctx=512,
        parallel=4,
        threads=1,
        extra_args=("--dtype", "bfloat16", "--max-num-batched-tokens=1024"),
    )
    config = llm_config(spec, kv_cache_bytes=KV_CACHE_BYTES)
    assert config == {
        "model_loading_config": {"model_id": "default", "model_source": str(hf_export_dir(model_path))},
        "engine_kwargs": {
            "max_model_len": 512,
            "max_num_seqs": 4,
            "seed": 0,
            "kv_cache_dtype": "auto",
            "enable_prefix_caching": True,
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "kv_cache_memory_bytes": KV_CACHE_BYTES,
            "enforce_eager": True,
            "dtype": "bfloat16",
            "max_num_batched_tokens": 1024,
        },
        "deployment_config": {"num_replicas": 2},
        "placement_group_config": {"bundle_per_worker": {"CPU": 1}},
        "runtime_env": {
            "env_vars": {
                "HF_HUB_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "OMP_NUM_THREADS": "1",
            }
        },
    }
    # every engine setting is a flag of the argv the local server runs, with the same value
    argv = VLLMEngine(spec, kv_cache_bytes=KV_CACHE_BYTES).command_for(gpu=False)
    for key, value in config["engine_kwargs"].items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            assert flag in argv
        elif flag in argv:
            assert argv[argv.index(flag) + 1] == str(value)
        else:
            assert f"{flag}={value}" in argv


def test_gpu_replicas_get_gpu_bundles_an_accelerator_type_and_no_cpu_settings(model_path):
    spec = EngineSpec(model_path, tensor_parallel_size=2, prefix_caching=False)
    config = llm_config(spec, accelerator_type="L4", autoscaling=Autoscaling(min_replicas=1, max_replicas=4))
    assert config["accelerator_type"] == "L4"
    assert config["placement_group_config"] == {"bundle_per_worker": {"GPU": 1}}  # Ray repeats it per TP x PP rank
    assert config["deployment_config"] == {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 4,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 2,
            "downscale_delay_s": 20,
        }
    }
    kwargs = config["engine_kwargs"]
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["enable_prefix_caching"] is False
    assert "enforce_eager" not in kwargs and "kv_cache_memory_bytes" not in kwargs
    assert "OMP_NUM_THREADS" not in config["runtime_env"]["env_vars"]


def test_the_serve_config_passes_rays_own_checks(model_path):
    spec = EngineSpec(model_path, n_ctx=512, parallel=4, threads=1)
    config = vllm_serve_config(spec, python=vllm_python(), http_host="127.0.0.6", http_port=8300)
    assert config["proxy_location"] == "HeadOnly" and config["http_options"] == {"host": "127.0.0.6", "port": 8300}
    (app,) = config["applications"]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    assert app["runtime_env"] == {"py_executable": str(vllm_python())}
    assert check_vllm_serve_config(config) == []
    assert check_vllm_serve_config(vllm_serve_config(spec, accelerator_type="A10G")) == []


def test_mistakes_in_a_ray_serve_llm_config_are_found(model_path):
    spec = EngineSpec(model_path)
    config = vllm_serve_config(spec)
    app = config["applications"][0]
    llm = app["args"]["llm_configs"][0]
    llm["num_replica"] = 3
    app["args"]["llm_config"] = []
    problems = check_vllm_serve_config(config)
    assert "applications[0].args: unknown key 'llm_config'" in problems
    assert "applications[0].args.llm_configs[0]: num_replica: Extra inputs are not permitted" in problems
    del llm["num_replica"]
    llm["accelerator_type"] = "L4"  # a GPU type on CPU bundles
    (problem,) = check_vllm_serve_config(config)[1:]
    assert "cannot be used with CPU-only configurations" in problem
    app["args"] = {"llm_configs": []}
    assert check_vllm_serve_config(config) == [
        "applications[0].args.llm_configs: a list of at least one LLMConfig is required"
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"replicas": 0}, "replicas must be at least 1"),
        ({"extra_args": ("bfloat16",)}, "follows no flag"),
        ({"cache_type_k": "q8_0"}, "vLLM has no llama.cpp KV-cache types"),
    ],
)
def test_bad_input_is_refused_in_one_line(model_path, kwargs, message):
    spec_fields = {k: v for k, v in kwargs.items() if k != "replicas"}
    with pytest.raises(SpecError, match=message) as caught:
        llm_config(EngineSpec(model_path, **spec_fields), replicas=kwargs.get("replicas", 2))
    assert "\n" not in str(caught.value)


PROMPTS = ("The capital of France is", "def fibonacci(n):", "Once upon a time", "The three laws of motion are")


@pytest.mark.slow
@pytest.mark.timeout(2 * START_TIMEOUT_S + 600)
def test_two_ray_serve_llm_replicas_spread_and_answer_as_direct_vllm(model_path):
    if psutil.virtual_memory().available < 12 * GiB:
        pytest.skip("needs 12 GB of available memory: two Ray Serve LLM replicas and their cluster take ~10 GB")
    spec = EngineSpec(model_path, n_ctx=512, parallel=4, threads=1)
    export_hf(model_path)
    # the oracle first, then stopped: both at once would need ~14 GB
    with VLLMEngine(spec, kv_cache_bytes=KV_CACHE_BYTES, start_timeout_s=START_TIMEOUT_S) as direct:
        expected = [direct.client.complete(prompt, max_tokens=16).text for prompt in PROMPTS]
    assert all(expected), "the direct server answered every prompt"
    with LocalRayCluster(nodes=2, cpus=(3, 2), head_ip="127.0.0.6") as cluster:
        config = vllm_serve_config(
            spec,
            kv_cache_bytes=KV_CACHE_BYTES,
            python=vllm_python(),
            http_host="127.0.0.6",
            http_port=free_port("127.0.0.6"),
        )
        deploy(cluster, config, timeout_s=START_TIMEOUT_S)
        replicas = app_status(cluster, "vllm")["deployments"][DEPLOYMENT]["replicas"]
        assert sorted(r["node_ip"] for r in replicas) == ["127.0.0.6", "127.0.0.7"], "one replica per node"
        url = proxy_url(cluster)
        client = OpenAIClient(url)
        try:
            answers = [client.complete(prompt, max_tokens=16) for prompt in PROMPTS]
        finally:
            client.close()
        assert [answer.text for answer in answers] == expected
        traffic = send(url, requests=32, concurrency=4, max_tokens=8)
        assert traffic.errors == 0, traffic.error_messages
        sent = len(PROMPTS) + 32
        # Ray exports a node's metrics every few seconds: wait until every request is counted
        deadline = time.monotonic() + 120
        while True:
            texts = list(scrape(cluster.metrics_urls()).values())
            per_replica = by_label(
                texts, "ray_serve_deployment_request_counter_total", "replica", deployment=DEPLOYMENT
            )
            if sum(per_replica.values()) >= sent or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert sum(per_replica.values()) == sent and len(per_replica) == 2, per_replica
        assert min(per_replica.values()) >= 0.25 * sent, f"each replica serves at least 25 %: {per_replica}"
        samples = cluster_metrics(cluster.metrics_urls())
        assert samples["requests_finished_total"] == sent, "vLLM's own count, over both nodes"
        generated = 32 * 8 + sum(answer.completion_tokens for answer in answers)  # ignore_eos: exactly 8 each
        assert samples["generation_tokens_total"] == generated
        assert samples["prompt_tokens_total"] > 0 and samples["ttft_seconds_count"] == sent
        undeploy(cluster)
