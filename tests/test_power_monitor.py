"""PowerMonitor end to end: no source on this machine, a simulated NVML-like source, faults."""

import csv
import threading
import time

import pytest
from fake_nvml import fake_pynvml, field

from wattbench.conditions import ConditionSensors
from wattbench.device import Device
from wattbench.power import ENERGY_FIELDS, PowerConfig, PowerMonitor, describe_sources, monitor as monitor_module
from wattbench.power import nvml, sampler as sampler_module
from wattbench.power.base import Channel, Probe, SourceStatus
from wattbench.power.simulate import constant, live_probe

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
