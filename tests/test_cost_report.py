"""The cost_report runbook over a request log written by a real gateway in front of llama-server:
a report within budget passes, a spend over budget fails the gate (exit 3), bad parameters never run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from llmops_lib.errors import RunbookParameterError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route, Rule
from llmops_lib.observe.request_log import RequestLogReader
from llmops_lib.runbooks import ExitCode, run_runbook

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = str(ROOT / "runbooks" / "cost_report.ipynb")
PRICES = {
    "small": {"per_1k_input_usd": 0.1, "per_1k_output_usd": 0.4},
    "large": {"per_1k_input_usd": 0.5, "per_1k_output_usd": 2.0},
}


@pytest.fixture(scope="module")
def traffic(server, tmp_path_factory) -> dict:
    """Real traffic through a real gateway: short prompts routed to `small`, long ones to `large`,
    each greedy request sent twice (the second is a cache hit), and one stream."""
    folder = tmp_path_factory.mktemp("cost")
    route = Route(
        model="gemma",
        deployments=[
            Deployment(name="small", url=server.base_url, weight=0),
            Deployment(name="large", url=server.base_url),
        ],
        fallback="large",
        rule=Rule(deployment="small", max_prompt_chars=40),
    )
    config = GatewayConfig(routes=[route], request_log=str(folder / "requests.sqlite"), prices=PRICES)
    config_path = folder / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    prompts = ["The capital of France is", "Write one sentence about the sea, the wind and the harbour at night:"]
    with GatewayServer(config) as gw, httpx.Client(base_url=gw.base_url, timeout=120) as http:
        served = [
            http.post(
                "/v1/completions", json={"model": "gemma", "prompt": p, "max_tokens": 6, "temperature": 0}
            ).headers["x-llmops-deployment"]
            for p in prompts * 2
        ]
        assert (
            http.post(
                "/v1/completions", json={"model": "gemma", "prompt": prompts[0], "max_tokens": 6, "stream": True}
            ).status_code
            == 200
        )
    assert served == ["small", "large", "cache", "cache"], (
        "short prompt to small, long to large, repeats from the cache"
    )
    with RequestLogReader(config.request_log) as reader:
        rows = reader.rows()
    return {"log": config.request_log, "config": str(config_path), "rows": rows}


@pytest.mark.engine
def test_within_budget_reports_spend_and_savings(traffic):
    spent = sum(r["cost_usd"] or 0 for r in traffic["rows"])
    result = run_runbook(
        RUNBOOK,
        {
            "request_log": traffic["log"],
            "hours": "1",
            "prices_config": traffic["config"],
            "reference": "large",
            "budget_usd": str(spent * 2),
        },
    )
    assert result.exit_code == ExitCode.OK, result.error
    records = result.records
    assert records["requests"] == len(traffic["rows"]) == 5
    assert records["total_usd"] == pytest.approx(spent) and spent > 0
    assert {"small", "large"} <= set(records["by_deployment_usd"])
    assert records["cache_savings"]["hits"] == 2 and records["cache_savings"]["usd"] > 0
    assert records["routing_savings"]["reference"] == "large" and records["routing_savings"]["usd"] > 0, (
        "the short prompt went to the cheap deployment"
    )
    assert records["gate.budget_usd"]["passed"] is True
    assert (Path(result.run_dir) / "cost_report.ipynb").is_file()


@pytest.mark.engine
def test_over_budget_fails_the_gate_and_keeps_the_notebook(traffic):
    result = run_runbook(
        RUNBOOK, {"request_log": traffic["log"], "hours": "1", "deployments": "large", "budget_usd": "1e-9"}
    )
    assert result.exit_code == ExitCode.GATE_FAILED, result.error
    assert result.records["gate.budget_usd"]["passed"] is False and "budget_usd" in result.error
    assert result.records["requests"] == sum(r["deployment"] == "large" for r in traffic["rows"]), (
        "only the deployments asked for"
    )
    assert (Path(result.run_dir) / "cost_report.ipynb").is_file() and (Path(result.run_dir) / "summary.json").is_file()


@pytest.mark.engine
def test_a_period_without_requests_is_a_broken_run_not_a_pass(traffic):
    result = run_runbook(
        RUNBOOK,
        {"request_log": traffic["log"], "since": "2001-01-01T00:00", "until": "2001-01-02T00:00", "budget_usd": "1"},
    )
    assert result.exit_code == ExitCode.INFRASTRUCTURE and "no request" in result.error


@pytest.mark.parametrize(
    "parameters, match",
    [
        ({"budget": "5"}, "has no parameter 'budget'"),
        ({"hours": "soon"}, "must be float"),
        ({"budget_usd": "lots"}, "must be float"),
    ],
)
def test_unknown_or_ill_typed_parameters_are_refused_before_anything_runs(parameters, match, llmops_home):
    runs = llmops_home / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    with pytest.raises(RunbookParameterError, match=match):
        run_runbook(RUNBOOK, parameters)
    assert (set(runs.iterdir()) if runs.is_dir() else set()) == before


def test_prices_are_validated_once_and_an_unknown_deployment_names_the_priced_ones(tmp_path):
    from pydantic import ValidationError

    from llmops_lib.errors import SpecError
    from llmops_lib.gateway import load_config
    from llmops_lib.observe.cost import Price, PriceTable

    table = PriceTable(PRICES)
    assert table.cost("large", 1000, 500) == pytest.approx(0.5 + 1.0) and "small" in table and "x" not in table
    with pytest.raises(SpecError, match=r"no price for deployment 'huge': the price table has \['large', 'small'\]"):
        table.cost("huge", 1, 1)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Price(per_1k_input_usd=-0.1, per_1k_output_usd=0.2)
    config = tmp_path / "gateway.yaml"
    for prices, where in (
        ({"small": {"per_1k_input_usd": 0.1, "per_1k_output_usd": 0.4, "per_hours_usd": 1}}, "per_hours_usd"),
        ({"small": {"per_1k_input_usd": 0.1}}, "per_1k_output_usd"),
        ({"small": {"per_1k_input_usd": 0.1, "per_1k_output_usd": "cheap"}}, "per_1k_output_usd"),
    ):
        config.write_text(yaml.safe_dump({"routes": [], "prices": prices}))
        with pytest.raises(SpecError, match=rf"prices\.small\.{where}"):
            load_config(config).price_table()
