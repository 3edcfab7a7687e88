"""The eval gate: does a candidate score worse than its baseline on a task, by more than a tolerance?

Both sides answer the same cases with the task's reference prompt (`Task.render`, temperature 0),
so the comparison is paired by case id: the difference of accuracies (candidate − baseline), its
paired-bootstrap interval, and McNemar's exact p over the cases where the two disagree.

The rule: the candidate fails when its score is below the baseline's by more than the tolerance
(difference < −tolerance). It is the rule the canary applies (`result >= baseline - tolerance`,
a condition over two numbers), so the runbook and the release agree. The interval says how sure
the verdict is; it does not decide it. Requiring the interval's upper end below −tolerance (proof
of harm) would let through any drop smaller than the interval's half-width (about 0.1 on the
58-case capitals test split), and requiring its lower end above −tolerance (proof of no harm)
would fail every candidate that is not identical at this size. An identical candidate gives the
same outputs, a difference of 0, and always passes.

Outputs go through the evaluation cache (`run.OutputCache`), keyed by what the server says it
serves (`/v1/models`): llama-server names the model file and its type there, so another file is
another key. A gateway names its routes instead, not the files behind them: pass `cache=False`
when scoring through one whose deployments can change.

Explained in: book/chapters/05_quality/evaluation
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmops_lib.bench.stats import Interval
from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint, EvalRun, run_cases
from llmops_lib.evals.stats import discordant_pairs, mcnemar_exact, paired_bootstrap
from llmops_lib.evals.tasks import Task, load_task


@dataclass(frozen=True)
class GateResult:
    """The verdict of one candidate against its baseline on one task (difference = candidate − baseline)."""

    passed: bool
    task: str
    candidate_score: float
    baseline_score: float
    difference: float
    interval: Interval
    p_value: float
    n: int
    tolerance: float
    reason: str

    def as_row(self) -> dict[str, object]:
        """One flat row for a table or a runbook record."""
        row = asdict(self)
        interval = row.pop("interval")
        return {**row, "ci_low": interval["low"], "ci_high": interval["high"], "confidence": interval["confidence"]}


def _check_tolerance(tolerance: float) -> None:
    if not 0 <= tolerance < 1:
        raise SpecError(f"tolerance is a drop in accuracy within [0, 1), got {tolerance}")


def compare_runs(candidate: EvalRun, baseline: EvalRun, *, tolerance: float) -> GateResult:
    """Pair two runs of one task by case id and judge the candidate (see the module's rule).

    Raises:
        SpecError: different tasks, different case ids, fewer than 2 cases, or a tolerance outside [0, 1).
    """
    _check_tolerance(tolerance)
    if candidate.task != baseline.task:
        raise SpecError(f"cannot compare runs of different tasks: {candidate.task!r} and {baseline.task!r}")
    baseline_scores = {row.case_id: row.score for row in baseline.rows}
    ids = [row.case_id for row in candidate.rows]
    if sorted(ids) != sorted(baseline_scores):
        raise SpecError(
            f"the runs of {candidate.task!r} did not answer the same cases "
            f"({len(ids)} and {len(baseline_scores)}): run both on one split and limit"
        )
    if len(ids) < 2:
        raise SpecError(f"a gate needs at least 2 cases, got {len(ids)}")
    cand = [row.score for row in candidate.rows]
    base = [baseline_scores[case_id] for case_id in ids]
    interval = paired_bootstrap(base, cand)
    difference = interval.estimate
    p_value = mcnemar_exact(*discordant_pairs(base, cand))
    passed = round(difference, 12) >= -tolerance  # a mean off by one ulp (-0.1000...01) must not fail a tie
    sure = interval.high < -tolerance if not passed else interval.low >= -tolerance
    verdict = (
        f"within tolerance: {difference:+.3f} ≥ -{tolerance:g}"
        if passed
        else f"regression: {difference:+.3f} < -{tolerance:g}"
    )
    certainty = (
        "the whole interval agrees"
        if sure
        else f"the interval reaches past -{tolerance:g}: more cases would make the verdict surer"
    )
    return GateResult(
        passed=passed,
        task=candidate.task,
        candidate_score=candidate.accuracy,
        baseline_score=float(sum(base) / len(base)),
        difference=difference,
        interval=interval,
        p_value=p_value,
        n=len(ids),
        tolerance=tolerance,
        reason=f"{verdict} ({interval.confidence:.0%} interval {interval.low:+.3f}..{interval.high:+.3f}; {certainty})",
    )


def score_endpoint(
    url: str,
    task: str | Task,
    *,
    model: str = "default",
    split: str = "test",
    limit: int | None = None,
    cache: bool = True,
    workers: int = 1,
) -> EvalRun:
    """The task's reference prompt over one split (its first `limit` cases) on an OpenAI-compatible server."""
    task = load_task(task) if isinstance(task, str) else task
    if limit is not None and limit < 2:
        raise SpecError(f"limit must be at least 2 cases (or None for the whole split), got {limit}")
    cases = task.split(split)[:limit]
    with Endpoint(url, model, max_tokens=task.reference.max_tokens, stop=task.reference.stop) as endpoint:
        return run_cases(task, cases, task.render, endpoint.complete, cache=cache, workers=workers, progress=False)


def gate(
    candidate_url: str,
    baseline_url: str,
    task: str,
    *,
    tolerance: float,
    split: str = "test",
    limit: int | None = None,
    candidate_model: str = "default",
    baseline_model: str = "default",
    cache: bool = True,
) -> GateResult:
    """Score both servers on the task's split with its reference prompt and compare them paired.

    `*_model` is the model name sent (a gateway's route name); `cache=False` through a gateway.
    """
    _check_tolerance(tolerance)
    options = {"split": split, "limit": limit, "cache": cache}
    candidate = score_endpoint(candidate_url, task, model=candidate_model, **options)
    baseline = score_endpoint(baseline_url, task, model=baseline_model, **options)
    return compare_runs(candidate, baseline, tolerance=tolerance)
