"""Whether two prompt versions really differ: the tests of an offline paired comparison and of a live split.

Offline, both versions answer the same cases, so the comparison is paired: `mcnemar_exact` looks only
at the cases where they disagree, `paired_bootstrap` gives an interval of the mean score difference.
Live, each request goes to one arm: `two_proportions` and `fisher_exact` compare the arms' success
rates, `srm_p` checks that the split itself came out as configured (a sample-ratio mismatch voids a
test), and `sample_size` fixes how many requests per arm to wait for before looking. Standard library
and numpy only; the tests check every function against scipy and published values.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from llmops_lib.bench.stats import Interval, bootstrap
from llmops_lib.errors import SpecError

# scipy's tolerance for "as extreme as the observed table" in exact tests (floating-point ties)
_RELATIVE_TIE = 1 + 1e-7


@dataclass(frozen=True)
class Comparison:
    """Arm B minus arm A: the difference of proportions, its interval, and the test's two-sided p."""

    diff: float
    low: float
    high: float
    p: float
    confidence: float


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise SpecError(f"{name} must be a count (an integer ≥ 0), got {value!r}")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise SpecError(f"confidence must be within (0, 1), got {confidence}")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: the discordant pairs (`b` cases only A got right, `c` only B) as a
    binomial(b + c, ½) test. No discordant pair (the versions agree on every case) gives p = 1."""
    _check_counts(b=b, c=c)
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers until this division


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Bootstrap interval of mean(b − a) over cases scored by both versions (resampled together)."""
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_values.shape != b_values.shape or a_values.ndim != 1:
        raise SpecError(f"paired scores need two lists of one length, got {a_values.shape} and {b_values.shape}")
    return bootstrap(
        [a_values, b_values],
        lambda x, y: float(np.mean(y - x)),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact p of the table [[a, b], [c, d]] (arm A: a successes, b failures; arm B:
    c, d): the probability of every table with these margins no likelier than the observed one."""
    _check_counts(a=a, b=b, c=c, d=d)
    row1, row2, col1 = a + b, c + d, a + c
    total = row1 + row2
    if total == 0:
        raise SpecError("fisher_exact needs at least one observation, got an empty table")
    if 0 in (row1, row2, col1, total - col1):
        return 1.0
    denominator = math.comb(total, col1)
    weights = {
        x: math.comb(row1, x) * math.comb(row2, col1 - x) for x in range(max(0, col1 - row2), min(row1, col1) + 1)
    }
    observed = weights[a]
    return min(1.0, sum(w for w in weights.values() if w <= observed * _RELATIVE_TIE) / denominator)


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The share `successes / n` with its Wilson score interval (Wilson 1927).

    Unlike a bootstrap of 0/1 outcomes, which collapses to [0, 0] for an arm with no success, it
    says how large the true rate could still be (0 of 10: up to 0.28 at 95 %).
    """
    _check_counts(successes=successes, n=n)
    _check_confidence(confidence)
    if n == 0 or successes > n:
        raise SpecError(f"need 0 ≤ successes ≤ trials and trials > 0, got {successes}/{n}")
    low, high = _wilson(successes, n, NormalDist().inv_cdf(1 - (1 - confidence) / 2))
    return Interval(successes / n, max(0.0, low), min(1.0, high), confidence)


def two_proportions(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Comparison:
    """Arm B (`x2` successes of `n2`) minus arm A (`x1` of `n1`).

    p: the pooled two-proportion z test (the same as a 2×2 chi-square without continuity correction).
    Interval: Newcombe's hybrid score interval (1998, method 10) from the two Wilson intervals, which
    keeps its coverage near 0 and 1 where the Wald interval does not (a 9 % zero-shot arm).
    """
    _check_counts(x1=x1, n1=n1, x2=x2, n2=n2)
    _check_confidence(confidence)
    if n1 == 0 or n2 == 0 or x1 > n1 or x2 > n2:
        raise SpecError(f"need 0 ≤ successes ≤ trials and trials > 0 in each arm, got {x1}/{n1} and {x2}/{n2}")
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p = 1.0 if se == 0 else math.erfc(abs(p2 - p1) / se / math.sqrt(2))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    (l1, u1), (l2, u2) = _wilson(x1, n1, z), _wilson(x2, n2, z)
    diff = p2 - p1
    low = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return Comparison(diff, low, high, p, confidence)


def _chi2_sf(x: float, df: int) -> float:
    """P(χ²_df > x) for an integer df, by the closed forms (erfc for odd df, a Poisson sum for even)."""
    if x <= 0:
        return 1.0
    half = x / 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    term, total = math.sqrt(2 * x / math.pi) * math.exp(-half), 0.0
    for i in range(1, (df + 1) // 2):
        total += term
        term *= x / (2 * i + 1)
    return min(1.0, math.erfc(math.sqrt(half)) + total)


def srm_p(counts: Sequence[int], weights: Sequence[float]) -> float:
    """Sample-ratio-mismatch p: chi-square goodness of fit of the arms' request `counts` to the configured
    `weights` (any positive scale, e.g. 50/50). A small p (< 0.001 is the usual alarm) says the split
    itself is broken, and the arms' quality numbers should not be compared."""
    if len(counts) != len(weights) or len(counts) < 2:
        raise SpecError(f"srm_p needs one weight per arm and at least 2 arms, got {len(counts)} and {len(weights)}")
    for arm, count in enumerate(counts):
        _check_counts(**{f"counts[{arm}]": count})
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise SpecError(f"arm weights must be positive numbers, got {list(weights)}")
    total = sum(counts)
    if total == 0:
        raise SpecError("srm_p needs at least one request, got 0 in every arm")
    expected = [total * w / sum(weights) for w in weights]
    statistic = sum((o - e) ** 2 / e for o, e in zip(counts, expected, strict=True))
    return _chi2_sf(statistic, len(counts) - 1)


def sample_size(p_base: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Requests per arm for a two-sided two-proportion z test at level `alpha` to detect a change of `mde`
    (absolute, e.g. 0.05 for 10 % → 15 %) from `p_base` with probability `power`.

    The normal approximation (Fleiss, Statistical Methods for Rates and Proportions, eq. 4.14, without
    continuity correction): n = (z₁₋α/₂·√(2·p̄·q̄) + z₁₋β·√(p₁q₁ + p₂q₂))² / mde², rounded up.
    """
    p_new = p_base + mde
    if not 0 < p_base < 1 or mde == 0 or not 0 < p_new < 1:
        raise SpecError(f"need 0 < p_base < 1, mde ≠ 0 and 0 < p_base + mde < 1, got p_base={p_base}, mde={mde}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise SpecError(f"alpha and power must be within (0, 1), got alpha={alpha}, power={power}")
    normal = NormalDist()
    z_alpha, z_power = normal.inv_cdf(1 - alpha / 2), normal.inv_cdf(power)
    mean = (p_base + p_new) / 2
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(p_base * (1 - p_base) + p_new * (1 - p_new))
    return math.ceil(root**2 / mde**2)


def discordant_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    """McNemar's (b, c) from two versions' binary scores on the same cases: right only with A, right only with B."""
    if len(a) != len(b):
        raise SpecError(f"paired scores need two lists of one length, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return only_a, only_b
