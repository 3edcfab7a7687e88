"""deploy/alerts.yml: well-formed rules, and every series they select exists on a real gateway's /metrics.

An alert on a metric nobody exports never fires and nobody notices; here a renamed metric, label or
label value fails a test instead.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route, Rule
from llmops_lib.observe.alerting import (
    AlertRule,
    Selector,
    exposed_samples,
    histogram_buckets,
    histogram_quantile,
    load_rules,
    selectors,
    unknown_series,
)

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "alerts.yml"
DEAD_URL = "http://127.0.0.1:9"


def test_selectors_skip_functions_keywords_grouping_and_durations():
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{x="1", y=~"5.."}[5m]))) > 2'
        " and on (model) b offset 1d unless c:rule"
    )
    assert selectors(expr) == [
        Selector("a_bucket", (("x", "=", "1"), ("y", "=~", "5.."))),
        Selector("b"),
        Selector("c:rule"),
    ]


def test_the_rule_file_is_well_formed():
    rules = load_rules(ALERTS)
    assert len(rules) >= 8 and {r.severity for r in rules} <= {"page", "ticket"}
    assert all(r.summary and r.description and r.for_ for r in rules)
    selected = {s.metric for r in rules for s in r.selectors}
    for family in (
        "requests_total",
        "ttft_seconds_bucket",
        "tpot_seconds_bucket",
        "e2e_seconds_bucket",
        "queue_depth",
        "upstream_errors_total",
        "cache_hits_total",
        "cache_lookups_total",
    ):
        assert f"llmops_gateway_{family}" in selected, f"no alert watches llmops_gateway_{family}"
    assert "llmops_engine" in selected


RULE = {
    "alert": "A",
    "expr": "up > 0",
    "for": "5m",
    "labels": {"severity": "page"},
    "annotations": {"summary": "s", "description": "d"},
}


def _rule_file(*rules: dict) -> str:
    return yaml.safe_dump({"groups": [{"name": "g", "rules": list(rules)}]})


@pytest.mark.parametrize(
    "text, match",
    [
        ("groups: []", r"groups: List should have at least 1 item"),
        ("groups: [{name: g, rules: []}]", r"groups\.0\.rules: List should have at least 1 item"),
        (_rule_file({k: v for k, v in RULE.items() if k != "for"}), r"groups\.0\.rules\.0\.for: Field required"),
        (_rule_file(RULE | {"for": "soon"}), r"groups\.0\.rules\.0\.for: String should match pattern"),
        (
            _rule_file(RULE | {"labels": {"severity": "urgent"}}),
            r"groups\.0\.rules\.0\.labels\.severity: Input should be 'page' or 'ticket'",
        ),
        (
            _rule_file(RULE | {"annotations": {"summary": "s"}}),
            r"groups\.0\.rules\.0\.annotations\.description: Field required",
        ),
        (_rule_file(RULE | {"fire": "now"}), r"groups\.0\.rules\.0\.fire: Extra inputs are not permitted"),
        (_rule_file(RULE | {"expr": "1 > 0"}), "selects no series"),
        (_rule_file(RULE, RULE | {"expr": "up > 1"}), r"alert names must be unique, \['A'\] repeat"),
        ("groups: [oops", "not valid YAML"),
    ],
)
def test_bad_rule_files_name_the_problem(tmp_path, text, match):
    path = tmp_path / "alerts.yml"
    path.write_text(text)
    with pytest.raises(SpecError, match=match):
        load_rules(path)


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / (30 - 10))
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1 * 10 / 10)
    assert histogram_quantile(0.99, {1.0: 1.0, math.inf: 5.0}) == 1.0, "in the +Inf bucket: the highest finite bound"
    assert math.isnan(histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}))
    with pytest.raises(SpecError, match=r"\+Inf"):
        histogram_quantile(0.5, {1.0: 3.0})
    exposition = (
        "# TYPE h histogram\n"
        'h_bucket{m="a",le="1.0"} 2\nh_bucket{m="b",le="1.0"} 1\n'
        'h_bucket{m="a",le="+Inf"} 3\nh_bucket{m="b",le="+Inf"} 4\n'
        'h_sum{m="a"} 9\nh_count{m="a"} 3\nh_sum{m="b"} 1\nh_count{m="b"} 4\n'
    )
    assert histogram_buckets(exposition, "h") == {1.0: 3.0, math.inf: 7.0}


def test_unknown_series_names_a_typo_a_missing_label_and_a_wrong_value():
    samples = exposed_samples(
        '# TYPE r counter\nr_total{status="200"} 3\n# TYPE g gauge\ng{name="requests_waiting"} 0\n'
    )
    rule = AlertRule(
        "g",
        "A",
        'rate(r_total{status="200"}[5m]) + rate(rr_total[5m]) + g{name="requests_wating"} + g{kind="x"}',
        "5m",
        "page",
        "s",
        "d",
    )
    assert unknown_series(rule, samples) == [
        "A: no series rr_total",
        "A: g{name='requests_wating'} is not exposed (values: ['requests_waiting'])",
        "A: g has no label 'kind'",
    ]


@pytest.mark.engine
def test_every_alert_selects_series_the_real_gateway_exposes(server, tmp_path):
    """Traffic that makes every series appear: a cache hit, a stream, an upstream failure with
    fallback, and a burst into a gateway of one slot and a one-place queue (waits and 429s)."""
    route = Route(
        model="gemma",
        deployments=[Deployment(name="live", url=server.base_url), Deployment(name="dead", url=DEAD_URL, weight=0)],
        fallback="live",
        rule=Rule(deployment="dead", tag="dead"),
    )
    config = GatewayConfig(
        routes=[route],
        request_log=str(tmp_path / "requests.sqlite"),
        concurrency=1,
        queue_size=1,
        prices={"live": {"per_1k_input_usd": 0.1, "per_1k_output_usd": 0.2}},
    )
    with GatewayServer(config) as gw, httpx.Client(base_url=gw.base_url, timeout=120) as http:
        for _ in range(2):
            assert (
                http.post(
                    "/v1/completions", json={"model": "gemma", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
                ).status_code
                == 200
            )
        assert (
            http.post(
                "/v1/completions",
                json={"model": "gemma", "prompt": "Hi", "max_tokens": 4},
                headers={"x-llmops-tag": "dead"},
            ).status_code
            == 200
        )
        stream = {"model": "gemma", "prompt": "Once upon a time", "max_tokens": 24, "stream": True, "ignore_eos": True}
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: http.post("/v1/completions", json=stream).status_code, range(6)))
        assert 429 in statuses and 200 in statuses, statuses
        exposition = http.get("/metrics").text
    samples = exposed_samples(exposition)
    problems = [p for rule in load_rules(ALERTS) for p in unknown_series(rule, samples)]
    assert problems == [], "alerts on series the gateway does not expose:\n" + "\n".join(problems)
