"""How sure the model was of an answer, from its token log-probabilities, and what to do with that.

`confidence_of_choice` reads one OpenAI `choices[i]` entry in either log-probability shape (the
chat-style `logprobs.content[{token, logprob}]` of llama-server and vLLM chat, the legacy
`logprobs.token_logprobs` of vLLM completions) and returns the geometric mean of the answer's token
probabilities, exp(mean log p). That definition was chosen by measurement: on Gemma 3 270M with the
capitals reference prompt (dev split, 44 cases) it separated right from wrong answers best (AUROC
0.96, against 0.94 for the answer's probability exp(Σ log p), its first token's and its least likely
token's); on sentiment the answer is one token, where all four coincide. A sum penalises long
answers (Thimphu is four tokens) for their length, not their doubt. `DEFINITIONS` and `auroc` let a
page redo that comparison.

A raw confidence ranks answers; `calibrate` (Platt scaling, fitted on a labelled split) turns it into
a probability of being right, so a review threshold reads as "below 70 % likely correct".
`risk_coverage` is the trade-off a review queue makes: accept the most confident fraction
(coverage), send the rest to a person, and see the accuracy of what was accepted. Choose the
threshold on one split (`threshold_for_coverage`), report it on another (`accepted_accuracy`).

Explained in: book/chapters/05_quality/quality_assurance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmops_lib.bench.stats import Interval, bootstrap
from llmops_lib.errors import SpecError

if TYPE_CHECKING:
    from llmops_lib.evals.run import Endpoint
    from llmops_lib.evals.tasks import Case, Task

#: Candidate confidences of one answer from its token log-probabilities (the one used: "mean").
DEFINITIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": lambda logprobs: math.exp(sum(logprobs) / len(logprobs)),
    "sum": lambda logprobs: math.exp(sum(logprobs)),
    "first": lambda logprobs: math.exp(logprobs[0]),
    "min": lambda logprobs: math.exp(min(logprobs)),
}


def token_logprobs(choice: dict) -> list[float] | None:
    """The log-probabilities of the generated tokens of one choice, in either shape; None without any.

    A `None` entry (vLLM's first prompt token under `echo`) is skipped.
    """
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    if isinstance(logprobs.get("content"), list):
        values = [entry.get("logprob") for entry in logprobs["content"]]
    elif isinstance(logprobs.get("token_logprobs"), list):
        values = logprobs["token_logprobs"]
    else:
        return None
    found = [float(value) for value in values if value is not None]
    return found or None


def confidence_of_choice(choice: dict) -> float | None:
    """The answer's confidence in [0, 1]: exp(mean token log-probability); None without log-probabilities."""
    logprobs = token_logprobs(choice)
    return None if logprobs is None else DEFINITIONS["mean"](logprobs)


@dataclass(frozen=True)
class Judged:
    """One answer to a case: its score and its generated tokens' log-probabilities."""

    case_id: str
    output: str
    correct: float
    logprobs: tuple[float, ...]

    @property
    def confidence(self) -> float:
        return DEFINITIONS["mean"](self.logprobs)


def judge(endpoint: Endpoint, task: Task, cases: Sequence[Case]) -> list[Judged]:
    """Answer each case with the task's reference prompt (temperature 0) and the generated tokens'
    log-probabilities, and score the answer. Not cached: the output cache keeps no log-probabilities."""
    from llmops_lib.evals.scorers import score  # here: the gateway imports this module, not the scorers

    judged = []
    for case in cases:
        body = {
            **endpoint.params(),
            "prompt": task.render(case),
            "max_tokens": task.reference.max_tokens,
            "stop": list(task.reference.stop),
            "temperature": 0.0,
            "logprobs": 1,
        }
        choice = endpoint.request("POST", "/v1/completions", body)["choices"][0]
        logprobs = token_logprobs(choice)
        if logprobs is None:
            raise SpecError(f"{endpoint.base_url} returned no log-probabilities: use an engine that honours `logprobs`")
        judged.append(Judged(case.id, choice["text"], score(task, case, choice["text"]), tuple(logprobs)))
    return judged


def _paired(confidences: Sequence[float], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    conf, ok = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=float)
    if conf.ndim != 1 or conf.shape != ok.shape or len(conf) == 0:
        raise SpecError(f"need one confidence per scored answer, got {conf.shape} and {ok.shape}")
    if not np.all((ok == 0) | (ok == 1)):
        raise SpecError("correct must be 0 or 1 per answer (a binary scorer's scores)")
    if np.any(np.isnan(conf)):
        raise SpecError("a confidence is missing (NaN): ask the engine for logprobs on every request")
    return conf, ok


def auroc(confidences: Sequence[float], correct: Sequence[float]) -> float:
    """How well confidence separates right from wrong answers: the probability that a random right
    answer is more confident than a random wrong one (ties count half); 0.5 is no better than chance."""
    conf, ok = _paired(confidences, correct)
    right, wrong = conf[ok == 1], conf[ok == 0]
    if len(right) == 0 or len(wrong) == 0:
        raise SpecError("AUROC needs both right and wrong answers")
    greater = (right[:, None] > wrong[None, :]).sum() + 0.5 * (right[:, None] == wrong[None, :]).sum()
    return float(greater / (len(right) * len(wrong)))


@dataclass(frozen=True)
class Calibration:
    """Platt scaling: P(correct) = σ(a · logit(confidence) + b), fitted on a labelled split."""

    a: float
    b: float

    def __call__(self, confidences: Sequence[float] | float) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.a * _logit(np.asarray(confidences, dtype=float)) + self.b)))

    def confidence_for(self, probability: float) -> float:
        """The raw confidence calibrated to `probability`: a route's `review_below` for "review what is
        less than `probability` likely right" (the gateway compares raw confidences)."""
        if not 0 < probability < 1 or self.a <= 0:
            raise SpecError(f"need a probability within (0, 1) and an increasing fit, got {probability} and a={self.a}")
        return float(1 / (1 + np.exp(-(_logit(np.asarray(probability)) - self.b) / self.a)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def calibrate(confidences: Sequence[float], correct: Sequence[float], *, iterations: int = 100) -> Calibration:
    """Fit Platt scaling by maximum likelihood (Newton's method on the two parameters).

    Two parameters, not an isotonic step function: a labelled split here has a few dozen answers,
    too few for a step per distinct confidence. All right (or all wrong) answers have no finite
    fit: refused.
    """
    conf, ok = _paired(confidences, correct)
    if ok.min() == ok.max():
        raise SpecError("calibration needs both right and wrong answers in the labelled split")
    x = np.column_stack([_logit(conf), np.ones_like(conf)])
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (ok - p)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return Calibration(float(w[0]), float(w[1]))


def calibration_error(probabilities: Sequence[float], correct: Sequence[float], bins: int = 5) -> float:
    """Expected calibration error: |accuracy − mean probability| per equal-width bin, weighted by its size."""
    prob, ok = _paired(probabilities, correct)
    index = np.minimum((prob * bins).astype(int), bins - 1)
    return float(sum(abs(ok[index == b].mean() - prob[index == b].mean()) * (index == b).mean() for b in set(index)))


@dataclass(frozen=True)
class Point:
    """Accept answers with confidence ≥ `threshold`: the fraction accepted and their accuracy."""

    threshold: float
    coverage: float
    accuracy: float
    accepted: int


def risk_coverage(confidences: Sequence[float], correct: Sequence[float]) -> list[Point]:
    """One point per distinct confidence, most confident first, ending at full coverage."""
    conf, ok = _paired(confidences, correct)
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    n, points = len(conf), []
    for i in range(n):
        if i + 1 < n and conf[i + 1] == conf[i]:
            continue  # a threshold accepts all answers tied at it
        points.append(Point(float(conf[i]), (i + 1) / n, float(ok[: i + 1].mean()), i + 1))
    return points


def threshold_for_coverage(confidences: Sequence[float], coverage: float) -> float:
    """The highest threshold that accepts at least `coverage` of these answers."""
    if not 0 < coverage <= 1:
        raise SpecError(f"coverage must be within (0, 1], got {coverage}")
    conf = np.sort(np.asarray(confidences, dtype=float))[::-1]
    if len(conf) == 0:
        raise SpecError("no confidences to choose a threshold from")
    return float(conf[math.ceil(coverage * len(conf) - 1e-9) - 1])


@dataclass(frozen=True)
class Acceptance:
    """What a threshold does on a labelled set: coverage, accuracy of the accepted answers, accuracy of
    all answers, and the gain (accepted − all) with bootstrap intervals over the answers."""

    threshold: float
    coverage: float
    accepted: Interval
    everything: Interval
    gain: Interval


def accepted_accuracy(
    confidences: Sequence[float], correct: Sequence[float], threshold: float, *, resamples: int = 2000, seed: int = 0
) -> Acceptance:
    """Accuracy of the answers a threshold auto-accepts vs of all answers, on one labelled set.

    The intervals resample answers (so coverage varies with the draw, as it would on new traffic);
    the gain is paired: the same resample for the accepted and the whole set.
    """
    conf, ok = _paired(confidences, correct)
    keep = conf >= threshold
    if not keep.any():
        raise SpecError(f"threshold {threshold} accepts no answer: choose a lower one")

    def accepted(c: np.ndarray, o: np.ndarray) -> float:
        chosen = o[c >= threshold]
        return float(chosen.mean()) if len(chosen) else float("nan")

    def gain(c: np.ndarray, o: np.ndarray) -> float:
        return accepted(c, o) - float(o.mean())

    def nan_safe(statistic: Callable[..., float]) -> Callable[..., float]:
        return lambda c, o: np.nan_to_num(statistic(c, o), nan=0.0)

    options = {"resamples": resamples, "seed": seed}
    return Acceptance(
        threshold=float(threshold),
        coverage=float(keep.mean()),
        accepted=bootstrap([conf, ok], nan_safe(accepted), **options),
        everything=bootstrap(ok, **options),
        gain=bootstrap([conf, ok], nan_safe(gain), **options),
    )


def accuracy_at_coverage(
    confidences: Sequence[float], correct: Sequence[float], coverage: float, **options: int
) -> tuple[float, Interval]:
    """The threshold reaching `coverage` on this set and the accepted answers' accuracy with its interval."""
    threshold = threshold_for_coverage(confidences, coverage)
    return threshold, accepted_accuracy(confidences, correct, threshold, **options).accepted
