"""A/B tests of prompt versions: offline on the same cases, live from the gateway's log, and the A/A control.

Offline, both versions answer the same cases, so the comparison is paired: only the cases where the
versions disagree carry information (exact McNemar on those discordant pairs), and a paired bootstrap
gives the interval of the difference in mean score. Live, the gateway splits requests between two
aliases by weight (`prompt_splits`) and each answer's score comes back as feedback; the arms hold
different requests, so the test is Fisher's exact test on the 2×2 table, with the two-proportion
interval of the difference beside it. A live test is decided once, at a sample size fixed in advance
(`plan`): `decide` refuses to judge an arm with fewer scored requests (no peeking), and a split whose
request counts do not match its weights (sample-ratio mismatch) is invalid whatever its p-value.
An A/A control (one version's outcomes split at random into two arms, many times) shows the rate of
false alarms the same test raises when nothing differs: about alpha, never "significant" as a rule.

Quality is never reported alone: each arm carries its prompt and completion tokens and its latency,
because a better prompt that doubles the prompt tokens is a cost decision.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmops_lib.bench.stats import Interval
from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.evals import stats
from llmops_lib.evals.scorers import score
from llmops_lib.evals.tasks import Case, Task
from llmops_lib.facts import percentile
from llmops_lib.observe.request_log import RequestLogReader

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from llmops_lib.evals.run import EvalRun, Row

#: A sample-ratio-mismatch p-value below this invalidates a split (Kohavi et al.'s 0.001: the check
#: runs on every test, so it must rarely flag a split that works).
SRM_ALPHA = 0.001
#: Fewer A/A runs cannot tell a false-positive rate of 5 % from one of 20 %.
MIN_AA_RUNS = 20


class Decision(StrEnum):
    """The outcome of a live A/B test, decided once at its planned sample size."""

    B_BETTER = "b_better"
    A_BETTER = "a_better"
    INCONCLUSIVE = "inconclusive"
    SRM = "srm"  # invalid: the arms did not get the traffic their weights promise


@dataclass(frozen=True)
class Arm:
    """One arm: its quality with an interval, and what a request costs in tokens and time."""

    name: str
    n: int
    successes: int
    accuracy: Interval
    prompt_tokens: float  # mean per request
    completion_tokens: float  # mean per request
    latency_s: float  # median per request
    versions: tuple[int, ...] = ()  # prompt versions the arm served (live tests)

    def row(self) -> dict[str, Any]:
        """The arm as a table row (`viz.rows`)."""
        return {
            "arm": self.name,
            "versions": ", ".join(f"v{v}" for v in self.versions) or "—",
            "n": self.n,
            "passed": self.successes,
            "accuracy": f"{self.accuracy:.2f}",
            "prompt tokens": round(self.prompt_tokens, 1),
            "completion tokens": round(self.completion_tokens, 1),
            "median latency (ms)": round(self.latency_s * 1000, 1),
        }


def _rate_interval(passed: Sequence[bool]) -> Interval:
    """The share of true values with its Wilson interval (an arm with no success still gets an upper bound)."""
    return stats.proportion_interval(sum(map(bool, passed)), len(passed))


def _arm(
    name: str,
    passed: Sequence[bool],
    prompt_tokens: Sequence[float],
    completion_tokens: Sequence[float],
    latencies_s: Sequence[float],
    versions: tuple[int, ...] = (),
) -> Arm:
    n, successes = len(passed), int(sum(passed))
    if n < 2:
        raise SpecError(f"arm {name!r} has {n} scored outcome(s): send traffic to it (and score it) before comparing")
    return Arm(
        name=name,
        n=n,
        successes=successes,
        accuracy=_rate_interval(passed),
        prompt_tokens=float(np.mean(prompt_tokens)) if len(prompt_tokens) else 0.0,
        completion_tokens=float(np.mean(completion_tokens)) if len(completion_tokens) else 0.0,
        latency_s=percentile(latencies_s, 50) if len(latencies_s) else 0.0,
        versions=versions,
    )


# --- offline: the same cases through both versions ------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """Two versions on the same cases: accuracies, the discordant pairs and the tests on them."""

    a: Arm
    b: Arm
    a_only: int  # cases A passed and B failed (McNemar's b)
    b_only: int  # cases B passed and A failed (McNemar's c)
    p_value: float  # exact McNemar on the discordant pairs
    difference: Interval  # mean score of B minus A, paired bootstrap

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def rows(self) -> list[dict[str, Any]]:
        """One table row per version (`viz.rows`): quality beside its cost."""
        return [self.a.row(), self.b.row()]


def compare_paired(
    run_a: EvalRun, run_b: EvalRun, *, names: tuple[str, str] = ("A", "B"), threshold: float = 1.0
) -> PairedComparison:
    """Compare two evaluation runs of the same cases; a case passes with a score of at least `threshold`.

    Raises:
        SpecError: the runs do not cover the same cases (a paired test needs both answers to each case).
    """
    rows_a, rows_b = _by_case(run_a, names[0]), _by_case(run_b, names[1])
    if rows_a.keys() != rows_b.keys():
        only = sorted(rows_a.keys() ^ rows_b.keys())
        raise SpecError(
            f"a paired comparison needs the same cases in both runs; {len(only)} differ (e.g. {only[0]!r}): "
            "run both versions on one case list"
        )
    ids = sorted(rows_a)
    scores_a = np.array([rows_a[i].score for i in ids], dtype=float)
    scores_b = np.array([rows_b[i].score for i in ids], dtype=float)
    passed_a, passed_b = scores_a >= threshold, scores_b >= threshold
    a_only, b_only = stats.discordant_pairs(passed_a, passed_b)
    return PairedComparison(
        a=_run_arm(names[0], [rows_a[i] for i in ids], passed_a),
        b=_run_arm(names[1], [rows_b[i] for i in ids], passed_b),
        a_only=a_only,
        b_only=b_only,
        p_value=stats.mcnemar_exact(a_only, b_only),
        difference=stats.paired_bootstrap(scores_a, scores_b),
    )


def _by_case(run: EvalRun, name: str) -> dict[str, Row]:
    rows = {row.case_id: row for row in run.rows}
    if len(rows) != len(run.rows):
        raise SpecError(f"evaluation run {name!r} scores a case twice: give each case once")
    return rows


def _run_arm(name: str, rows: Sequence[Row], passed: np.ndarray) -> Arm:
    return _arm(
        name,
        list(passed),
        [row.prompt_tokens for row in rows],
        [row.completion_tokens for row in rows],
        [row.latency_s for row in rows],
    )


# --- live: a split through the gateway, scored by feedback ---------------------------------------


def plan(p_base: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Scored requests per arm to decide at: enough to detect an absolute change of `mde` from a
    success rate of `p_base` with probability `power`, at a false-positive rate `alpha` (the z test's
    size, `evals.stats.sample_size`; Fisher's exact test, which decides, is a little more conservative,
    so its power at this size is a little lower)."""
    return stats.sample_size(p_base, mde, alpha=alpha, power=power)


@dataclass(frozen=True)
class SplitReport:
    """Arms of a live split of one prompt, read from the gateway's request log and its feedback."""

    prompt: str
    a: Arm
    b: Arm
    weights: dict[str, float]  # alias -> configured share
    assigned: dict[str, int]  # alias -> requests the gateway sent to it (scored or not)
    difference: stats.Comparison  # success rate of B minus A, with its interval and p
    fisher_p: float
    srm_p: float
    planned_n: int | None

    @property
    def srm(self) -> bool:
        """Whether the request counts contradict the weights (the split itself is broken)."""
        return self.srm_p < SRM_ALPHA

    def rows(self) -> list[dict[str, Any]]:
        """One table row per arm, with its share of the traffic against the configured weight."""
        total, weights = sum(self.assigned.values()) or 1, sum(self.weights.values())
        return [
            {
                **arm.row(),
                "assigned": self.assigned[arm.name],
                "share": f"{self.assigned[arm.name] / total:.1%} (weight {self.weights[arm.name] / weights:.0%})",
            }
            for arm in (self.a, self.b)
        ]


def split_report(
    log: str | Path | RequestLogReader,
    prompt: str,
    weights: Mapping[str, float],
    *,
    planned_n: int | None = None,
    threshold: float = 1.0,
    since: float | None = None,
    until: float | None = None,
) -> SplitReport:
    """The live A/B test of `prompt` between the two aliases of `weights` (A first, the control).

    A request counts for the arm of its logged `prompt_alias`; it is scored by its last feedback
    (a success when the score is at least `threshold`); requests without feedback count for the
    sample-ratio check only. Only requests started in [since, until) count. The log cannot tell a
    request the split assigned from one that named the alias itself (`name@production`): keep such
    traffic out of the period, or it counts for that arm (and the SRM check will likely flag it).

    Raises:
        SpecError: not two arms, no request log, or an arm with fewer than 2 scored requests.
    """
    if len(weights) != 2 or any(w <= 0 for w in weights.values()):
        raise SpecError(f"an A/B split has two arms with positive weights, got {dict(weights)}")
    reader = log if isinstance(log, RequestLogReader) else RequestLogReader(log)
    requests = [r for r in reader.rows(since, until) if r.get("prompt_name") == prompt]
    scores = {f["request_id"]: f["score"] for f in reader.feedback_rows(since)}  # ordered: the last one wins
    names = list(weights)
    per_arm = {name: [r for r in requests if r["prompt_alias"] == name] for name in names}
    arms = [_log_arm(name, per_arm[name], scores, threshold) for name in names]
    a, b = arms
    return SplitReport(
        prompt=prompt,
        a=a,
        b=b,
        weights=dict(weights),
        assigned={name: len(per_arm[name]) for name in names},
        difference=stats.two_proportions(a.successes, a.n, b.successes, b.n),
        fisher_p=stats.fisher_exact(a.successes, a.n - a.successes, b.successes, b.n - b.successes),
        srm_p=stats.srm_p([len(per_arm[name]) for name in names], [weights[name] for name in names]),
        planned_n=planned_n,
    )


def _log_arm(name: str, requests: list[dict], scores: Mapping[str, float], threshold: float) -> Arm:
    scored = [r for r in requests if r["request_id"] in scores]
    return _arm(
        name,
        [scores[r["request_id"]] >= threshold for r in scored],
        [r["gen_ai_usage_input_tokens"] or 0 for r in scored],
        [r["gen_ai_usage_output_tokens"] or 0 for r in scored],
        [r["latency_s"] for r in scored if r["latency_s"] is not None],
        versions=tuple(sorted({r["prompt_version"] for r in scored if r["prompt_version"] is not None})),
    )


@dataclass(frozen=True)
class SplitTraffic:
    """What `send_split` sent: since when (the report's `since`), how much, and what failed."""

    since: float
    sent: int
    scored: dict[str, int]  # alias -> requests answered and scored
    failures: tuple[str, ...]  # one line per request the gateway did not answer


def send_split(
    gateway_url: str,
    prompt: str,
    task: Task,
    cases: Sequence[Case],
    *,
    log: str | Path | RequestLogReader,
    arms: Sequence[str],
    per_arm: int,
    chat: bool = False,
    user_prefix: str = "ab",
    api_key: str | None = None,
    timeout_s: float = 120.0,
) -> SplitTraffic:
    """Send `cases` through the gateway as users of a live split, until each arm has `per_arm` scored answers.

    Each case is one request by reference to the bare `prompt` (so the gateway's split chooses the
    arm) with its own `user` key; the answer is scored with the task's scorer and the score posted
    to `/v1/feedback`. The arms' counts come from the request log `log` (the feedback call flushes
    it), the same source the report reads. Stops early when every arm of `arms` has `per_arm`.

    Raises:
        SpecError: the gateway refused a request (4xx: unknown prompt or variable, wrong endpoint).
    """
    import httpx

    reader = log if isinstance(log, RequestLogReader) else RequestLogReader(log)
    path = "/v1/chat/completions" if chat else "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    since, sent, failures, rated = time.time(), 0, [], set()
    scored = dict.fromkeys(arms, 0)
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=timeout_s) as client:
        for index, case in enumerate(cases):
            if min(scored.values()) >= per_arm:
                break
            body = {"prompt": {"id": prompt, "variables": case.inputs}, "user": f"{user_prefix}-{index}"}
            answer = client.post(path, json=body)
            sent += 1
            if 400 <= answer.status_code < 500:
                raise SpecError(f"the gateway refused case {case.id!r}: {answer.status_code} {answer.text[:300]}")
            if answer.status_code != 200:
                failures.append(f"{case.id}: {answer.status_code} {answer.text[:200]}")
                continue
            choice = answer.json()["choices"][0]
            output = choice["message"]["content"] if chat else choice["text"]
            request_id = answer.headers["x-request-id"]
            rating = {"request_id": request_id, "score": score(task, case, output)}
            client.post("/v1/feedback", json=rating).raise_for_status()
            rated.add(request_id)
            # the feedback call flushed the request's row to the log: its arm can be read now
            rows = [r for r in reader.rows(since) if r["request_id"] in rated]
            scored = {alias: sum(r["prompt_alias"] == alias for r in rows) for alias in arms}
    _wait_for_feedback(reader, rated, since)
    return SplitTraffic(since=since, sent=sent, scored=scored, failures=tuple(failures))


def _wait_for_feedback(reader: RequestLogReader, rated: set[str], since: float, timeout_s: float = 30.0) -> None:
    """Return once the log holds the feedback on every request of `rated` (the gateway writes it in the
    background), so a report read next counts all of it."""
    deadline = time.monotonic() + timeout_s
    while missing := rated - {f["request_id"] for f in reader.feedback_rows(since)}:
        if time.monotonic() > deadline:
            raise LLMOpsError(
                f"the feedback on {len(missing)} request(s) is not in the log at {reader.path} after "
                f"{timeout_s:.0f} s (e.g. {min(missing)}): is this the gateway's request log?"
            )
        time.sleep(0.1)


def decide(report: SplitReport, alpha: float = 0.05) -> Decision:
    """The decision of a live test at its planned sample size: SRM (invalid) first, then Fisher's p.

    Raises:
        SpecError: the report has no planned N, or an arm has fewer scored requests than planned
            (deciding as soon as p dips below alpha inflates the false-positive rate many times).
    """
    if report.srm:
        return Decision.SRM
    if report.planned_n is None:
        raise SpecError("decide at a sample size fixed in advance: give split_report a planned_n (see plan())")
    short = {arm.name: arm.n for arm in (report.a, report.b) if arm.n < report.planned_n}
    if short:
        raise SpecError(
            f"arms {short} have fewer than the planned {report.planned_n} scored requests: "
            "keep the test running until both reach it (deciding earlier is peeking)"
        )
    if report.fisher_p >= alpha:
        return Decision.INCONCLUSIVE
    return Decision.B_BETTER if report.difference.diff > 0 else Decision.A_BETTER


# --- the A/A control -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AAResult:
    """A/A splits of one version's outcomes: how often the live test called a difference."""

    runs: int
    alpha: float
    significant: int
    p_values: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.significant / self.runs

    @property
    def interval(self) -> Interval:
        """The false-positive rate with its interval (about alpha when the test is sound)."""
        return _rate_interval([p < self.alpha for p in self.p_values])


def aa_false_positive_rate(
    scores: Sequence[float], runs: int = 100, alpha: float = 0.05, seed: int = 0, *, threshold: float = 1.0
) -> AAResult:
    """Split one version's per-case outcomes at random into two halves `runs` times and test each
    split as `decide` would (Fisher's exact p < alpha).

    Raises:
        SpecError: fewer than `MIN_AA_RUNS` runs, or fewer than 4 outcomes.
    """
    if runs < MIN_AA_RUNS:
        raise SpecError(f"an A/A control needs at least {MIN_AA_RUNS} runs to estimate a rate, got {runs}")
    passed = np.asarray(scores, dtype=float) >= threshold
    if len(passed) < 4:
        raise SpecError(f"an A/A split needs at least 4 outcomes, got {len(passed)}")
    rng = np.random.default_rng(seed)
    half = len(passed) // 2
    p_values = []
    for _ in range(runs):
        order = rng.permutation(len(passed))
        arm_a, arm_b = passed[order[:half]], passed[order[half:]]
        xa, xb = int(arm_a.sum()), int(arm_b.sum())
        p_values.append(stats.fisher_exact(xa, len(arm_a) - xa, xb, len(arm_b) - xb))
    return AAResult(runs=runs, alpha=alpha, significant=sum(p < alpha for p in p_values), p_values=tuple(p_values))


# --- figures -----------------------------------------------------------------------------------------


def arms_figure(arms: Sequence[Arm], *, title: str) -> go.Figure:
    """Accuracy per arm with its interval, beside prompt tokens per request: quality and its cost."""
    from llmops_lib.viz import bars, side_by_side

    names = [arm.name for arm in arms]
    quality = bars(names, {"accuracy": [arm.accuracy.estimate for arm in arms]}, title="accuracy (95 % interval)")
    quality.data[0].update(
        error_y={
            "type": "data",
            "symmetric": False,
            "array": [arm.accuracy.high - arm.accuracy.estimate for arm in arms],
            "arrayminus": [arm.accuracy.estimate - arm.accuracy.low for arm in arms],
        }
    )
    quality.update_yaxes(range=[0, 1], tickformat=".0%")
    cost = bars(
        names,
        {
            "prompt tokens": [arm.prompt_tokens for arm in arms],
            "completion tokens": [arm.completion_tokens for arm in arms],
        },
        title="tokens per request",
    )
    return side_by_side(quality, cost, title=title)
