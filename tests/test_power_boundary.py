"""Every energy record names its measurement boundary; GPU + host where RAPL is read beside NVML; the report
table shows both boundaries where both exist, and the above-idle figure beside the total."""

import json
import time
from pathlib import Path

import pytest

from wattbench import schema
from wattbench.device import Device
from wattbench.power import PowerConfig, PowerMonitor
from wattbench.power.boundary import boundary
from wattbench.power.simulate import constant, live_probe
from wattbench.record import EnergyRecord
from wattbench.report.load import load_runs
from wattbench.report.render import benchmarks_table

CPU = Device("cpu", None, "Test CPU")
H100 = Path(__file__).parent / "data" / "report" / "fixture_h100.json"
CHANNELS = {"gpu0:counter": {"joules_per_call": 2.0}, "rapl:package-0": {"joules_per_call": 0.5},
            "rapl:package-0/dram": {"joules_per_call": 0.125}, "rapl:package-0/core": {"joules_per_call": 0.25},
            "rapl:psys": {"joules_per_call": 1.0}}


def test_a_gpu_figure_says_it_is_the_gpu_only_and_rapl_adds_the_hosts_packages_and_dram():
    block = boundary("nvml", "GPU board", 2.0, True, CHANNELS)
    assert block["covers"] == "GPU only (NVML, GPU board)"
    assert block["host_channels"] == ["rapl:package-0", "rapl:package-0/dram"]  # core is inside the package
    assert block["gpu_plus_host_joules_per_call"] == 2.625
    assert block["above_idle"].startswith("dynamic_joules_per_call")
    alone = boundary("nvml", "GPU board", 2.0, False, {"gpu0:counter": {"joules_per_call": 2.0}})
    assert "gpu_plus_host_joules_per_call" not in alone and alone["above_idle"] is None
    assert boundary("replay", "external meter", 3.0, True, {})["covers"] == "everything behind the plug (external meter)"
    assert boundary("rapl", "CPU package-0", 1.0, True, CHANNELS)["covers"] == "host CPU (RAPL, CPU package-0)"


def test_every_energy_record_names_its_boundary():
    config = PowerConfig(min_window_s=0.2, max_window_s=0.2, repeats=2, target_pct=None, idle_s=0.3, sample_hz=200)
    with PowerMonitor(CPU, config, probes=[live_probe(constant(150.0), 60.0)]) as monitor:
        record = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
    assert record["boundary"]["covers"] == "simulated GPU" and record["boundary"]["above_idle"]
    schema.ENERGY.check(record, ())
    with PowerMonitor(CPU, config, probes=[]) as monitor:
        missing = monitor.measure(lambda: None, lambda: None, units_per_call=1.0)
    assert missing["boundary"] == {"covers": "nothing: energy not measured"}
    assert EnergyRecord.from_json(missing).boundary == missing["boundary"]


def test_the_report_table_shows_gpu_plus_host_only_where_it_exists(tmp_path):
    run = json.loads(H100.read_text())
    bench = next(b for b in run["benchmarks"] if (b["extra_info"].get("energy") or {}).get("joules_per_call"))
    energy = bench["extra_info"]["energy"]
    energy["boundary"] = boundary("nvml", "GPU board", energy["joules_per_call"], True,
                                  {"rapl:package-0": {"joules_per_call": energy["joules_per_call"]}})
    with_host = tmp_path / "with_host.json"
    with_host.write_text(json.dumps(run))
    table = benchmarks_table(load_runs([with_host]).frame)
    row = table[table["J/unit GPU + host"] != "-"]
    assert len(row) == 1 and row["energy covers"].iloc[0] == "GPU only (NVML, GPU board)"
    assert float(row["J/unit GPU + host"].iloc[0]) == pytest.approx(2 * float(row["J/unit"].iloc[0]), rel=1e-3)
    assert "J/unit above idle" in table.columns
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(json.loads(H100.read_text())))
    assert "J/unit GPU + host" not in benchmarks_table(load_runs([plain]).frame).columns
