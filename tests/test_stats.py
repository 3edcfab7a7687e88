"""Bootstrap intervals and supported percentiles (bench.stats): checked against theory and literals."""

from __future__ import annotations

import numpy as np
import pytest

from llmops_lib.bench.stats import bootstrap, percentile_label, tail_percentile
from llmops_lib.errors import SpecError


def test_interval_of_a_mean_matches_the_normal_approximation():
    values = np.array([0.0, 1.0] * 50)  # mean 0.5, standard error sqrt(0.25 / 100) = 0.05
    interval = bootstrap(values)
    assert interval.estimate == 0.5
    # 1.96 standard errors either side: [0.402, 0.598], up to the resampling's own noise
    assert 0.38 < interval.low < 0.43 and 0.57 < interval.high < 0.62
    assert interval.contains(0.5) and not interval.contains(0.3)
    assert interval.half_width == pytest.approx((interval.high - interval.low) / 2)


def test_a_constant_has_no_spread_and_a_paired_difference_of_equals_is_zero():
    assert bootstrap(np.full(20, 3.0)) == bootstrap(np.full(20, 3.0))
    same = np.linspace(-2.0, -1.0, 40)
    gap = bootstrap([same, same.copy()], lambda a, b: float(np.mean(a) - np.mean(b)))
    assert (gap.estimate, gap.low, gap.high) == (0.0, 0.0, 0.0)


def test_pairs_are_resampled_together():
    # b = a + 1 item by item: any paired resample differs by exactly 1; unpaired ones would scatter
    a = np.arange(50, dtype=float)
    gap = bootstrap([a + 1, a], lambda x, y: float(np.mean(x) - np.mean(y)))
    assert gap.low == pytest.approx(1.0) and gap.high == pytest.approx(1.0)


def test_the_same_seed_gives_the_same_interval_and_formats_with_its_ends():
    values = np.array([1.0, 4.0, 2.0, 8.0, 5.0, 7.0])
    assert bootstrap(values, seed=3) == bootstrap(values, seed=3)
    text = f"{bootstrap(values):.2f}"
    assert text.startswith("4.50 [") and text.endswith("]")


@pytest.mark.parametrize(
    "samples, options",
    [
        (np.array([1.0]), {}),
        ([np.ones(3), np.ones(4)], {}),
        (np.ones(5), {"confidence": 1.0}),
        (np.ones(5), {"resamples": 0}),
    ],
)
def test_bad_input_is_refused(samples, options):
    with pytest.raises(SpecError):
        bootstrap(samples, **options)


@pytest.mark.parametrize(
    "count, q",
    [(300, 99.0), (299, 95.0), (60, 95.0), (59, 90.0), (30, 90.0), (29, 100.0), (1, 100.0)],
)
def test_tail_percentile_needs_three_samples_beyond_it(count, q):
    assert tail_percentile(count) == q


def test_labels_and_an_empty_sample():
    assert (percentile_label(90.0), percentile_label(99.0), percentile_label(100.0)) == ("p90", "p99", "max")
    with pytest.raises(SpecError, match="at least one sample"):
        tail_percentile(0)
