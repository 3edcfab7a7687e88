"""A/B tests of prompt versions: the paired and the live tests on literal tables, the A/A control, and real
A/B tests of Gemma through the gateway (runbooks run as an operator runs them).

Literal p-values were computed once with scipy 1.17 (`scipy.stats.binomtest`, `fisher_exact`, `chisquare`,
`hypergeom`, `binom`); the engine tests take scipy itself as the oracle.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from llmops_lib.errors import ExitCode, SpecError
from llmops_lib.evals.run import Endpoint, EvalRun, Row, run_cases
from llmops_lib.evals.tasks import load_task
from llmops_lib.observe.request_log import RequestLog, RequestRecord
from llmops_lib.prompts.ab import (
    MIN_AA_RUNS,
    Decision,
    aa_false_positive_rate,
    arms_figure,
    compare_paired,
    decide,
    plan,
    split_report,
)
from llmops_lib.prompts.optimize import Candidate, Demo
from llmops_lib.prompts.template import PromptVersion

ROOT = Path(__file__).resolve().parents[1]
SPLIT = {"production": 50, "candidate": 50}


def evaluation(outcomes: list[int], prompt_tokens: int, latency_s: float) -> EvalRun:
    """An evaluation run with these pass (1) / fail (0) outcomes on cases c00, c01, …"""
    rows = tuple(
        Row(f"c{i:02}", "answer", float(o), prompt_tokens, 2, latency_s * (1 + i % 3), False)
        for i, o in enumerate(outcomes)
    )
    return EvalRun("capitals", rows)


# 12 cases: both pass 2, only A 1, only B 9, neither 0
PAIRED_A = [1, 1, 1] + [0] * 9
PAIRED_B = [1, 1, 0] + [1] * 9


def test_paired_comparison_of_a_hand_made_table():
    result = compare_paired(evaluation(PAIRED_A, 10, 0.1), evaluation(PAIRED_B, 40, 0.2), names=("zero", "few"))
    assert (result.a_only, result.b_only) == (1, 9)
    assert result.p_value == pytest.approx(0.021484375, rel=1e-12)  # 2 · P(Binomial(10, ½) ≤ 1)
    assert result.significant(0.05) and not result.significant(0.01)
    assert (result.a.name, result.a.n, result.a.successes) == ("zero", 12, 3)
    assert (result.b.name, result.b.n, result.b.successes) == ("few", 12, 11)
    assert result.difference.estimate == pytest.approx(8 / 12)
    assert result.difference.low > 0
    assert (result.a.prompt_tokens, result.b.prompt_tokens) == (10.0, 40.0), "cost is reported beside quality"
    assert (result.a.latency_s, result.b.latency_s) == pytest.approx((0.2, 0.4))  # medians of 0.1·(1, 2, 3)
    assert [row["arm"] for row in result.rows()] == ["zero", "few"]


def test_a_paired_comparison_needs_the_same_cases():
    with pytest.raises(SpecError, match="same cases in both runs; 1 differ"):
        compare_paired(evaluation([1, 0, 1], 10, 0.1), evaluation([1, 0], 10, 0.1))


def write_split(path: Path, arms: dict[str, tuple[int, int]], unscored: dict[str, int] | None = None) -> float:
    """A real request log as the gateway writes it: `arms` alias -> (requests scored, of which passed);
    `unscored` more requests per alias with no feedback. Returns the time before the first request."""
    since = time.time()
    with RequestLog(path) as log:
        for alias, (scored, passed) in arms.items():
            for i in range(scored + (unscored or {}).get(alias, 0)):
                request_id = f"{alias}-{i}"
                log.submit(
                    RequestRecord(
                        request_id=request_id,
                        started_at=since + 1 + i * 1e-4,
                        prompt_name="capitals-qa",
                        prompt_version=1 if alias == "production" else 2,
                        prompt_alias=alias,
                        gen_ai_usage_input_tokens=13 if alias == "production" else 57,
                        gen_ai_usage_output_tokens=3,
                        latency_s=0.5,
                    )
                )
                if i < scored:
                    log.add_feedback(request_id, 1.0 if i < passed else 0.0)
        log.submit(RequestRecord(request_id="other", started_at=since + 1, prompt_name="another-prompt"))
    return since


def test_live_split_from_a_real_request_log(tmp_path):
    since = write_split(tmp_path / "log.sqlite", {"production": (20, 2), "candidate": (20, 17)}, {"candidate": 1})
    report = split_report(tmp_path / "log.sqlite", "capitals-qa", SPLIT, planned_n=20, since=since)
    assert (report.a.n, report.a.successes, report.b.n, report.b.successes) == (20, 2, 20, 17)
    assert report.assigned == {"production": 20, "candidate": 21}, "an unscored request still counts for SRM"
    assert report.fisher_p == pytest.approx(3.3579518030840765e-06, rel=1e-9)  # scipy fisher_exact
    assert report.difference.diff == pytest.approx(0.75)
    assert (report.a.versions, report.b.versions) == ((1,), (2,))
    assert (report.a.prompt_tokens, report.b.prompt_tokens) == (13.0, 57.0)
    assert not report.srm
    assert decide(report, alpha=0.01) == Decision.B_BETTER
    assert [row["arm"] for row in report.rows()] == ["production", "candidate"]
    assert len(arms_figure([report.a, report.b], title="t").data) == 3  # accuracy bars, prompt and completion tokens


def test_decide_only_at_the_planned_n(tmp_path):
    since = write_split(tmp_path / "log.sqlite", {"production": (20, 2), "candidate": (19, 17)})
    early = split_report(tmp_path / "log.sqlite", "capitals-qa", SPLIT, planned_n=20, since=since)
    with pytest.raises(SpecError, match=r"arms \{'candidate': 19\} have fewer than the planned 20.*peeking"):
        decide(early, alpha=0.01)
    unplanned = split_report(tmp_path / "log.sqlite", "capitals-qa", SPLIT, since=since)
    with pytest.raises(SpecError, match="sample size fixed in advance"):
        decide(unplanned)


@pytest.mark.parametrize(
    "arms, decision",
    [
        ({"production": (20, 17), "candidate": (20, 2)}, Decision.A_BETTER),
        ({"production": (20, 10), "candidate": (20, 12)}, Decision.INCONCLUSIVE),  # Fisher p = 0.7512
    ],
)
def test_decisions(tmp_path, arms, decision):
    since = write_split(tmp_path / "log.sqlite", arms)
    report = split_report(tmp_path / "log.sqlite", "capitals-qa", SPLIT, planned_n=20, since=since)
    assert decide(report, alpha=0.05) == decision


def test_sample_ratio_mismatch_voids_the_test(tmp_path):
    since = write_split(tmp_path / "log.sqlite", {"production": (600, 60), "candidate": (400, 300)})
    report = split_report(tmp_path / "log.sqlite", "capitals-qa", SPLIT, planned_n=400, since=since)
    assert report.srm_p == pytest.approx(2.5396285894708634e-10, rel=1e-6)  # scipy chisquare([600, 400])
    assert report.srm and report.fisher_p < 1e-10
    assert decide(report) == Decision.SRM, "a broken split is invalid however small its p"


def test_a_small_imbalance_is_no_mismatch(tmp_path):
    since = write_split(tmp_path / "log.sqlite", {"production": (520, 52), "candidate": (480, 48)})
    report = split_report(tmp_path / "log.sqlite", "capitals-qa", SPLIT, planned_n=400, since=since)
    assert report.srm_p == pytest.approx(0.20590321073206466, rel=1e-6)  # scipy chisquare([520, 480])
    assert not report.srm and decide(report) == Decision.INCONCLUSIVE


def test_a_split_has_two_arms(tmp_path):
    with pytest.raises(SpecError, match="two arms with positive weights"):
        split_report(tmp_path / "log.sqlite", "capitals-qa", {"production": 100})


def test_plan_matches_the_textbook_formula():
    # Fleiss eq. 4.14 by hand: (2.5758·√(2·0.4·0.6) + 0.8416·√(0.1·0.9 + 0.7·0.3))² / 0.6² = 14.01 → 15
    assert plan(0.1, 0.6, alpha=0.01, power=0.8) == 15


def test_aa_false_positive_rate_is_near_alpha():
    # 30 passes among 100 outcomes, halved at random: the successes in one half are hypergeometric, so
    # P(Fisher p < 0.05) is exactly 0.04858; in 1000 runs the count lies in [28, 72] with probability 0.999.
    result = aa_false_positive_rate([1.0] * 30 + [0.0] * 70, runs=1000, alpha=0.05, seed=0)
    assert result.runs == 1000 and len(result.p_values) == 1000
    assert 28 <= result.significant <= 72


def test_aa_needs_enough_runs():
    with pytest.raises(SpecError, match=f"at least {MIN_AA_RUNS} runs"):
        aa_false_positive_rate([1.0, 0.0] * 10, runs=MIN_AA_RUNS - 1)


# --- real outputs of Gemma ------------------------------------------------------------------------------

QUESTION = "Q: What is the capital of {{country}}?\nA:"


def capitals_templates(shots: int) -> tuple[str, str]:
    """The question alone, and the question after `shots` solved train cases (the optimizer's layout)."""
    train = load_task("capitals").split("train")[:shots]
    demos = tuple(Demo(case.id, case.inputs, str(case.expected)) for case in train)
    return Candidate("").template(QUESTION, chat=False), Candidate("", demos).template(QUESTION, chat=False)


def exact_aa_size(passes: int, total: int, alpha: float) -> float:
    """The false-positive rate of halving `total` outcomes with `passes` passes at random and testing the
    halves with Fisher's exact test: scipy's hypergeometric law and scipy's Fisher test."""
    half, other = total // 2, total - total // 2
    return sum(
        scipy_stats.hypergeom.pmf(k, total, passes, half)
        for k in range(max(0, passes - other), min(passes, half) + 1)
        if scipy_stats.fisher_exact([[k, half - k], [passes - k, other - (passes - k)]]).pvalue < alpha
    )


def test_few_shot_beats_zero_shot_offline_and_the_aa_control_holds(server):
    task = load_task("capitals")
    cases = task.split("test")  # 58 cases (fewer would leave Fisher no room for a false positive at all)
    zero, few = (PromptVersion("capitals", i, t) for i, t in enumerate(capitals_templates(3), start=1))
    with Endpoint(server.base_url, max_tokens=8, stop=["\n"]) as endpoint:
        runs = [run_cases(task, cases, lambda c, v=v: v.render(c.inputs), endpoint.complete) for v in (zero, few)]
    result = compare_paired(*runs, names=("zero-shot", "3-shot"))
    b, c = result.a_only, result.b_only
    assert result.p_value == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)
    assert c > b and result.p_value < 0.01, f"3-shot should win clearly: {result}"
    assert result.b.prompt_tokens > 2 * result.a.prompt_tokens, "the examples cost prompt tokens"
    # the A/A control on the real (cached) outcomes of one version
    for run in runs:
        size = exact_aa_size(int(sum(run.scores)), len(run.scores), 0.05)
        assert size > 0.01, "a control that cannot raise a false alarm controls nothing"
        aa = aa_false_positive_rate(run.scores, runs=1000, alpha=0.05, seed=1)
        low, high = scipy_stats.binom.ppf([0.0005, 0.9995], 1000, size)
        assert low <= aa.significant <= high, f"A/A: {aa.significant}/1000 significant, expected {1000 * size:.0f}"


def llmops(*args: str) -> subprocess.CompletedProcess:
    """The real `llmops` command, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "llmops_lib", *args], capture_output=True, text=True, cwd=ROOT, env=os.environ.copy()
    )


def summary(result: subprocess.CompletedProcess) -> dict:
    folder = Path(result.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    return json.loads((folder / "summary.json").read_text())


@pytest.mark.engine
def test_ab_runbook_detects_few_shot_through_the_gateway(model_path):
    result = llmops("runbook", "run", "prompt_ab_test", "--no-progress")
    assert result.returncode == ExitCode.OK, result.stderr
    records = summary(result)["records"]
    planned = records["plan"]["n_per_arm"]
    assert min(records["traffic"]["scored"].values()) >= planned
    assert records["srm_p"] >= 0.001
    assert records["fisher_p"] < 0.01 and records["difference"]["low"] > 0
    assert records["decision"] == "b_better"


@pytest.mark.engine
def test_aa_runbook_is_inconclusive_and_exits_3(model_path):
    result = llmops("runbook", "run", "prompt_ab_test", "-p", "candidate_shots=0", "--no-progress")
    assert result.returncode == ExitCode.GATE_FAILED, result.stderr
    records = summary(result)["records"]
    assert records["arms"]["production"] == records["arms"]["candidate"], "both arms serve one version"
    assert records["decision"] == "inconclusive" and records["fisher_p"] >= 0.01
    assert "gate 'b_better' failed" in result.stderr


@pytest.mark.engine
def test_rollback_runbook_serves_the_previous_version_on_the_next_request(model_path):
    result = llmops("runbook", "run", "prompt_rollback", "--no-progress")
    assert result.returncode == ExitCode.OK, result.stderr
    records = summary(result)["records"]
    assert records["aliases_before"] == {"production": 2, "previous": 1}
    assert records["served_before"] == 2
    assert records["served_after"] == [1, 1, 1]
    assert records["aliases_after"] == {"production": 1, "previous": 2}
    assert records["rolled_back"]["why"] and records["rolled_back"]["who"]


def test_rollback_runbook_refuses_to_move_without_a_reason():
    result = llmops("runbook", "run", "prompt_rollback", "-p", "gateway_url=http://127.0.0.1:9", "--no-progress")
    assert result.returncode == ExitCode.INFRASTRUCTURE, result.stderr
    assert "say why the alias moves" in result.stderr
    assert "served_before" not in summary(result)["records"], "nothing was sent before the refusal"
