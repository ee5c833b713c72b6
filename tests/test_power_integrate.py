"""energy_from_power / energy_from_counter: exact on known traces, strict on bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattbench.power import energy_from_counter, energy_from_power
from wattbench.power.simulate import SimulatedSensor, square_wave


def test_power_trapezoid_is_exact_on_linear_power_with_interpolated_edges():
    times = np.arange(0.0, 11.0, 1.0)
    watts = 10.0 + 2.0 * times
    start, end = 0.5, 7.25
    expected = 10.0 * (end - start) + (end ** 2 - start ** 2)
    assert energy_from_power(times, watts, start, end) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(watts=st.floats(0.0, 1000.0), a=st.floats(0.0, 9.0), length=st.floats(0.01, 1.0))
def test_power_of_constant_trace_is_power_times_duration(watts, a, length):
    times = np.linspace(0.0, 10.0, 37)
    energy = energy_from_power(times, np.full_like(times, watts), a, a + length)
    assert energy == pytest.approx(watts * length, rel=1e-9, abs=1e-9)


def test_counter_uses_update_points_not_stale_readings():
    # 100 W counter updated every 100 ms, polled every 10 ms: readings repeat 10 times.
    polls = np.arange(0.0, 5.0, 0.01) + 0.005
    readings = 100.0 * np.floor(polls / 0.1) * 0.1
    energy = energy_from_counter(polls, readings, 1.03, 3.07)
    assert energy == pytest.approx(100.0 * 2.04, abs=100.0 * 0.01)  # update times known to half a poll


def test_counter_matches_true_energy_of_a_square_wave_within_half_a_percent():
    sensor = SimulatedSensor(square_wave(100.0, 300.0, 0.097), 12.0)
    polls = np.arange(0.003, 12.0, 0.01)
    truth = sensor.true_energy(1.0, 11.0)
    assert energy_from_counter(polls, sensor.counter_j(polls), 1.0, 11.0) == pytest.approx(truth, rel=0.005)


@pytest.mark.parametrize("function", [energy_from_power, energy_from_counter])
@pytest.mark.parametrize("times, values, start, end, match", [
    ([0, 1, 2], [1, 1], 0.0, 1.0, "equal length"),
    ([0, 2, 1], [1, 1, 1], 0.0, 1.0, "strictly increasing"),
    ([0, 1, 2], [1, 1, 1], 0.5, 3.0, "do not cover"),
    ([0, 1, 2], [1, 1, 1], 1.0, 1.0, "start_s must be before end_s"),
    ([0, 1, 2], [1, math.nan, 1], 0.0, 1.0, "finite"),
    ([0], [1], 0.0, 1.0, "at least 2"),
])
def test_bad_series_raise_value_error_naming_the_problem(function, times, values, start, end, match):
    with pytest.raises(ValueError, match=match):
        function(times, values, start, end)


@pytest.mark.parametrize("function", [energy_from_power, energy_from_counter])
def test_non_numbers_raise_type_error(function):
    with pytest.raises(TypeError, match="start_s"):
        function([0, 1], [1, 2], "0", 1.0)
    with pytest.raises(TypeError, match="sequences of numbers"):
        function(["a", "b"], [1, 2], 0.0, 1.0)


def test_counter_that_decreases_is_rejected():
    with pytest.raises(ValueError, match="never decrease"):
        energy_from_counter([0, 1, 2, 3], [0, 5, 4, 6], 0.5, 2.5)


def test_counter_without_an_update_before_the_window_is_rejected():
    polls = np.arange(0.0, 2.0, 0.01)
    readings = np.where(polls < 1.0, 0.0, 100.0)
    with pytest.raises(ValueError, match="no update at or before start_s"):
        energy_from_counter(polls, readings, 0.2, 1.5)
    with pytest.raises(ValueError, match="no update at or after end_s"):
        energy_from_counter(polls, readings, 0.995, 1.5)
