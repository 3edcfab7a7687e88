"""The start-small maturity check against a real gateway and engine: level 0 on an empty home, and one
level more as each piece of the roadmap is added (release/maturity.py, `llmops maturity`)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmops_lib.cli import app
from llmops_lib.engines import EngineSpec
from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.prompts.registry import PromptRegistry
from llmops_lib.release.maturity import check, optimizations
from llmops_lib.release.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
EVAL_GATED = ROOT / "deploy" / "rollouts" / "eval_gated.yaml"
QUICK = ROOT / "deploy" / "rollouts" / "quick.yaml"  # errors only: no quality gate


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A throwaway store for both registries, exported so the gateway (a child process) reads it too."""
    folder = tmp_path_factory.mktemp("maturity")
    before = os.environ.get("LLMOPS_REGISTRY_URI")
    os.environ["LLMOPS_REGISTRY_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    yield folder
    if before is None:
        os.environ.pop("LLMOPS_REGISTRY_URI")
    else:
        os.environ["LLMOPS_REGISTRY_URI"] = before


@pytest.fixture(scope="module")
def config(home, server) -> GatewayConfig:
    return GatewayConfig(
        routes=[Route(model="gemma", deployments=[Deployment(name="stable", url=server.base_url)])],
        request_log=str(home / "requests.sqlite"),
        prices={"stable": {"per_1k_input_usd": 0.1, "per_1k_output_usd": 0.2}},
        cache_size=0,
    )


def _failed(report) -> set[str]:
    return {r["requirement"] for r in report.rows() if not r["passed"]}


def test_empty_home_is_level_0(config):
    report = check(config)
    assert report.level == 0
    assert _failed(report) == {
        "gateway",
        "request log",
        "prompt in production",
        "served by reference",
        "feedback recorded",
        "release gated on quality",
        "optimized stable version",
    }
    assert report.missing[0].startswith("gateway: no gateway URL given")
    assert not (config.request_log and Path(config.request_log).exists())
    assert not Path(os.environ["LLMOPS_REGISTRY_URI"].removeprefix("sqlite:///")).exists()  # a check writes nothing


def test_levels_rise_as_each_piece_is_added(config, model_path):
    with GatewayServer(config) as gateway, httpx.Client(base_url=gateway.base_url, timeout=120) as http:
        url = gateway.base_url
        started = check(config, url=url)
        assert started.level == 0 and _failed(started) >= {"requests logged with latency", "requests logged with cost"}
        assert "gateway" not in _failed(started) and "alert rules" not in _failed(started)
        rules = Path(config.request_log).with_name("alerts.yml")
        rules.write_text(
            "groups: [{name: g, rules: [{alert: Renamed, expr: 'rate(llmops_gateway_request_total[5m]) > 1', "
            "for: 5m, labels: {severity: page}, annotations: {summary: s, description: d}}]}]\n"
        )
        renamed = {r["requirement"]: r["evidence"] for r in check(config, url=url, alert_rules=rules).rows()}
        assert renamed["alert rules"] == (
            "rules select metrics /metrics lacks: llmops_gateway_request_total (an alert on them never fires)"
        )

        answer = http.post("/v1/completions", json={"model": "gemma", "prompt": "Hello", "max_tokens": 2})
        answer.raise_for_status()
        http.post("/v1/feedback", json={"request_id": answer.headers["x-request-id"], "score": 1}).raise_for_status()
        assert check(config, url=url).level == 1

        prompts = PromptRegistry()
        version = prompts.register(
            "greet", "Say hello to {{name}}:", commit_message="first", model_config={"model": "gemma"}
        )
        prompts.set_alias("greet", "production", version.version, why="first release", who="test")
        registered = check(config, url=url)
        assert registered.level == 1 and registered.missing[0].startswith("served by reference: no logged request")
        body = {"prompt": {"id": "greet", "variables": {"name": "Ada"}}, "max_tokens": 2}
        http.post("/v1/completions", json=body).raise_for_status()
        assert check(config, url=url).level == 2

        assert check(config, url=url, rollouts=[QUICK]).level == 2  # a rollout without a quality metric
        gated = check(config, url=url, rollouts=[QUICK, EVAL_GATED])
        assert gated.level == 3
        assert gated.missing == [
            "optimized stable version: no route's model has a `stable` version in the model registry"
        ]

        models = Registry()
        plain = models.register("gemma", model_path, spec=EngineSpec(model=model_path, n_ctx=256, threads=1))
        models.set_alias("gemma", "stable", plain.version, why="first release", who="test")
        assert check(config, url=url, rollouts=[EVAL_GATED]).missing == ["optimized stable version: gemma v1: none"]
        fast = EngineSpec(model=model_path, n_ctx=256, threads=1, spec_type="ngram-simple")
        models.set_alias("gemma", "stable", models.register("gemma", model_path, spec=fast).version, why="2x", who="t")
        top = check(config, url=url, rollouts=[EVAL_GATED])
        assert top.level == 4 and top.missing == []
        assert top.rows()[-1]["evidence"] == "gemma v2: speculative decoding (ngram-simple)"

        runner = CliRunner()
        path = Path(config.request_log).with_name("gateway.json")
        path.write_text(config.model_dump_json())
        cli = ["maturity", "--gateway-config", str(path), "--url", url, "--rollout", str(EVAL_GATED)]
        assert runner.invoke(app, [*cli, "--require", "4"]).exit_code == 0
        below = runner.invoke(app, ["maturity", "--gateway-config", str(path), "--url", url, "--require", "3"])
        assert below.exit_code == 3 and "level 2 of 4" in below.output
    stopped = check(config, url=url, rollouts=[EVAL_GATED])
    assert stopped.level == 0 and stopped.missing[0].startswith(f"gateway: {url} does not answer")


def test_bad_input_is_a_clear_error(tmp_path, home):
    bad = tmp_path / "gateway.yaml"
    bad.write_text("routes: [{model: gemma, deployments: [{name: a, url: http://x, weight: 120}]}]\n")
    with pytest.raises(SpecError, match=r"routes\.0\.deployments\.0\.weight"):
        check(bad)
    spec = tmp_path / "rollout.yaml"
    spec.write_text("name: x\nmodel: gemma\nsteps: [{setWeight: 10}]\nbogus: 1\n")
    good = tmp_path / "ok.yaml"
    good.write_text("routes: [{model: gemma, deployments: [{name: a, url: 'http://127.0.0.1:9'}]}]\n")
    with pytest.raises(SpecError, match="bogus"):
        check(good, rollouts=[spec])
    result = CliRunner().invoke(app, ["maturity", "--gateway-config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "no gateway configuration at" in result.output


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"spec_type": None, "cache_type_k": "f16", "cache_type_v": "f16"}, []),
        ({"spec_type": "ngram-simple"}, ["speculative decoding (ngram-simple)"]),
        ({"draft_model": "/m/draft.gguf"}, ["speculative decoding (draft model)"]),
        ({"cache_type_k": "q8_0", "cache_type_v": "q8_0"}, ["quantized KV cache (q8_0)"]),
        ({"kv_cache_dtype": "fp8"}, ["quantized KV cache (fp8)"]),
        ({"quantization": "fp8"}, ["weight quantization (fp8)"]),
    ],
)
def test_optimizations_of_an_engine_spec(spec, expected):
    assert optimizations(spec) == expected
