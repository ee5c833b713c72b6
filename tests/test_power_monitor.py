"""PowerMonitor end to end: no source on this machine, a simulated NVML-like source, faults."""

import csv
import math
import random
import threading
import time

import pytest
from fake_nvml import fake_pynvml, field

from wattbench import schema
from wattbench.conditions import ConditionSensors
from wattbench.device import Device
from wattbench.power import ENERGY_FIELDS, PowerConfig, PowerMonitor, describe_sources, monitor as monitor_module
from wattbench.power.monitor import EDGE_RUN_UPDATES
from wattbench.power import nvml, sampler as sampler_module
from wattbench.power.base import Channel, Probe, SourceStatus
from wattbench.power.simulate import constant, live_probe
from wattbench.record import EnergyRecord, kinds

CPU = Device("cpu", None, "Test CPU")
FAST = dict(min_window_s=0.3, max_window_s=0.3, repeats=2, idle_s=0.2, sample_hz=200)  # windows of 0.3 s


def no_source_config(tmp_path, **extra):
    return PowerConfig(sysfs_root=str(tmp_path), **extra)


def test_without_any_source_every_number_is_none_and_the_reason_says_why(tmp_path):
    calls = []
    began = time.perf_counter()
    with PowerMonitor(CPU, no_source_config(tmp_path)) as monitor:
        record = monitor.measure(lambda: calls.append(1), lambda: None, 10)
    assert time.perf_counter() - began < 2.0 and calls == []  # no idle wait, no windows
    assert record["method"] == "none" and record["source"] == "none"
    assert record["reason"].startswith("no power source: ")
    for source in ("nvml", "rapl", "hwmon", "replay"):
        assert source + ":" in record["reason"]
    assert all(record[f] is None for f in ENERGY_FIELDS)
    assert [s["name"] for s in monitor.run_info()["sources"]] == ["nvml", "rapl", "hwmon", "replay"]


def test_this_machine_reports_every_source_unavailable_with_a_reason(tmp_path):
    statuses = describe_sources(CPU, no_source_config(tmp_path))
    assert [s.name for s in statuses] == ["nvml", "rapl", "hwmon", "replay"]
    assert all(not s.available and s.detail for s in statuses)


def test_simulated_source_gives_the_full_energy_record(monkeypatch):
    monkeypatch.setattr(sampler_module, "CPU_BUDGET", 1.0)  # polled at 200 Hz even on a slow host: 0.2 s windows
    syncs = []
    probe = live_probe(constant(200.0), duration_s=60.0)
    with PowerMonitor(CPU, PowerConfig(**FAST), probes=[probe]) as monitor:
        record = monitor.measure(lambda: time.sleep(0.001), lambda: syncs.append(1), units_per_call=4.0)
        info = monitor.run_info()
    assert record["valid"] and record["reason"] is None
    assert record["source"] == "simulated" and record["method"] == "counter"
    calls = sum(record["calls_per_window"]) / len(record["calls_per_window"])
    assert record["joules_per_call"] == pytest.approx(200.0 * record["window_s"] / calls, rel=0.1)
    assert record["joules_per_unit"] == pytest.approx(record["joules_per_call"] / 4.0)
    assert record["units_per_joule"] == pytest.approx(4.0 / record["joules_per_call"])
    assert record["avg_power_w"] == pytest.approx(200.0, rel=0.1)
    assert record["idle_power_w"] == pytest.approx(200.0, rel=0.05)
    assert abs(record["dynamic_joules_per_call"]) < 0.1 * record["joules_per_call"]
    assert record["window_s"] >= FAST["min_window_s"] and record["samples"] > 0
    assert record["uncertainty_pct"] > 0
    assert record["cross_check_method"] == "instant" and abs(record["disagreement_pct"]) < 10
    assert set(record["channels"]) == {"sim:counter", "sim:instant"}
    assert any("sensor updates" in w for w in record["warnings"])  # 0.3 s windows are short
    assert len(syncs) == 3 * FAST["repeats"]  # after the run before each window, the window, the run after it
    spans = record["window_spans_s"]
    assert len(spans) == FAST["repeats"] and all(0 <= start < end for start, end in spans)
    assert all(previous[1] <= following[0] for previous, following in zip(spans, spans[1:]))
    assert info["source"] == "simulated" and info["idle_power_w"] == pytest.approx(200.0, rel=0.05)
    assert info["sampler"]["hz"] == 200 and info["faults"] == []
    counter, instant = (info["sampler"]["channels"][name] for name in ("sim:counter", "sim:instant"))
    assert counter["role"] == "primary" and instant["role"] == "secondary"
    assert counter["poll_hz"] > 0 and counter["read_s_max"] >= counter["read_s_mean"] > 0
    assert info["sampler"]["cpu_pct"] > 0 and info["sampler"]["plan_hz"] == 200
    assert record["conditions"]["unknown"] and "nvml" in record["conditions"]["reason"].lower()


def test_device_lost_mid_run_marks_energy_invalid_and_does_not_raise():
    probe = live_probe(constant(200.0), duration_s=0.6)
    with PowerMonitor(CPU, PowerConfig(**FAST), probes=[probe]) as monitor:
        time.sleep(0.3)
        record = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
        info = monitor.run_info()
    assert record["valid"] is False and record["reason"].startswith("energy invalid: ")
    assert "device lost" in record["reason"]
    assert all(record[f] is None for f in ENERGY_FIELDS if f != "idle_power_w")
    assert any("device lost" in fault for fault in info["faults"])


def test_trace_is_written_only_when_asked(tmp_path):
    probe = live_probe(constant(150.0), duration_s=60.0)
    path = tmp_path / "trace.csv"
    with PowerMonitor(CPU, PowerConfig(**FAST, save_trace=True), probes=[probe]) as monitor:
        monitor.write_trace(str(path))
    rows = list(csv.DictReader(path.open()))
    assert {r["channel"] for r in rows} == {"sim:counter", "sim:instant"}
    assert all(float(r["watts"]) == pytest.approx(150.0) for r in rows if r["method"] == "instant")
    assert all(r["joules"] for r in rows if r["method"] == "counter")
    skipped = tmp_path / "skipped.csv"
    with PowerMonitor(CPU, PowerConfig(**FAST), probes=[live_probe(constant(1.0), 60.0)]) as monitor:
        monitor.write_trace(str(skipped))
    assert not skipped.exists()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"min_window_s": 0}, ValueError, "min_window_s"),
    ({"repeats": 0}, ValueError, "repeats"),
    ({"idle_s": -1}, ValueError, "idle_s"),
    ({"sample_hz": "fast"}, TypeError, "sample_hz"),
    ({"replay_path": 3}, TypeError, "replay_path"),
    ({"cooldown_c": "hot"}, TypeError, "cooldown_c"),
    ({"cooldown_c": -1}, ValueError, "cooldown_c"),
    ({"cooldown_timeout_s": 0}, ValueError, "cooldown_timeout_s"),
    ({"target_pct": 0}, ValueError, "target_pct"),
    ({"target_pct": 100}, ValueError, "target_pct"),
    ({"target_pct": "2%"}, TypeError, "target_pct"),
    ({"max_window_s": 0}, ValueError, "max_window_s"),
])
def test_bad_config_names_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        PowerConfig(**kwargs)


def test_bad_measure_arguments_are_rejected(tmp_path):
    with PowerMonitor(CPU, no_source_config(tmp_path)) as monitor:
        with pytest.raises(ValueError, match="units_per_call"):
            monitor.measure(lambda: None, lambda: None, 0)
        with pytest.raises(TypeError, match="callables"):
            monitor.measure(None, lambda: None, 1)


POWER_CAP = 0x4


def gpu_conditions(temperatures, clock_events=lambda: 0, missing=None) -> ConditionSensors:
    """Fake condition sensors: temperatures read in turn (the last one repeats), fixed clocks."""
    remaining = list(temperatures)

    def temperature():
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    readers = {"temperature_c": temperature, "sm_clock_mhz": lambda: 1980, "mem_clock_mhz": lambda: 2619,
               "clock_events": clock_events}
    missing = missing or {}
    return ConditionSensors({q: r for q, r in readers.items() if q not in missing}, missing)


def measure_with(conditions: ConditionSensors, step=lambda: time.sleep(0.001), **config) -> tuple[dict, dict]:
    probe = live_probe(constant(300.0), duration_s=60.0)
    with PowerMonitor(CPU, PowerConfig(**{**FAST, **config}), probes=[probe], conditions=conditions) as monitor:
        record = monitor.measure(step, lambda: None, units_per_call=1.0)
        return record, monitor.run_info()


def test_a_power_cap_during_the_windows_flags_the_record():
    capped = threading.Event()

    def step():  # the workload pushes the GPU into its power cap
        capped.set()
        time.sleep(0.001)

    record, info = measure_with(gpu_conditions([45], clock_events=lambda: POWER_CAP if capped.is_set() else 0),
                                step=step)
    conditions = record["conditions"]
    assert conditions["throttled"] is True and conditions["throttle_reasons"] == ["sw_power_cap"]
    assert conditions["temperature_c"] == [45, 45] and conditions["sm_clock_mhz"] == [1980, 1980]
    assert len(conditions["windows"]) == FAST["repeats"]
    assert any(w.startswith("throttled during the energy windows: sw_power_cap") for w in record["warnings"])
    assert info["idle_temperature_c"] == 45 and info["conditions"]["missing"] == {}


def test_a_cool_gpu_is_not_flagged_and_idle_is_not_a_throttle():
    record, _ = measure_with(gpu_conditions([45], clock_events=lambda: 0x1), repeats=1)
    assert record["conditions"]["clock_events"] == ["gpu_idle"]
    assert record["conditions"]["throttled"] is False
    assert not any("throttled" in w for w in record["warnings"]) and "cooldown" not in record


def test_cool_down_waits_for_the_idle_temperature_before_the_windows(monkeypatch):
    monkeypatch.setattr(monitor_module, "COOLDOWN_POLL_S", 0.01)
    # 40 C at the end of the idle baseline; the previous benchmark left the GPU at 60 C.
    record, _ = measure_with(gpu_conditions([40, 60, 55, 48, 44]), repeats=1, cooldown_c=5)
    cooldown = record["cooldown"]
    assert cooldown["reached"] is True and cooldown["idle_c"] == 40 and cooldown["target_c"] == 45
    assert cooldown["start_c"] == 60 and cooldown["end_c"] == 44 and cooldown["waited_s"] > 0
    assert record["conditions"]["temperature_c"] == [44, 44]
    assert not any("cool-down" in w for w in record["warnings"])


def test_cool_down_gives_up_after_its_timeout_with_a_warning(monkeypatch):
    monkeypatch.setattr(monitor_module, "COOLDOWN_POLL_S", 0.01)
    began = time.perf_counter()
    record, _ = measure_with(gpu_conditions([40, 70]), repeats=1, cooldown_c=5, cooldown_timeout_s=0.05)
    assert time.perf_counter() - began < 5
    assert record["cooldown"]["reached"] is False and record["cooldown"]["end_c"] == 70
    assert any(w.startswith("cool-down gave up after 0.05 s: the GPU is at 70 C") for w in record["warnings"])


def test_cool_down_ends_at_once_when_the_gpu_has_stopped_answering(monkeypatch):
    monkeypatch.setattr(monitor_module, "COOLDOWN_POLL_S", 0.01)
    sensors = gpu_conditions([40, 70])
    monkeypatch.setattr(type(sensors), "hung", property(lambda self: "reading temperature_c did not return"))
    began = time.perf_counter()
    record, _ = measure_with(sensors, repeats=1, cooldown_c=5, cooldown_timeout_s=30)
    assert time.perf_counter() - began < 10  # not the 30 s timeout
    assert record["cooldown"]["reached"] is False and "did not return" in record["cooldown"]["hung"]


def test_cool_down_without_a_temperature_is_skipped_with_the_reason():
    unreadable = "temperature_c: not supported on this GPU (NVML error 3)"
    record, _ = measure_with(gpu_conditions([0], missing={"temperature_c": unreadable}), repeats=1, cooldown_c=5)
    assert record["cooldown"]["reached"] is False
    assert record["conditions"]["temperature_c"] == {"unknown": True, "reason": unreadable}
    assert any(w.startswith("cool-down skipped") and unreadable in w for w in record["warnings"])


def test_sampler_is_paused_outside_energy_windows_unless_the_whole_trace_is_kept():
    seen_while_measuring = []

    def step():
        seen_while_measuring.append(monitor.sampler.paused)
        time.sleep(0.001)
    with PowerMonitor(CPU, PowerConfig(**FAST), probes=[live_probe(constant(100.0), 60.0)]) as monitor:
        assert monitor.sampler.paused  # timing rounds run without the sampler's wake-ups
        record = monitor.measure(step, lambda: None, units_per_call=1.0)
        assert monitor.sampler.paused
    assert record["valid"] and seen_while_measuring and not any(seen_while_measuring)
    with PowerMonitor(CPU, PowerConfig(**FAST, save_trace=True), probes=[live_probe(constant(100.0), 60.0)]) as kept:
        assert not kept.sampler.paused
        kept.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
        assert not kept.sampler.paused


GPU = Device("cuda", 0, "NVIDIA H100 80GB HBM3", "2f6b8a1e-0000-4c1d-9a3e-1234567890ab")


def test_nvmls_counter_and_instant_power_are_cross_checked_though_their_scopes_are_labelled_apart(monkeypatch):
    """NVML's counter is the "GPU board", its instant field the "GPU": the H100/H200 case."""
    monkeypatch.setattr(Device, "synchronize", lambda device: None)  # no CUDA here
    began = time.perf_counter()

    def energy_mj(handle):  # 200 W, the counter updating every 100 ms
        return 20_000 * int((time.perf_counter() - began) / 0.1)
    with fake_pynvml(monkeypatch) as fake:
        fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = energy_mj
        fake.nvmlDeviceGetFieldValues.return_value = [field(200_000)]
        probe = nvml.probe(GPU)
        assert [c.scope for c in probe.channels] == ["GPU board", "GPU"]
        with PowerMonitor(GPU, PowerConfig(**FAST), probes=[probe],
                          conditions=ConditionSensors.unavailable("not read in this test")) as monitor:
            record = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
    assert record["valid"] and record["cross_check_method"] == "instant"
    assert abs(record["disagreement_pct"]) < 10


def test_a_gpu_that_hangs_mid_run_ends_its_windows_invalid_and_the_run_completes(monkeypatch):
    monkeypatch.setattr(sampler_module, "HUNG_READ_S", 0.2)
    monkeypatch.setattr(sampler_module, "STOP_WAIT_S", 0.3)
    healthy = live_probe(constant(200.0), duration_s=60.0)
    release, lost = threading.Event(), threading.Event()
    counter_read = healthy.channels[0].read

    def read():  # the driver call never returns once the GPU is lost
        if lost.is_set():
            release.wait()
        return counter_read()
    counter = Channel(**{**healthy.channels[0].__dict__, "read": read})
    probe = Probe(SourceStatus("simulated", True, "hangs"), [counter, healthy.channels[1]], [counter], healthy.info)
    outcome = {}

    def run():
        with PowerMonitor(CPU, PowerConfig(**FAST), probes=[probe]) as monitor:
            outcome["before"] = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
            lost.set()
            outcome["after"] = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
            outcome["info"] = monitor.run_info()
    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "the run hung with the GPU"
    finally:
        release.set()
    assert outcome["before"]["valid"]
    after = outcome["after"]
    assert after["valid"] is False and "a read has not returned" in after["reason"]
    assert any("has not returned" in fault for fault in outcome["info"]["faults"])
    assert outcome["info"]["sampler"]["stuck"] is not None


# -- the window rules ------------------------------------------------------------------------

from wattbench.power.monitor import (FIXED_WINDOWS, MIN_UPDATES, MOST_WINDOWS, TARGET_REACHED, WindowRule, combine,
                                     run_windows)
from wattbench.power.sampler import ChannelWindow
from wattbench.power.simulate import SimulatedRun, square_wave

RULE = WindowRule(target=0.02, min_window_s=1.0, max_window_s=20.0, max_windows=3, update_s=0.1, poll_s=0.01)


def window(seconds, joules, edge_j=0.0, valid=True):
    power = joules / seconds if valid else None
    return ChannelWindow("c", "counter", seconds, valid, joules=joules if valid else None, avg_power_w=power,
                         peak_power_w=power, updates=int(seconds / 0.1), edge_error_j=edge_j)


def test_windows_stop_once_two_agree_within_the_target():
    windows = [window(2.0, 600.0, edge_j=2.0), window(2.0, 600.6, edge_j=2.0)]
    assert combine(windows, [1000, 1000])["uncertainty_pct"] < 2
    assert RULE.decide(windows, [1000, 1000]) == (TARGET_REACHED, 2.0)
    assert RULE.decide(windows[:1], [1000])[0] is None  # one window has no spread to judge


def test_windows_that_disagree_go_on_and_stop_after_the_most_windows():
    windows = [window(2.0, 600.0, edge_j=2.0), window(2.0, 630.0, edge_j=2.0)]
    stopped, length = RULE.decide(windows, [1000, 1000])
    assert stopped is None and length == 2.0
    windows.append(window(2.0, 570.0, edge_j=2.0))
    assert RULE.decide(windows, [1000] * 3)[0] == MOST_WINDOWS


def test_edges_above_a_third_of_the_target_lengthen_the_next_windows_up_to_the_ceiling():
    # 6 J of edges in 600 J is 1%: the floor for edges under 2%/3 is 1.5 x as long.
    stopped, length = RULE.decide([window(2.0, 600.0, edge_j=6.0)], [1000])
    assert stopped is None and length == pytest.approx(3.0)
    assert RULE.measured_floor_s([window(2.0, 600.0, edge_j=6.0)]) == pytest.approx(3.0)
    _, capped = RULE.decide([window(2.0, 600.0, edge_j=600.0)], [1000])
    assert capped == RULE.max_window_s


def test_a_given_minimum_bounds_every_window_even_above_the_ceiling():
    rule = WindowRule(target=0.02, min_window_s=30.0, max_window_s=20.0, max_windows=3, update_s=0.1)
    assert rule.first_length(call_s=1e-3) == 30.0
    assert rule.decide([window(30.0, 9000.0, edge_j=9000.0)], [1000])[1] == 30.0


def test_the_first_window_is_the_floor_predicted_from_the_update_period_poll_and_read():
    # At each edge: one call (1 ms) or a quarter update, half a poll; in all 12 ms of power, x 3 / 2%.
    rule = WindowRule(target=0.02, min_window_s=0.1, max_window_s=20.0, max_windows=3, update_s=0.1, poll_s=0.01)
    assert rule.first_length(call_s=1e-3) == pytest.approx(1.8)
    assert rule.first_length(call_s=1.0) == pytest.approx(3 * 0.06 / 0.02)  # long calls: a quarter update each
    coarse = WindowRule(target=0.5, min_window_s=0.1, max_window_s=20.0, max_windows=3, update_s=0.1)
    assert coarse.first_length(call_s=1e-3) == pytest.approx(MIN_UPDATES * 0.1)  # never fewer updates than that


def test_a_spread_that_misses_the_target_doubles_the_windows_from_the_third_on():
    rule = WindowRule(target=0.02, min_window_s=1.0, max_window_s=20.0, max_windows=5, update_s=0.1)
    windows = [window(2.0, 600.0), window(2.0, 640.0), window(2.0, 570.0)]
    assert rule.decide(windows, [1000] * 3) == (None, 4.0)
    assert rule.decide(windows[:2], [1000] * 2) == (None, 2.0)  # the third window cuts Student's t most


def test_without_a_target_the_windows_are_fixed():
    rule = WindowRule(target=None, min_window_s=0.5, max_window_s=20.0, max_windows=2, update_s=0.1)
    assert rule.first_length(call_s=1.0) == 0.5
    windows = [window(0.5, 150.0), window(0.5, 200.0)]
    assert rule.decide(windows[:1], [10]) == (None, 0.5)
    assert rule.decide(windows, [10, 10]) == (FIXED_WINDOWS, 0.5)


def test_invalid_windows_do_not_count_toward_the_target():
    windows = [window(2.0, 600.0, edge_j=2.0), window(2.0, 0.0, valid=False), window(2.0, 600.3, edge_j=2.0)]
    assert RULE.decide(windows[:2], [1000] * 2)[0] is None
    assert RULE.decide(windows, [1000] * 3)[0] == TARGET_REACHED


def test_windows_of_unequal_length_are_pooled_by_their_calls():
    summary = combine([window(1.0, 100.0, edge_j=1.0), window(3.0, 330.0, edge_j=1.0)], [100, 300])
    assert summary["joules_per_call"] == pytest.approx(430.0 / 400)
    assert summary["edge_pct"] == pytest.approx(100 * 2.0 / 430.0)
    assert summary["window_joules_per_call"] == [1.0, 1.1]


class ScriptedRunner:
    """A runner whose step takes 1 ms and whose windows each measure the energies given."""

    def __init__(self, joules):
        self.now, self.joules, self.log = 0.0, list(joules), []

    def clock(self):
        return self.now

    def run(self, seconds):
        self.log.append(("run", seconds))
        calls = max(1, math.ceil(round(seconds / 1e-3, 9)))
        self.now += calls * 1e-3
        return calls

    def window(self, seconds):
        start = self.now
        calls = self.run(seconds)
        self.log[-1] = ("window", seconds)
        return start, self.now, calls

    def evaluate(self, start_s, end_s, call_s):
        self.log.append(("evaluate", round(call_s, 9)))
        return window(end_s - start_s, self.joules.pop(0), edge_j=0.5)


def test_the_step_runs_through_each_edge_and_each_window_starts_at_a_random_phase():
    runner = ScriptedRunner([540.0, 540.3])
    rule = WindowRule(target=0.02, min_window_s=0.1, max_window_s=20.0, max_windows=3, update_s=0.1, poll_s=0.01)
    windows, calls, stopped = run_windows(runner, rule, random.Random(0))
    assert stopped == TARGET_REACHED and len(windows) == 2 and calls == [1800, 1800]
    kinds = [kind for kind, _ in runner.log]
    assert kinds == ["run", "window", "run", "evaluate"] * 2  # evaluated only after the run past its end
    leads = [seconds for kind, seconds in runner.log[0::4]]
    assert all(EDGE_RUN_UPDATES * 0.1 <= lead < (EDGE_RUN_UPDATES + 1) * 0.1 for lead in leads)
    assert len(set(leads)) == 2  # the random start offsets differ
    assert all(seconds == EDGE_RUN_UPDATES * 0.1 for kind, seconds in runner.log[2::4])
    assert runner.log[3] == ("evaluate", 1e-3)  # the window's own time per call


def test_simulated_benchmarks_reach_the_target_and_report_why_they_stopped():
    rng = random.Random(3)
    for power, call_s in ((constant(300.0), 1e-3), (square_wave(150.0, 350.0, 0.097), 0.01)):
        run = SimulatedRun(power, call_s, 70.0, rng, noise=0.01)
        record = run.measure(PowerConfig(), rng)
        adaptive = record["adaptive"]
        assert adaptive["stopped"] == TARGET_REACHED and adaptive["target_pct"] == 2.0
        assert record["uncertainty_pct"] == adaptive["reached_pct"] <= 2.0
        assert adaptive["update_period_measured"] and adaptive["update_period_s"] == pytest.approx(0.1, rel=0.1)
        assert 2 <= record["windows"] <= 3 and all(1.0 <= s <= 20.0 for s in adaptive["lengths_s"])
        truth = run.true_joules_per_call(record["calls_per_window"])
        assert abs(record["joules_per_call"] - truth) / truth * 100 <= record["uncertainty_pct"]


def test_a_live_benchmark_record_says_what_its_windows_aimed_at_and_reached(monkeypatch):
    monkeypatch.setattr(sampler_module, "CPU_BUDGET", 1.0)
    probe = live_probe(constant(200.0), duration_s=60.0)
    config = PowerConfig(**{**FAST, "max_window_s": 0.5, "target_pct": 50.0})
    with PowerMonitor(CPU, config, probes=[probe]) as monitor:
        record = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
        info = monitor.run_info()
    assert info["update_period_s"] == pytest.approx(0.1, rel=0.2) and info["update_period_reason"] is None
    adaptive = record["adaptive"]
    assert adaptive["target_pct"] == 50.0 and adaptive["stopped"] == TARGET_REACHED
    assert adaptive["reached_pct"] == record["uncertainty_pct"] <= 50.0
    assert adaptive["update_period_s"] == info["update_period_s"] and adaptive["update_period_measured"]
    assert all(0.3 <= s < 0.6 for s in adaptive["lengths_s"])  # between the minimum and the ceiling
    assert len(record["window_joules_per_call"]) == record["windows"] == 2 and record["edge_calls"] > 0
    assert not any("not reached" in w for w in record["warnings"])
    schema.validate(record, schema.ENERGY, "energy")  # the documented run-file fields
    # A measured record fills every field record.EnergyRecord declares (a valid one has no reason): a field added
    # there and forgotten here fails this.
    assert {name for name in kinds(EnergyRecord) if record.get(name) is None} == {"reason"}
    assert EnergyRecord.from_json(record).to_json() == record


def test_a_target_out_of_reach_is_warned_about(monkeypatch):
    monkeypatch.setattr(sampler_module, "CPU_BUDGET", 1.0)
    probe = live_probe(constant(200.0), duration_s=60.0)
    with PowerMonitor(CPU, PowerConfig(**{**FAST, "target_pct": 0.01}), probes=[probe]) as monitor:
        record = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
    assert record["adaptive"]["stopped"] == MOST_WINDOWS and record["windows"] == FAST["repeats"]
    assert any(w.startswith("energy target ±0.01% not reached") for w in record["warnings"])
    assert any("above the 0.3 s ceiling" in w for w in record["warnings"])


def test_without_an_idle_baseline_the_update_period_is_still_measured():
    probe = live_probe(constant(200.0), duration_s=60.0)
    with PowerMonitor(CPU, PowerConfig(**{**FAST, "idle_s": 0}), probes=[probe]) as monitor:
        assert monitor.update_s == pytest.approx(0.1, rel=0.2)


@pytest.mark.parametrize("given, expected", [
    ({}, {}),
    ({"wattbench_energy_target": "1%"}, {"target_pct": 1.0}),
    ({"wattbench_energy_target": "0.005"}, {"target_pct": 0.5}),
    ({"wattbench_energy_target": "off", "wattbench_energy_window": 5.0}, {"target_pct": None, "min_window_s": 5.0}),
    ({"wattbench_energy_max_window": 8.0}, {"max_window_s": 8.0}),
])
def test_the_energy_window_options_become_the_power_config(given, expected):
    from wattbench.config import energy_windows

    settings = energy_windows(lambda name: given.get(name))
    assert settings == pytest.approx(expected)
    PowerConfig(**settings)  # a config the monitor accepts


@pytest.mark.parametrize("target, message", [("0%", "above 0%"), ("2", r"in \[0%, 100%\)"), ("two", "percentage")])
def test_a_bad_energy_target_is_one_line_naming_the_option(target, message):
    from wattbench.errors import UsageError
    from wattbench.config import energy_windows

    with pytest.raises(UsageError, match=f"--wattbench-energy-target.*{message}"):
        energy_windows(lambda name: target if name == "wattbench_energy_target" else None)
