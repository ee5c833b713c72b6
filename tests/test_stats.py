"""The gate's statistics on seeded synthetic samples: fixed inputs, fixed seeds, exact expectations."""

import math

import numpy as np
import pytest

from wattbench import stats
from wattbench.stats import IMPROVEMENT, INCONCLUSIVE, REGRESSION, UNCHANGED, Interval

from test_gate_fixtures import samples


@pytest.mark.parametrize("factor, expected", [
    (1.00, UNCHANGED), (1.03, UNCHANGED), (1.10, REGRESSION), (1.25, REGRESSION), (0.85, IMPROVEMENT)])
def test_verdict_of_scaled_samples(factor, expected):
    base = samples(seed=1, rounds=300)
    cur = [t * factor for t in samples(seed=2, rounds=300)]
    interval = stats.median_ratio_interval(base, cur)
    assert interval.low <= interval.ratio <= interval.high
    assert interval.ratio == pytest.approx(factor, rel=0.01)
    assert stats.verdict(interval, 0.05) == expected


def test_same_seed_same_interval_other_seed_other_interval():
    base, cur = samples(seed=1), samples(seed=2)
    assert stats.median_ratio_interval(base, cur, seed=7) == stats.median_ratio_interval(base, cur, seed=7)
    assert stats.median_ratio_interval(base, cur, seed=7) != stats.median_ratio_interval(base, cur, seed=8)


def test_interval_narrows_with_more_rounds():
    def width(rounds):
        interval = stats.median_ratio_interval(samples(seed=1, rounds=rounds), samples(seed=2, rounds=rounds))
        return interval.high - interval.low
    assert width(1000) < width(100) / 2


def test_block_bootstrap_keeps_drift_that_shuffling_would_hide():
    """A run whose last quarter ran 15% slower (another process started): blocks keep that
    episode together, so the interval is wider than for the same samples in random order."""
    shifted = [t * (1.0 if i < 300 else 1.15) for i, t in enumerate(samples(seed=1, rounds=400, spread=0.01))]
    shuffled = list(np.random.default_rng(0).permutation(shifted))

    def width(values):
        interval = stats.median_ratio_interval(values, values)
        return interval.high - interval.low
    assert width(shifted) > 2 * width(shuffled)


def test_drift_widens_the_interval():
    base, cur = samples(seed=1), samples(seed=2)
    plain = stats.median_ratio_interval(base, cur)
    drifting = stats.median_ratio_interval(base, cur, drift=0.03)
    assert drifting.ratio == plain.ratio
    assert drifting.low < plain.low and drifting.high > plain.high


def test_block_length_is_about_the_cube_root_of_rounds():
    assert [stats.block_length(n) for n in (1, 5, 100, 1000, 1001)] == [1, 2, 5, 10, 11]


def test_uncertainty_interval_combines_in_quadrature():
    interval = stats.uncertainty_ratio_interval(2.0, 3.0, 2.2, 4.0)
    spread = math.hypot(math.log(1.03), math.log(1.04))
    assert interval.ratio == pytest.approx(1.1)
    assert interval.low == pytest.approx(1.1 * math.exp(-spread))
    assert interval.high == pytest.approx(1.1 * math.exp(spread))
    assert stats.uncertainty_ratio_interval(1.0, 0.0, 1.2, 0.0) == Interval(1.2, 1.2, 1.2)


@pytest.mark.parametrize("interval, expected", [
    (Interval(1.10, 1.06, 1.14), REGRESSION),
    (Interval(1.10, 1.04, 1.14), INCONCLUSIVE),
    (Interval(1.00, 0.97, 1.03), UNCHANGED),
    (Interval(0.90, 0.86, 0.94), IMPROVEMENT),
    (Interval(0.97, 0.94, 1.00), INCONCLUSIVE),
])
def test_verdict_needs_the_whole_interval_beyond_the_threshold(interval, expected):
    assert stats.verdict(interval, 0.05) == expected


def test_verdict_of_a_reciprocal_metric_agrees():
    """J/unit up 10% is work per joule down to 1/1.1: the same regression."""
    energy = Interval(1.10, 1.09, 1.11)
    per_joule = Interval(1 / 1.10, 1 / 1.11, 1 / 1.09)
    assert stats.verdict(energy, 0.08) == stats.verdict(per_joule, 0.08, higher_is_better=True) == REGRESSION
    assert stats.verdict(per_joule, 0.08) == IMPROVEMENT


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": [1.0]}, "baseline must hold at least 2 samples"),
    ({"current": [1.0, -1.0, 2.0]}, "current samples must be positive"),
    ({"current": [1.0, float("nan")]}, "current samples must be positive finite"),
    ({"confidence": 1.5}, "confidence must be between 0 and 1"),
    ({"resamples": 10}, "resamples must be at least 100"),
    ({"drift": -0.01}, "drift must be >= 0"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    arguments = {"baseline": [1.0, 1.1, 0.9], "current": [1.0, 1.1, 0.9], **kwargs}
    with pytest.raises(ValueError, match=message):
        stats.median_ratio_interval(arguments.pop("baseline"), arguments.pop("current"), **arguments)


def test_uncertainty_interval_rejects_bad_values():
    with pytest.raises(ValueError, match="baseline must be a positive finite number"):
        stats.uncertainty_ratio_interval(0.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="current_pct must be a finite percentage"):
        stats.uncertainty_ratio_interval(1.0, 1.0, 1.0, None)
