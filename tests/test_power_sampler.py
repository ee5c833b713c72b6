"""The sampler thread and its windows, with fake channels on the real perf_counter clock."""

import threading
import time

import pytest

from wattbench.power import sampler as sampler_module
from wattbench.power.base import Channel, SensorFault
from wattbench.power.sampler import (MIN_HZ, SECONDARY_SHARE, WALL_SHARE, Plan, Sampler, plan_rates, read_load,
                                     share_secondaries)
from wattbench.power.simulate import busy_cpu

WATTS = 50.0


def counter_channel(name="fake:counter", fail=None):
    start = time.perf_counter()

    def read():
        if fail is not None and fail():
            raise fail.error
        return WATTS * (time.perf_counter() - start)
    return Channel(name, "fake", "counter", "test", read=read)


def power_channel(name="fake:power"):
    return Channel(name, "fake", "instant", "test", read=lambda: WATTS)


def test_thread_is_a_daemon_and_windows_give_energy_power_and_counts():
    with Sampler([counter_channel(), power_channel()], hz=200, cpu_budget=1.0) as sampler:
        assert any(t.daemon and t.name == "wattbench-power-sampler" for t in threading.enumerate())
        time.sleep(0.05)
        with sampler.window("outer") as outer:
            with sampler.window("inner") as inner:
                time.sleep(0.2)
            time.sleep(0.1)
    for handle in (outer, inner):
        result = handle.result
        for window in result.channels.values():
            assert window.valid, window.reason
            assert window.joules == pytest.approx(WATTS * result.duration_s, rel=0.05)
            assert window.avg_power_w == pytest.approx(WATTS, rel=0.05)
            assert window.samples >= 0.5 * 200 * result.duration_s
    assert outer.result.duration_s > inner.result.duration_s
    assert not any(t.name == "wattbench-power-sampler" for t in threading.enumerate())


def test_overlapping_windows_and_bad_window_names():
    with Sampler([power_channel()], hz=200) as sampler:
        sampler.begin_window("a")
        time.sleep(0.05)
        sampler.begin_window("b")
        with pytest.raises(ValueError, match="already open"):
            sampler.begin_window("b")
        first = sampler.end_window("a")
        second = sampler.end_window("b")
        with pytest.raises(ValueError, match="no open window"):
            sampler.end_window("a")
    assert first.start_s < second.start_s < first.end_s < second.end_s


def test_window_body_raising_cancels_the_window():
    sampler = Sampler([power_channel()])
    with pytest.raises(RuntimeError):
        with sampler.window("x"):
            raise RuntimeError("benchmark failed")
    sampler.begin_window("x")  # the name is free again


def test_counter_going_backwards_invalidates_only_windows_around_it():
    values = iter([1.0, 2.0, 3.0, 4.0, 5.0, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
    channel = Channel("c", "fake", "counter", "test", read=lambda: next(values))
    sampler = Sampler([channel])
    times = []
    for _ in range(12):
        sampler.poll_once()
        times.append(sampler.trace(channel).timestamps[-1])
        time.sleep(0.002)
    before = sampler.evaluate("before", times[1], times[3]).channels["c"]
    across = sampler.evaluate("across", times[3], times[7]).channels["c"]
    after = sampler.evaluate("after", times[7], times[10]).channels["c"]
    assert before.valid and after.valid
    assert not across.valid and "went backwards" in across.reason


def test_lost_device_stops_polling_and_invalidates_later_windows():
    lost = threading.Event()

    def fail():
        return lost.is_set()
    fail.error = SensorFault("device lost", permanent=True)
    channel = counter_channel(fail=fail)
    with Sampler([channel], hz=200) as sampler:
        time.sleep(0.05)  # a counter needs an update before a window starts
        with sampler.window("healthy") as healthy:
            time.sleep(0.1)
        with sampler.window("broken") as broken:
            time.sleep(0.05)
            lost.set()
            time.sleep(0.05)
    assert healthy.result.channels[channel.name].valid
    window = broken.result.channels[channel.name]
    assert not window.valid and "device lost" in window.reason and window.joules is None
    assert sampler.trace(channel).dead is not None


def test_unexpected_exceptions_in_a_read_do_not_kill_the_thread():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 3:
            raise ZeroDivisionError("bug")
        return WATTS
    channel = Channel("flaky", "fake", "instant", "test", read=flaky)
    with Sampler([channel], hz=200) as sampler:
        time.sleep(0.1)
    trace = sampler.trace(channel)
    assert len(trace.timestamps) > 5 and "ZeroDivisionError" in trace.faults[0][2]


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="hz"):
        Sampler([power_channel()], hz=0)
    with pytest.raises(ValueError, match="read or load"):
        Sampler([Channel("x", "fake", "instant", "test")])


def test_a_reading_is_stamped_with_the_midpoint_of_its_read_and_its_duration_widens_the_edges():
    """When inside a 30 ms read the sensor was read is unknown: the stamp is the read's midpoint,
    and the read's duration goes into the window's edge error."""
    spans = []

    def slow_read():
        began = time.perf_counter()
        time.sleep(0.03)
        spans.append((began, time.perf_counter()))
        return WATTS
    slow = Channel("slow", "fake", "instant", "test", read=slow_read)
    quick = Channel("quick", "fake", "instant", "test", read=lambda: WATTS)
    sampler = Sampler([slow, quick])
    for _ in range(6):
        sampler.poll_once()
    trace = sampler.trace(slow)
    assert all(abs(stamp - (began + ended) / 2) < 0.002 for stamp, (began, ended) in zip(trace.timestamps, spans))
    assert all(0.03 <= duration < 0.05 for duration in trace.durations)
    start, end = trace.timestamps[1], trace.timestamps[4]
    slow_window = sampler.evaluate("w", start, end).channels
    assert slow_window["slow"].edge_error_j >= WATTS * 0.03  # half of each edge's 30 ms read, twice
    assert slow_window["quick"].edge_error_j < WATTS * 0.001


def test_a_paused_sampler_reads_nothing_and_resumes_with_a_fresh_counter_update():
    reads = []
    start = time.perf_counter()

    def stepped_counter():  # a counter that updates every 50 ms, like NVML's every 100 ms
        reads.append(time.perf_counter())
        return WATTS * 0.05 * int((time.perf_counter() - start) / 0.05)
    channel = Channel("stepped", "fake", "counter", "test", read=stepped_counter)
    with Sampler([channel], hz=200) as sampler:
        time.sleep(0.1)
        sampler.pause()
        time.sleep(0.02)  # a poll under way when pausing may still land
        paused_at = time.perf_counter()
        time.sleep(0.3)
        assert not [t for t in reads if t > paused_at]
        with pytest.raises(RuntimeError, match="paused"):
            sampler.begin_window("x")
        resumed_at = time.perf_counter()
        sampler.resume()
        after = sampler.trace(channel, since_s=resumed_at)
        assert len(set(after.values)) >= 2  # an update seen since resuming: a window may start now
        with sampler.window("after pause") as window:
            time.sleep(0.3)
        with pytest.raises(RuntimeError, match="windows are open"):
            sampler.begin_window("open")
            sampler.pause()
        sampler.end_window("open", cancel=True)
        sampler.pause()
    result = window.result.channels["stepped"]
    assert result.valid and result.joules == pytest.approx(WATTS * window.result.duration_s, rel=0.25)


def test_stopping_a_paused_sampler_does_not_hang():
    sampler = Sampler([power_channel()], hz=200).start()
    sampler.pause()
    time.sleep(0.05)
    stopper = threading.Thread(target=sampler.stop)
    stopper.start()
    stopper.join(timeout=2)
    assert not stopper.is_alive()
    assert not any(t.name == "wattbench-power-sampler" for t in threading.enumerate())


def test_a_window_never_integrates_a_counter_across_a_pause():
    """With no counter update between resuming and the window's start, the window is invalid
    with the reason, rather than interpolated over the unseen pause."""
    values = iter([1.0, 2.0, 3.0, 3.0, 3.0, 9.0, 10.0, 11.0])
    channel = Channel("c", "fake", "counter", "test", read=lambda: next(values))
    sampler = Sampler([channel])
    for _ in range(3):
        sampler.poll_once()
        time.sleep(0.002)
    sampler.pause()
    sampler.resume()  # no thread: nothing to wait for
    times = []
    for _ in range(5):
        sampler.poll_once()
        times.append(sampler.trace(channel).timestamps[-1])
        time.sleep(0.002)
    early = sampler.evaluate("early", times[0] + 0.0005, times[-1]).channels["c"]
    later = sampler.evaluate("later", times[2] + 0.0005, times[3]).channels["c"]
    assert not early.valid and "no update at or before start" in early.reason
    assert later.valid


# -- poll rates within the budget, whatever a read costs --------------------------------------

def load(cpu_s, wall_s=None):
    return read_load(cpu_s, cpu_s if wall_s is None else wall_s)


def test_cheap_reads_are_polled_at_the_full_rate():
    assert plan_rates(100.0, tick_load=load(5e-6), primary_load=load(20e-6), secondary_load=load(20e-6)) == \
        Plan(100.0, 1)


@pytest.mark.parametrize("read_s", [1e-3, 2.4e-3, 6.6e-3])
def test_costly_reads_slow_the_secondaries_first_and_the_plan_fits_the_budget(read_s):
    plan = plan_rates(100.0, tick_load=load(10e-6), primary_load=load(read_s), secondary_load=load(read_s))
    cpu_per_s = plan.hz * (10e-6 + read_s) + plan.secondary_hz * read_s
    assert cpu_per_s < 0.01  # under 1% of a core
    assert plan.secondary_hz < plan.hz and plan.hz >= MIN_HZ
    assert plan.secondary_hz * read_s <= SECONDARY_SHARE * cpu_per_s * 1.01 or plan.hz == MIN_HZ


def test_reads_that_block_in_the_driver_are_bounded_by_time_not_cpu():
    plan = plan_rates(100.0, tick_load=load(10e-6), primary_load=load(20e-6, 6.6e-3),
                      secondary_load=load(20e-6, 6.6e-3))
    assert plan.hz * 6.6e-3 + plan.secondary_hz * 6.6e-3 <= WALL_SHARE * 1.001
    assert plan.hz > 10  # blocking costs no CPU: far faster than CPU-burning reads of the same length


def test_a_cheap_secondary_is_not_slowed_for_a_costly_primary():
    plan = plan_rates(100.0, tick_load=load(10e-6), primary_load=load(2.4e-3), secondary_load=load(20e-6))
    assert plan.every == 1


def test_a_cheap_secondary_beside_a_costly_one_is_not_slowed_for_it():
    plan = plan_rates(100.0, tick_load=load(10e-6), primary_load=load(2.4e-3),
                      secondary_load=load(2.4e-3) + load(20e-6))
    costly, cheap = share_secondaries(plan, [load(2.4e-3), load(20e-6)])
    assert cheap == 1 and costly > 1
    assert load(2.4e-3) / costly + load(20e-6) / cheap <= (load(2.4e-3) + load(20e-6)) / plan.every * 1.001


def test_the_thread_keeps_its_cpu_in_budget_when_reads_burn_milliseconds():
    def costly(method):
        def read():
            busy_cpu(2e-3)
            return WATTS * time.perf_counter() if method == "counter" else WATTS
        return Channel(f"costly:{method}", "fake", method, "test", read=read)
    with Sampler([costly("counter"), costly("instant")], hz=100, primary=["costly:counter"]) as sampler:
        time.sleep(2.2)
    stats = sampler.stats()
    assert stats["cpu_pct"] < 2.0  # at the 100 Hz it was asked for: about 40% of a core
    counter, instant = stats["channels"]["costly:counter"], stats["channels"]["costly:instant"]
    assert stats["plan_hz"] == counter["plan_hz"] < 10 and instant["plan_hz"] < counter["plan_hz"]
    assert counter["role"] == "primary" and instant["role"] == "secondary"
    assert counter["read_cpu_s"] == pytest.approx(2e-3, rel=0.5) and counter["poll_hz"] > instant["poll_hz"]


# -- a read that never returns --------------------------------------------------------------

def test_a_hung_read_does_not_hang_the_run_and_invalidates_the_window_with_the_reason(monkeypatch):
    monkeypatch.setattr(sampler_module, "HUNG_READ_S", 0.2)
    monkeypatch.setattr(sampler_module, "STOP_WAIT_S", 0.3)
    release, hung = threading.Event(), threading.Event()
    start = time.perf_counter()

    def read():  # the GPU falls off the bus: the driver call never returns
        if hung.is_set():
            release.wait()
        return WATTS * (time.perf_counter() - start)
    channel = Channel("gpu:counter", "fake", "counter", "test", read=read)
    other = power_channel()
    finished = threading.Event()
    results = {}

    def run():
        with Sampler([channel, other], hz=200, cpu_budget=1.0) as sampler:
            time.sleep(0.05)
            with sampler.window("lost") as window:
                time.sleep(0.05)
                hung.set()
                time.sleep(0.3)
            results["window"], results["faults"] = window.result, sampler.fault_reasons(channel)
        finished.set()
    try:
        threading.Thread(target=run, daemon=True).start()
        assert finished.wait(5), "the sampler hung with its read"
    finally:
        release.set()
    for name in (channel.name, other.name):
        window = results["window"].channels[name]
        assert not window.valid and "gpu:counter: a read has not returned" in window.reason
    assert any("has not returned" in reason for reason in results["faults"])


# -- update periods and steady edges, in simulated time ---------------------------------------

import random

import numpy as np

from wattbench.power.sampler import Trace, measure_channel, update_period_s
from wattbench.power.simulate import ReadCost, SimulatedSensor, constant, polled_trace, simulated_channels, square_wave

NOMINAL_COST = ReadCost(cpu_s=20e-6)


@pytest.mark.parametrize("update_s", [0.1, 0.02])
def test_the_update_period_is_what_the_polls_show(update_s):
    sensor = SimulatedSensor(constant(200.0), 3.0, update_s=update_s)
    counter = polled_trace(sensor.counter_j, 500.0, 2.5, NOMINAL_COST, random.Random(0))
    assert update_period_s(counter, is_counter=True) == pytest.approx(update_s, rel=0.05)
    slow = polled_trace(sensor.counter_j, 2.0, 2.5, NOMINAL_COST, random.Random(0))
    assert update_period_s(slow, is_counter=True) is None  # too few updates seen
    stepped = SimulatedSensor(square_wave(100.0, 300.0, 0.2), 3.0, update_s=update_s)
    power = polled_trace(stepped.instant_w, 500.0, 2.5, NOMINAL_COST, random.Random(0))
    assert update_period_s(power, is_counter=False) >= update_s * 0.95  # a reading changes at most once an update
    assert update_period_s(Trace(np.arange(0.0, 3.0, 0.5), np.full(6, 100.0)), is_counter=False) == 0.5  # log rows
    assert update_period_s(Trace(np.arange(0.0, 2.0, 0.5), np.full(4, 100.0)), is_counter=False) is None


def test_steady_power_across_the_edges_bounds_them_by_a_call_not_a_quarter_update():
    """Calls of 1 ms run through both edges: the edge bound drops from a quarter update at peak
    per edge to about one call's energy, and stays above the error actually made."""
    channel = simulated_channels()["counter"]
    rng = random.Random(1)
    sensor = SimulatedSensor(constant(300.0), 6.0, phase_s=0.037)
    trace = polled_trace(sensor.counter_j, 100.0, 6.0, NOMINAL_COST, rng)
    start, end = 1.2345, 4.5678
    idle_edges = measure_channel(channel, trace, start, end)
    steady = measure_channel(channel, trace, start, end, call_s=1e-3)
    assert idle_edges.joules == steady.joules
    assert idle_edges.edge_error_j == pytest.approx(300.0 * (0.1 / 2 + 0.01), rel=0.1)
    assert steady.edge_error_j == pytest.approx(300.0 * (2 * 1e-3 + 0.01), rel=0.1)
    assert abs(steady.joules - sensor.true_energy(start, end)) <= steady.edge_error_j


def test_power_varying_more_slowly_than_the_calls_widens_the_steady_edge_bound():
    channel = simulated_channels()["counter"]
    sensor = SimulatedSensor(square_wave(150.0, 350.0, 0.097), 6.0)
    trace = polled_trace(sensor.counter_j, 100.0, 6.0, NOMINAL_COST, random.Random(2))
    steady = measure_channel(channel, trace, 1.2345, 4.5678, call_s=1e-3)
    one_call_each = 2 * steady.joules * 1e-3 / (4.5678 - 1.2345)
    assert steady.edge_error_j > one_call_each + 0.5 * 200.0 * 0.1 / 2  # the swing between updates counts
