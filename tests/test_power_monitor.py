"""PowerMonitor end to end: no source on this machine, a simulated NVML-like source, faults."""

import csv
import time

import pytest

from wattbench.device import Device
from wattbench.power import ENERGY_FIELDS, PowerConfig, PowerMonitor, describe_sources
from wattbench.power.simulate import constant, live_probe

CPU = Device("cpu", None, "Test CPU")
FAST = dict(min_window_s=0.3, repeats=2, idle_s=0.2, sample_hz=200)


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


def test_simulated_source_gives_the_full_energy_record():
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
    assert len(syncs) == 2 * FAST["repeats"]
    spans = record["window_spans_s"]
    assert len(spans) == FAST["repeats"] and all(0 <= start < end for start, end in spans)
    assert all(previous[1] <= following[0] for previous, following in zip(spans, spans[1:]))
    assert info["source"] == "simulated" and info["idle_power_w"] == pytest.approx(200.0, rel=0.05)
    assert info["sampler"]["hz"] == 200 and info["faults"] == []


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
