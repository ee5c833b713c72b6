"""The self-check's parts: the slowdown hook, the interleaved measurement, the simulated energy."""

import random
import statistics
import time

import pytest

from wattbench.selfcheck import gate as selfcheck
from wattbench.power import PowerConfig


def busy_step(seconds=3e-4):
    """A step of known length that the machine's load cannot shorten."""
    def step():
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass
    return step


def test_slowdown_hook_adds_its_fraction_of_each_call():
    step = busy_step()
    base, cur = selfcheck.interleaved_pair(step, selfcheck.with_slowdown(step, 0.10), rounds=200, block=20)
    assert len(base) == len(cur) == 200
    assert statistics.median(cur) / statistics.median(base) == pytest.approx(1.10, abs=0.03)


def test_no_slowdown_returns_the_step_itself_and_bad_fractions_are_refused():
    step = busy_step()
    assert selfcheck.with_slowdown(step, 0.0) is step
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        selfcheck.with_slowdown(step, 1.5)


def test_time_figures_flag_the_injected_slowdown_only():
    figures = selfcheck.time_figures(2, selfcheck.interleaved_pair, busy_step(), 200,
                                     {"A/A (same code)": 0.0, "10% slower": 0.10})
    assert figures["A/A (same code)"]["rate"] == 0.0
    assert figures["10% slower"]["rate"] == 1.0


def test_simulated_energy_is_the_monitors_default_record_and_tells_ten_percent_from_noise():
    rng = random.Random(0)
    base = selfcheck.simulated_energy(0.0, rng)
    same, more = selfcheck.simulated_energy(0.0, rng), selfcheck.simulated_energy(0.10, rng)
    assert more["joules_per_unit"] / base["joules_per_unit"] == pytest.approx(1.10, rel=0.02)
    for record in (base, same, more):
        assert record["adaptive"]["target_pct"] == PowerConfig().target_pct  # the harness's defaults
        assert 0 < record["uncertainty_pct"] <= 2.5 and record["windows"] <= PowerConfig().repeats
    samples = [selfcheck.CALL_S] * 5
    assert not selfcheck.flagged(selfcheck.run_file(samples, base), selfcheck.run_file(samples, same), "energy")
    assert selfcheck.flagged(selfcheck.run_file(samples, base), selfcheck.run_file(samples, more), "energy")


def test_energy_figures_flag_a_regression_and_not_an_unchanged_pair():
    figures = selfcheck.energy_figures(4, 0, {"energy A/A (same code)": 0.0, "energy +10%": 0.10})
    assert figures["energy A/A (same code)"]["rate"] == 0.0 and figures["energy +10%"]["rate"] == 1.0
    for figure in figures.values():
        assert 1 <= figure["windows"] <= PowerConfig().repeats and figure["window_s"] > 0
        assert 0 <= figure["reached"] <= 1


def test_self_check_needs_at_least_20_pairs():
    with pytest.raises(ValueError, match="pairs must be an integer >= 20"):
        selfcheck.gate_error_rates(pairs=5)
