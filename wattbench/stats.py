"""Confidence intervals of a ratio current/baseline, and the verdict they support (the gate and the
power self-checks use them).

Time: a bootstrap of the ratio of medians over the per-round samples. Rounds are resampled
in contiguous blocks (a circular block bootstrap), so that slow drift inside a run (another
process starting, clocks changing) widens the interval instead of hiding in it. A known
run-to-run `drift` can be added on top: it is the part of the variation between two runs
that neither run shows on its own.

Energy: the power module's records carry a 95% uncertainty of their mean, not samples, so
the interval of a ratio of two of them combines the two relative uncertainties in quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A ratio current/baseline and its confidence interval."""

    ratio: float
    low: float
    high: float


def block_length(rounds: int) -> int:
    """About n^(1/3) rounds per block, the usual rate for block-bootstrap variance estimates
    (Hall, Horowitz & Jing 1995): long enough to keep episodes of drift, short enough to leave
    many blocks to resample."""
    return max(1, math.ceil(round(rounds ** (1 / 3), 9)))


def bootstrap_medians(samples: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of `resamples` circular block-bootstrap resamples of `samples` (in time order)."""
    rounds = len(samples)
    length = block_length(rounds)
    blocks = math.ceil(rounds / length)
    starts = rng.integers(0, rounds, size=(resamples, blocks, 1))
    indices = (starts + np.arange(length)).reshape(resamples, -1)[:, :rounds] % rounds
    return np.median(samples[indices], axis=1)


def median_ratio_interval(baseline: list[float], current: list[float], *, confidence: float = 0.95,
                          resamples: int = 2000, seed: int = 0, drift: float = 0.0) -> Interval:
    """Ratio of medians current/baseline with its percentile bootstrap interval.

    `drift` is the standard deviation of log(ratio) between two runs of unchanged code; each
    bootstrap ratio is multiplied by a lognormal factor of that spread.
    """
    base = _samples("baseline", baseline)
    cur = _samples("current", current)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples!r}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift!r}")
    rng = np.random.default_rng(seed)
    ratios = bootstrap_medians(cur, resamples, rng) / bootstrap_medians(base, resamples, rng)
    if drift:
        ratios = ratios * np.exp(rng.normal(0.0, drift, size=resamples))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Interval(float(np.median(cur) / np.median(base)), float(low), float(high))


def uncertainty_ratio_interval(baseline: float, baseline_pct: float, current: float, current_pct: float) -> Interval:
    """Ratio current/baseline of two measured values, each with a 95% relative half-width in percent."""
    for name, value in (("baseline", baseline), ("current", current)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    for name, pct in (("baseline_pct", baseline_pct), ("current_pct", current_pct)):
        if not (isinstance(pct, (int, float)) and math.isfinite(pct) and pct >= 0):
            raise ValueError(f"{name} must be a finite percentage >= 0, got {pct!r}")
    ratio = current / baseline
    spread = math.hypot(math.log1p(baseline_pct / 100), math.log1p(current_pct / 100))
    return Interval(ratio, ratio * math.exp(-spread), ratio * math.exp(spread))


def verdict(interval: Interval, threshold: float, higher_is_better: bool = False) -> str:
    """Regression or improvement only when the whole interval lies beyond the threshold.

    A threshold t means "worse by a factor 1 + t": for a lower-is-better metric the ratio must
    exceed 1 + t, for a higher-is-better one fall below 1 / (1 + t), so that a metric and its
    reciprocal (J/unit and units/J) always agree.
    """
    worse, better = 1 + threshold, 1 / (1 + threshold)
    low, high = interval.low, interval.high
    if higher_is_better:
        low, high = 1 / high, 1 / low
    if low > worse:
        return REGRESSION
    if high < better:
        return IMPROVEMENT
    if better <= low and high <= worse:
        return UNCHANGED
    return INCONCLUSIVE


def _samples(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) < 2:
        raise ValueError(f"{name} must hold at least 2 samples, got {len(array) if array.ndim == 1 else array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} samples must be positive finite numbers")
    return array
