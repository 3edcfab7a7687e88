"""Answer confidence from token log-probabilities (both OpenAI shapes, hand-computed values), its
calibration (checked against scipy's optimiser), the risk–coverage curve and thresholds on literal
cases, and the review queue read from a real gateway's request log on the real engine."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from llmops_lib.cli import app
from llmops_lib.errors import SpecError
from llmops_lib.evals.confidence import (
    Calibration,
    Point,
    accepted_accuracy,
    accuracy_at_coverage,
    auroc,
    calibrate,
    calibration_error,
    confidence_of_choice,
    risk_coverage,
    threshold_for_coverage,
)
from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import load_task
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.observe import review
from llmops_lib.observe.request_log import RequestLog, RequestLogReader

NEW_SHAPE = {
    "text": " Paris",
    "logprobs": {
        "content": [
            {"id": 1, "token": " Par", "logprob": -0.5, "top_logprobs": []},
            {"id": 2, "token": "is", "logprob": -1.5, "top_logprobs": []},
        ]
    },
}
LEGACY_SHAPE = {
    "text": " Paris",
    "logprobs": {"tokens": [" Par", "is"], "token_logprobs": [-0.2, -0.4], "top_logprobs": None, "text_offset": [0, 4]},
}


def test_confidence_is_the_geometric_mean_token_probability_in_either_shape():
    assert confidence_of_choice(NEW_SHAPE) == pytest.approx(0.36787944117144233)  # exp(-1)
    assert confidence_of_choice(LEGACY_SHAPE) == pytest.approx(0.7408182206817179)  # exp(-0.3)
    chat = {"message": {"role": "assistant", "content": "Paris"}, "logprobs": NEW_SHAPE["logprobs"]}
    assert confidence_of_choice(chat) == pytest.approx(0.36787944117144233)
    echoed = {"logprobs": {"tokens": ["<s>", " a"], "token_logprobs": [None, -0.6931471805599453]}}
    assert confidence_of_choice(echoed) == pytest.approx(0.5), "vLLM's None for the first echoed token is skipped"


@pytest.mark.parametrize(
    "choice",
    [{"text": "x"}, {"text": "x", "logprobs": None}, {"logprobs": {"content": []}}, {"logprobs": {"content": None}}],
)
def test_no_logprobs_means_no_confidence(choice):
    assert confidence_of_choice(choice) is None


def _answer(base_url: str, body: dict) -> httpx.Response:
    response = httpx.post(f"{base_url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def test_the_real_engine_returns_logprobs_confidence_reads(server):
    task = load_task("capitals")
    body = {"prompt": task.render(task.split("dev")[0]), "max_tokens": 8, "temperature": 0, "stop": ["\n"]}
    with_logprobs = _answer(server.base_url, {**body, "logprobs": 1}).json()["choices"][0]
    assert 0 < confidence_of_choice(with_logprobs) <= 1
    assert confidence_of_choice(_answer(server.base_url, body).json()["choices"][0]) is None


CONF = [0.9, 0.8, 0.8, 0.3]
RIGHT = [1, 0, 1, 0]


def test_risk_coverage_on_a_literal_case_counts_ties_together():
    assert risk_coverage(CONF, RIGHT) == [
        Point(0.9, 0.25, 1.0, 1),
        Point(0.8, 0.75, 2 / 3, 3),
        Point(0.3, 1.0, 0.5, 4),
    ]


def test_thresholds_and_accuracy_at_coverage():
    assert threshold_for_coverage(CONF, 0.25) == 0.9
    assert threshold_for_coverage(CONF, 0.5) == 0.8
    assert threshold_for_coverage(CONF, 1.0) == 0.3
    threshold, accepted = accuracy_at_coverage(CONF, RIGHT, 0.75)
    assert threshold == 0.8 and accepted.estimate == pytest.approx(2 / 3)
    result = accepted_accuracy(CONF, RIGHT, 0.85)
    assert (result.coverage, result.accepted.estimate, result.everything.estimate) == (0.25, 1.0, 0.5)
    assert result.gain.estimate == pytest.approx(0.5)
    assert result.accepted.low <= 1.0 <= result.accepted.high


def test_auroc_is_mann_whitney_u_over_the_pairs():
    assert auroc(CONF, RIGHT) == 0.875  # 3.5 of 4 right/wrong pairs ordered right
    rng = np.random.default_rng(1)
    conf, right = rng.random(40), rng.integers(0, 2, 40)
    u = mannwhitneyu(conf[right == 1], conf[right == 0]).statistic
    assert auroc(conf, right) == pytest.approx(u / ((right == 1).sum() * (right == 0).sum()))


def test_platt_calibration_is_the_maximum_likelihood_fit():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.05, 0.95, 60)
    right = (rng.random(60) < conf**2).astype(float)
    fitted = calibrate(conf, right)
    x = np.log(conf / (1 - conf))

    def nll(w):
        z = w[0] * x + w[1]
        return float(np.sum(np.logaddexp(0, z) - right * z))

    oracle = minimize(nll, [1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10}).x
    assert (fitted.a, fitted.b) == pytest.approx(tuple(oracle), abs=1e-4)
    assert calibration_error(fitted(conf), right) < calibration_error(conf, right)
    assert Calibration(2.0, 0.0).confidence_for(0.9) == pytest.approx(0.75)  # logit 0.9 = 2 logit 0.75 (3² = 9)
    assert fitted(fitted.confidence_for(0.7)) == pytest.approx(0.7)
    assert calibration_error([0.75, 0.75, 0.75, 0.75], [1, 1, 1, 0]) == 0.0
    assert calibration_error([0.9, 0.9], [0, 0]) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: risk_coverage([0.5, 0.4], [1]),
        lambda: risk_coverage([0.5], [2]),
        lambda: calibrate([0.5, 0.6], [1, 1]),
        lambda: threshold_for_coverage([0.5], 0),
        lambda: accepted_accuracy([0.5, 0.4], [1, 0], 0.9),
        lambda: auroc([0.5, 0.4], [1, 1]),
    ],
)
def test_bad_input_is_refused_with_a_spec_error(call):
    with pytest.raises(SpecError):
        call()


ROWS = [
    {"request_id": "a", "confidence": 0.9, "needs_review": 0},
    {"request_id": "b", "confidence": 0.2, "needs_review": 1},
    {"request_id": "c", "confidence": 0.4, "needs_review": 1},
    {"request_id": "d", "confidence": 0.7, "needs_review": 0},
    {"request_id": "e", "confidence": None, "needs_review": None},
]


def test_review_queue_and_stats_on_literal_rows():
    assert [row["request_id"] for row in review.queue(ROWS)] == ["b", "c"]
    stats = review.stats(ROWS, {"a": 1, "b": 0, "c": 1, "d": 0, "e": 1})
    assert (stats.requests, stats.judged, stats.needs_review, stats.labelled, stats.review_rate) == (5, 4, 2, 4, 0.5)
    assert stats.accepted_accuracy.estimate == 0.5 and stats.reviewed_accuracy.estimate == 0.5
    assert stats.overall_accuracy.estimate == 0.5
    unlabelled = review.stats(ROWS)
    assert unlabelled.accepted_accuracy is None and unlabelled.review_rate == 0.5


def test_review_queue_from_a_real_gateways_request_log(server, tmp_path):
    task, threshold = load_task("capitals"), 0.6
    cases = task.split("dev")[:8]
    log = tmp_path / "requests.sqlite"
    config = GatewayConfig(
        routes=[
            Route(model="gemma", deployments=[Deployment(name="gemma", url=server.base_url)], review_below=threshold),
            Route(model="plain", deployments=[Deployment(name="plain", url=server.base_url)]),
        ],
        request_log=str(log),
    )
    correct, ids = {}, set()
    with GatewayServer(config) as gateway:
        for model, sent in (("gemma", cases), ("plain", cases[:1])):
            for case in sent:
                body = {"model": model, "prompt": task.render(case), "max_tokens": 8, "temperature": 0, "stop": ["\n"]}
                response = _answer(gateway.base_url, body)
                request_id = response.headers["x-request-id"]
                ids.add(request_id)
                if model == "gemma":
                    correct[request_id] = score(task, case, response.json()["choices"][0]["text"])
        rows = RequestLogReader(log).rows_including(ids)
    stats = review.stats(rows, correct)
    print(f"review rate {stats.review_rate}, accepted {stats.accepted_accuracy}, reviewed {stats.reviewed_accuracy}")
    assert (stats.requests, stats.judged, stats.labelled) == (9, 8, 8)
    confident = [correct[r["request_id"]] for r in rows if r["request_id"] in correct and r["confidence"] >= threshold]
    assert stats.needs_review == 8 - len(confident)
    if confident:
        assert stats.accepted_accuracy.estimate == pytest.approx(sum(confident) / len(confident))
    assert [r["confidence"] for r in review.queue(rows)] == sorted(
        r["confidence"] for r in rows if r["confidence"] is not None and r["confidence"] < threshold
    )
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(correct))
    printed = CliRunner().invoke(app, ["review", "stats", "--log", str(log), "--labels", str(labels)])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["needs_review"] == stats.needs_review
    listed = CliRunner().invoke(app, ["review", "list", "--log", str(log)])
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == stats.needs_review


def test_review_cli_refuses_bad_labels(tmp_path):
    log = tmp_path / "requests.sqlite"
    RequestLog(log).close()
    labels = tmp_path / "labels.json"
    labels.write_text('{"req-1": 2}')
    refused = CliRunner().invoke(app, ["review", "stats", "--log", str(log), "--labels", str(labels)])
    assert refused.exit_code == 2 and "0 (wrong) or 1 (right)" in refused.stderr
