"""Energy over a time window from sampled power or from a polled cumulative counter.

Both functions are public so that users with their own logs get the same numbers as the
sampler. Timestamps are seconds on any one clock; the window must lie inside the readings.
"""

from __future__ import annotations

import numpy as np

from wattbench.schema import is_finite_number


def _checked_series(timestamps_s, values, values_name: str, start_s, end_s) -> tuple[np.ndarray, np.ndarray]:
    for name, edge in (("start_s", start_s), ("end_s", end_s)):
        if not is_finite_number(edge):
            raise TypeError(f"{name} must be a finite number of seconds, got {edge!r}")
    if not start_s < end_s:
        raise ValueError(f"start_s must be before end_s, got start_s={start_s} end_s={end_s}")
    try:
        times = np.asarray(timestamps_s, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"timestamps_s and {values_name} must be sequences of numbers ({err})") from None
    if times.ndim != 1 or vals.ndim != 1 or len(times) != len(vals):
        raise ValueError(f"timestamps_s and {values_name} must be 1-D and of equal length, "
                         f"got shapes {times.shape} and {vals.shape}")
    if len(times) < 2:
        raise ValueError(f"need at least 2 readings, got {len(times)}")
    if not (np.isfinite(times).all() and np.isfinite(vals).all()):
        raise ValueError(f"timestamps_s and {values_name} must be finite (no NaN or inf)")
    if not (np.diff(times) > 0).all():
        raise ValueError("timestamps_s must be strictly increasing")
    if times[0] > start_s or times[-1] < end_s:
        raise ValueError(f"readings span [{times[0]:.6g}, {times[-1]:.6g}] s and do not cover "
                         f"the window [{start_s:.6g}, {end_s:.6g}] s")
    return times, vals


def energy_from_power(timestamps_s, watts, start_s: float, end_s: float) -> float:
    """Joules over [start_s, end_s] from instantaneous power samples.

    Trapezoid rule between samples, with the power at each window edge interpolated
    linearly between the samples around it.
    """
    times, power = _checked_series(timestamps_s, watts, "watts", start_s, end_s)
    inside = (times > start_s) & (times < end_s)
    knots = np.concatenate(([start_s], times[inside], [end_s]))
    return float(np.trapezoid(np.interp(knots, times, power), knots))


def counter_updates(timestamps_s: np.ndarray, joules: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Estimated (time, value) of each counter update seen in polled readings.

    A polled counter repeats its value until the sensor updates it. The update happened
    between the last poll that still showed the old value and the first poll that shows
    the new one; the midpoint of those two polls is the unbiased estimate of when.
    """
    changed = np.flatnonzero(joules[1:] != joules[:-1]) + 1
    return (timestamps_s[changed - 1] + timestamps_s[changed]) / 2, joules[changed]


def energy_from_counter(timestamps_s, joules, start_s: float, end_s: float) -> float:
    """Joules over [start_s, end_s] from polled readings of a cumulative counter (unwrapped, in J).

    Interpolates between the counter's update points only (see `counter_updates`): the
    stale repeats between updates say nothing about when the energy was spent.
    """
    times, energy = _checked_series(timestamps_s, joules, "joules", start_s, end_s)
    if (np.diff(energy) < 0).any():
        raise ValueError("joules must never decrease (unwrap the counter first)")
    update_times, update_values = counter_updates(times, energy)
    if len(update_times) == 0 or update_times[0] > start_s:
        raise ValueError(f"the counter shows no update at or before start_s={start_s:.6g}: "
                         "readings must start at least one counter update before the window")
    if update_times[-1] < end_s:
        raise ValueError(f"the counter shows no update at or after end_s={end_s:.6g}: "
                         "readings must continue until the counter updates after the window")
    start_j, end_j = np.interp([start_s, end_s], update_times, update_values)
    return float(end_j - start_j)
