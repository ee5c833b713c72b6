"""Test fixtures for the gate: synthetic run files in the run-file format, built from seeded samples.

These are test fixtures, not measurements: every number is generated here.
"""

import numpy as np

from wattbench.results import load_run, write_json_atomic

DEVICE = "NVIDIA H100 80GB HBM3"


def samples(median_s=1e-3, rounds=200, seed=0, spread=0.03):
    """Seeded lognormal per-round times around `median_s`."""
    rng = np.random.default_rng(seed)
    return list(median_s * np.exp(rng.normal(0.0, spread, rounds)))


def energy(joules_per_call=2.0, uncertainty_pct=1.0, method="counter", units_per_call=16.0):
    return {"source": "nvml", "method": method, "reason": None, "valid": True, "joules_per_call": joules_per_call,
            "joules_per_unit": joules_per_call / units_per_call, "units_per_joule": units_per_call / joules_per_call,
            "avg_power_w": 300.0, "uncertainty_pct": uncertainty_pct, "window_s": 5.0, "windows": 3,
            "valid_windows": 3}


def no_energy(reason="no power source: test fixture"):
    return {"source": "none", "method": "none", "reason": reason, "joules_per_call": None, "joules_per_unit": None,
            "units_per_joule": None, "uncertainty_pct": None}


def record(workload="gemm.infer", impl="torch", precision="fp32", size="M16-K512-N512", times=None,
           energy_record=None, device_name=DEVICE, interpreted=False, method="cuda_event"):
    times = samples() if times is None else times
    case = f"{workload}-{impl}-{precision}-{size}"
    return {"group": workload, "name": f"test_kernel[{case}]", "params": {"wattbench_case": case},
            "stats": {"median": float(np.median(times)), "rounds": len(times)},
            "extra_info": {"workload": workload, "op": workload.split(".")[0], "style": workload.split(".")[-1],
                           "impl": impl, "precision": precision, "size": size, "device": "cuda:0",
                           "device_name": device_name, "interpreted": interpreted, "unit": "tokens",
                           "units_per_call": 16.0, "timing": {"method": method, "rounds": len(times),
                                                              "samples_s": times},
                           "median_s": float(np.median(times)),
                           "energy": energy() if energy_record is None else energy_record}}


def run(records, device_name=DEVICE, driver="550.54.15", interpreted=False, commit="0123456789abcdef",
        failed=(), skipped=()):
    return {"machine_info": {"wattbench": {"wattbench_commit": {"id": commit, "dirty": False},
                                           "device": {"spec": "cuda:0", "type": "cuda", "name": device_name},
                                           "triton_interpreted": interpreted, "nvidia_driver": driver}},
            "commit_info": {"id": commit}, "datetime": "2026-11-21T23:08:48+00:00", "version": "5.2.3",
            "benchmarks": records,
            "wattbench": {"format": "wattbench-run/1", "device": "cuda:0", "device_name": device_name,
                          "complete": True, "failed": list(failed), "skipped": list(skipped)}}


def write(path, data):
    write_json_atomic(path, data)
    return path


def test_fixtures_are_valid_run_files(tmp_path):
    path = write(tmp_path / "run.json", run([record(), record(impl="triton")]))
    loaded = load_run(path)
    assert [b["extra_info"]["impl"] for b in loaded["benchmarks"]] == ["torch", "triton"]


def test_fixture_samples_are_seeded():
    assert samples(seed=3) == samples(seed=3) != samples(seed=4)
