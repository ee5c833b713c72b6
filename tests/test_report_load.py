"""Run files into one tidy DataFrame, and the device spec table."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from wattbench.errors import UsageError
from wattbench.report.load import COLUMNS, comparable, load_runs
from wattbench.specs import SHIPPED, load_specs

DATA = Path(__file__).parent / "data" / "report"
CPU, H100, L4 = DATA / "cpu_run.json", DATA / "fixture_h100.json", DATA / "fixture_l4.json"


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_one_row_per_record_from_every_host():
    loaded = load_runs([CPU, H100, L4])
    runs = [json.loads(p.read_text()) for p in (CPU, H100, L4)]
    frame = loaded.frame
    assert loaded.problems == []
    assert list(frame.columns) == COLUMNS
    assert len(frame) == sum(len(run["benchmarks"]) for run in runs)
    assert set(frame["host"]) == {"vm", "test-fixture-host-a", "test-fixture-host-b"}
    first = runs[0]["benchmarks"][0]["extra_info"]
    row = frame.iloc[0]
    assert (row["workload"], row["style"], row["impl"], row["precision"], row["size"]) == \
        (first["workload"], first["style"], first["impl"], first["precision"], first["size"])
    assert row["median_ms"] == pytest.approx(first["median_s"] * 1e3)
    assert row["batch"] == first["units_per_call"]
    assert row["p99_s"] == pytest.approx(np.percentile(first["timing"]["samples_s"], 99))
    assert row["arithmetic_intensity"] == pytest.approx(first["flops"] / first["bytes"])


def test_time_uncertainty_is_the_medians_95_percent_half_width(tmp_path):
    run = json.loads(H100.read_text())
    run["benchmarks"] = run["benchmarks"][:1]
    info = run["benchmarks"][0]["extra_info"]
    info["timing"]["samples_s"] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    info["median_s"] = 5.0
    row = load_runs([write(tmp_path / "run.json", run)]).frame.iloc[0]
    iqr = 7.0 - 3.0
    assert row["time_uncertainty_pct"] == pytest.approx(100 * 1.96 * math.sqrt(math.pi / 2) / 1.349 * iqr / 3 / 5)
    assert row["p90_s"] == pytest.approx(8.2)


def test_cpu_run_keeps_interpreted_flags_and_says_energy_was_not_measured():
    frame = load_runs([CPU]).frame
    expected = [b["extra_info"]["interpreted"] for b in json.loads(CPU.read_text())["benchmarks"]]
    assert frame["interpreted"].tolist() == expected
    assert not frame["energy_measured"].any()
    assert frame["units_per_joule"].isna().all()
    assert frame["energy_reason"].str.startswith("no power source").all()


def test_energy_and_percent_of_peak_columns_of_a_fixture_gpu():
    frame = load_runs([H100]).frame
    bench = json.loads(H100.read_text())["benchmarks"][0]["extra_info"]
    row = frame.iloc[0]
    assert row["energy_measured"] and row["units_per_joule"] == pytest.approx(bench["energy"]["units_per_joule"])
    assert row["energy_uncertainty_pct"] == pytest.approx(bench["energy"]["uncertainty_pct"])
    spec = load_specs().find(bench["device_name"])
    assert row["spec_name"] == spec.name
    peak, bandwidth = spec.peak_for(bench["precision"]), spec.memory_bandwidth_gbps
    assert row["pct_peak_flops"] == pytest.approx(100 * bench["tflops"] / peak)
    attainable = min(peak, bench["flops"] / bench["bytes"] * bandwidth / 1e3)
    assert row["pct_roofline"] == pytest.approx(100 * bench["tflops"] / attainable)


def test_bad_files_are_reported_by_name_and_the_rest_still_loads(tmp_path):
    broken = write(tmp_path / "broken.json", "{not json")
    empty = write(tmp_path / "empty.json", {"benchmarks": [], "wattbench": {}})
    missing = tmp_path / "missing.json"
    loaded = load_runs([broken, CPU, empty, missing])
    problems = dict(loaded.problems)
    assert set(problems) == {broken, missing} and loaded.empty == [empty]
    assert "not valid JSON" in problems[broken]
    assert "cannot read" in problems[missing]
    assert len(loaded.frame) == len(json.loads(CPU.read_text())["benchmarks"])


def test_no_files_is_a_usage_error():
    with pytest.raises(UsageError, match="no run files"):
        load_runs([])
    with pytest.raises(TypeError, match="paths"):
        load_runs(CPU)


def test_comparable_drops_interpreted_and_keeps_the_latest_run_of_each_benchmark(tmp_path):
    later = json.loads(H100.read_text())
    later["wattbench"]["started_utc"] = "2026-12-01T00:00:00+00:00"
    for bench in later["benchmarks"]:
        bench["extra_info"]["median_s"] *= 2
    frame = load_runs([CPU, H100, write(tmp_path / "later.json", later)]).frame
    kept = comparable(frame)
    assert not kept["interpreted"].any()
    fixture = kept[kept["device_name"].str.startswith("TEST-FIXTURE")]
    assert len(fixture) == len(later["benchmarks"])
    assert (fixture["run_file"] == str(tmp_path / "later.json")).all()


def test_shipped_specs_cover_the_common_accelerators_each_figure_sourced():
    data = json.loads(SHIPPED.read_text())
    names = {d["name"] for d in data["devices"]}
    for wanted in ("A100 SXM", "H100 SXM", "H100 PCIe", "H200", "L4", "L40S", "A10G", "RTX 4090", "MI300X"):
        assert any(wanted in name for name in names), wanted
    for device in data["devices"]:
        figures = list(device.get("peak_tflops", {}).values())
        figures += [device[k] for k in ("memory_bandwidth_gbps", "memory_gb", "tdp_w") if k in device]
        assert figures, device["name"]
        for figure in figures:
            assert figure["value"] > 0 and figure["source"].strip(), device["name"]
        if len(device.get("peak_tflops", {})) < 6 or "tdp_w" not in device:
            assert device.get("notes"), f"{device['name']}: a figure left out needs a note saying why"


@pytest.mark.parametrize("reported, expected", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM 80GB"), ("NVIDIA L4", "NVIDIA L4"), ("NVIDIA L40S", "NVIDIA L40S"),
    ("NVIDIA H200", "NVIDIA H200 SXM"), ("NVIDIA H200 NVL", None), ("AMD EPYC", None),
])
def test_device_names_as_drivers_report_them_find_their_spec(reported, expected):
    spec = load_specs().find(reported)
    assert (spec.name if spec else None) == expected


def test_a_user_spec_file_adds_a_cpu_and_is_tried_first(tmp_path):
    user = write(tmp_path / "mine.json", {"format": "wattbench-device-specs/1", "devices": [
        {"name": "TEST-FIXTURE CPU", "kind": "cpu", "match": ["AMD EPYC"],
         "peak_tflops": {"fp32": {"value": 2.0, "source": "test fixture"}},
         "memory_bandwidth_gbps": {"value": 100.0, "source": "test fixture"}}]})
    specs = load_specs(user)
    assert specs.find("AMD EPYC").kind == "cpu"
    frame = load_runs([CPU], specs).frame
    fp32 = frame[frame["precision"] == "fp32"]
    assert (fp32["pct_peak_flops"] == 100 * fp32["tflops"] / 2.0).all()
    assert math.isnan(frame.loc[frame["precision"] == "bf16", "pct_peak_flops"].iloc[0])


@pytest.mark.parametrize("device, message", [
    ({"name": "x", "peak_tflops": {"fp32": {"value": 1.0}}}, "source"),
    ({"name": "x", "peak_tflops": {"fp32": {"value": -1, "source": "s"}}}, "positive number"),
    ({"name": "x", "peak_tflops": {"fp64": {"value": 1, "source": "s"}}}, "keys must be among"),
    ({"name": "x", "match": ["("]}, "bad match pattern"),
    ({"name": "x", "kind": "tpu"}, "kind must be"),
])
def test_bad_user_specs_name_the_device_and_the_problem(tmp_path, device, message):
    user = write(tmp_path / "mine.json", {"format": "wattbench-device-specs/1", "devices": [device]})
    with pytest.raises(UsageError, match=message):
        load_specs(user)
