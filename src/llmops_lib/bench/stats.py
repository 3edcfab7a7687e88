"""How far to trust a number measured on a small sample: bootstrap intervals and supported percentiles.

A perplexity over a few hundred tokens, or a p99 over a handful of requests, is one draw of a noisy
quantity. `bootstrap` resamples the per-item values (tokens, requests) with replacement and reports
the percentile interval of the statistic, as `llama-perplexity` prints PPL ± and KL ±; two results
whose difference has an interval containing 0 are within noise. `tail_percentile` says which tail
percentile a sample can support at all, so a table never shows a p99 of 8 requests.

Explained in: book/chapters/02_optimization/quantization.ipynb (intervals) and
book/chapters/02_optimization/batching.ipynb (percentiles of few requests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llmops_lib.errors import SpecError

#: Tail percentiles a table may show, highest first; 100 (the maximum) when the sample supports none.
TAIL_PERCENTILES = (99.0, 95.0, 90.0)


@dataclass(frozen=True)
class Interval:
    """A statistic measured once (`estimate`) and the bootstrap interval around it."""

    estimate: float
    low: float
    high: float
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __format__(self, spec: str) -> str:
        """`f"{interval:.3f}"` → "4.210 [4.105, 4.322]"."""
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def bootstrap(
    samples: Sequence[np.ndarray] | np.ndarray,
    statistic: Callable[..., float] = np.mean,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of `statistic` over paired per-item values.

    Args:
        samples: one array of per-item values, or several arrays of the same length whose items
            belong together (the same token scored by two models): they are resampled with the
            same indices, so a difference between them is measured on the same items.
        statistic: maps the (resampled) arrays, one argument each, to a number.
        confidence: the interval's coverage, e.g. 0.95.
        resamples: how many resamples; 2,000 puts the interval's ends within a few % of their limit.
        seed: the resampling seed, so a rebuilt page shows the same interval for the same data.
    """
    arrays = [np.asarray(samples)] if isinstance(samples, np.ndarray) else [np.asarray(a) for a in samples]
    n = len(arrays[0]) if arrays else 0
    if n < 2 or any(len(a) != n for a in arrays):
        raise SpecError(f"bootstrap needs arrays of one length, at least 2 items, got {[len(a) for a in arrays]}")
    if not 0 < confidence < 1 or resamples < 1:
        raise SpecError(f"confidence must be within (0, 1) and resamples at least 1, got {confidence}, {resamples}")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(*(a[index] for a in arrays)) for index in rng.integers(0, n, size=(resamples, n))])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(statistic(*arrays)), float(low), float(high), confidence)


def tail_percentile(count: int, *, beyond: int = 3) -> float:
    """The highest of `TAIL_PERCENTILES` with at least `beyond` samples above it among `count`,
    else 100 (the maximum): a p99 needs 300 requests by this rule, a p90 needs 30."""
    if count < 1:
        raise SpecError(f"a percentile needs at least one sample, got {count}")
    return next((q for q in TAIL_PERCENTILES if count * (100 - q) / 100 >= beyond), 100.0)


def percentile_label(q: float) -> str:
    """ "p90", or "max" for the 100th percentile."""
    return "max" if q >= 100 else f"p{q:g}"
