"""Timing plan and the host clock (the CUDA paths: tests/test_cuda_timing.py, on a simulated device)."""

import time

from wattbench import timing
from wattbench.device import Device

CPU = Device("cpu", None, "test cpu")


def test_rounds_fill_the_minimum_time_within_bounds():
    plan = timing.TimingPlan(min_time_s=1.0, min_rounds=5, max_rounds=100)
    assert plan.rounds_for(0.05) == 20
    assert plan.rounds_for(2.0) == 5  # slow calls still get min_rounds
    assert plan.rounds_for(1e-7) == 100  # fast calls are capped
    assert plan.rounds_for(0.0) == 100


def test_cpu_clock_is_monotonic_seconds():
    clock = timing.clock_for(CPU)
    first = clock()
    time.sleep(0.01)
    elapsed = clock() - first
    assert 0.009 < elapsed < 1.0


def test_cpu_timing_needs_no_setup_and_times_the_step_itself():
    plan = timing.TimingPlan(cuda_graph=True)
    step = lambda: None  # noqa: E731
    assert timing.round_setup(CPU, plan) is None
    target = timing.timed_target(step, CPU, plan)
    assert (target.call, target.method, target.graph_note) == (step, "perf_counter", None)


def test_time_rounds_reads_the_clock_around_each_call_after_its_setup():
    events = []
    readings = iter([0.0, 1.0, 5.0, 7.0])

    def clock():
        events.append("clock")
        return next(readings)

    samples = timing.time_rounds(lambda: events.append("call"), lambda: events.append("setup"), clock, rounds=2)
    assert samples == [1.0, 2.0]
    assert events == ["setup", "clock", "call", "clock"] * 2


def test_time_once_measures_a_call():
    assert 0.02 <= timing.time_once(lambda: time.sleep(0.02), CPU) < 1.0
