"""What the pytest plugin writes: pytest-benchmark JSON with wattbench fields, failures recorded."""

import json
import re
import subprocess
import sys

import pytest

FAULT_CONFTEST = '''
import torch
from wattbench.workloads import Size, Workload, register


def make_inputs(params, precision, device, generator):
    return {"x": torch.randn(params["N"], generator=generator, device=device)}


def doubles(inputs):
    return lambda: inputs["x"] * 2


def makes_nan(inputs):
    return lambda: inputs["x"] * float("nan")


def crashes(inputs):
    def step():
        raise RuntimeError("kernel exploded")
    return step


def runs_out_of_memory(inputs):
    def step():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    return step


register(Workload(
    name="fault.infer", op="fault", style="infer", unit="samples", sizes=(Size({"N": 4096}),),
    precisions={"cpu": ("fp32",), "cuda": ("fp32",)}, make_inputs=make_inputs,
    impls={"torch": doubles, "triton": makes_nan, "crash": crashes, "oom": runs_out_of_memory},
    units_per_call=lambda p: p["N"], flops=lambda p: p["N"], bytes=lambda p, precision: 8 * p["N"], suite="faults",
))
'''

FAULT_SUITE = '''
import pytest


@pytest.mark.wattbench(suite="faults")
def test_fault(wattbench_case, wattbench_benchmark):
    wattbench_benchmark(wattbench_case)
'''

#: Every session here runs on the CPU with short power windows, on a GPU host too (where the default
#: device would be cuda:0, and RAPL or NVML could add 3 x 5 s windows per benchmark).
ON_CPU = ("--wattbench-device=cpu", "--wattbench-idle=0", "--wattbench-energy-window=0.1",
          "--wattbench-energy-repeats=1")

REQUIRED_FIELDS = ("workload", "style", "impl", "device", "unit", "units_per_call", "flops", "bytes", "interpreted")


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    """One pytest session over a suite where one case works, one returns NaN and one raises."""
    folder = tmp_path_factory.mktemp("faults")
    (folder / "conftest.py").write_text(FAULT_CONFTEST)
    (folder / "test_faults.py").write_text(FAULT_SUITE)
    out = folder / "run.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(folder), "-p", "no:cacheprovider", "-q",
                           f"--benchmark-json={out}", "--wattbench-min-time=0.02", *ON_CPU, "--rootdir", str(folder)],
                          capture_output=True, text=True, timeout=300, cwd=folder)
    return proc, json.loads(out.read_text()), out


def test_failures_are_recorded_and_the_others_still_run(fault_run):
    proc, data, _ = fault_run
    assert proc.returncode == 1, proc.stdout
    assert [b["extra_info"]["impl"] for b in data["benchmarks"]] == ["torch"]
    failed = {f["case"]: f["error"] for f in data["wattbench"]["failed"]}
    assert set(failed) == {"fault.infer-triton-fp32-N4096", "fault.infer-crash-fp32-N4096"}
    assert "NaN or inf" in failed["fault.infer-triton-fp32-N4096"]
    assert failed["fault.infer-crash-fp32-N4096"] == "RuntimeError: kernel exploded"
    assert data["wattbench"]["complete"] is True


def test_a_case_too_large_for_the_device_is_skipped_with_the_reason(fault_run):
    _, data, _ = fault_run
    (skipped,) = data["wattbench"]["skipped"]
    assert skipped["case"] == "fault.infer-oom-fp32-N4096"
    assert skipped["reason"].startswith("does not fit in the memory of")
    assert "Tried to allocate 80.00 GiB" in skipped["reason"]


def test_records_carry_wattbench_fields_and_device_samples(fault_run):
    _, data, _ = fault_run
    bench = data["benchmarks"][0]
    info = bench["extra_info"]
    for name in REQUIRED_FIELDS:
        assert name in info, name
    assert (info["workload"], info["style"], info["unit"], info["units_per_call"]) == ("fault.infer", "infer",
                                                                                       "samples", 4096)
    assert info["interpreted"] is False and info["device"] == "cpu"
    samples = info["timing"]["samples_s"]
    assert len(samples) == bench["stats"]["rounds"] >= 5
    assert info["median_s"] == pytest.approx(bench["stats"]["median"])
    assert info["units_per_s"] == pytest.approx(4096 / info["median_s"])
    assert bench["options"]["timer"].endswith("perf_counter_clock")
    assert bench["group"] == "fault.infer"


def test_energy_says_not_measured_with_a_reason_never_zero(fault_run):
    _, data, _ = fault_run
    energy = data["benchmarks"][0]["extra_info"]["energy"]
    assert energy["method"] == "none"
    assert energy["reason"].startswith("no power source")
    assert energy["joules_per_unit"] is None and energy["units_per_joule"] is None


def test_run_metadata_is_recorded(fault_run):
    _, data, _ = fault_run
    block = data["wattbench"]
    assert block["preset"] == "quick" and block["device"] == "cpu"
    assert block["started_utc"] <= block["ended_utc"]
    assert block["threads"]["torch_intra_op"] >= 1 and block["threads"]["chosen_by"]
    assert "torch_interop" in block["threads"] and "OMP_NUM_THREADS" in block["threads"]["variables"]
    assert all(len(block["load_average"][when]) == 3 for when in ("start", "end"))
    assert "cpu_governor" in data["machine_info"]["wattbench"]
    env = data["machine_info"]["wattbench"]
    for key in ("wattbench_version", "host", "cpu_model", "packages", "device", "cuda_runtime", "nvidia_driver"):
        assert key in env, key
    assert env["packages"]["torch"]


def test_pytest_benchmark_compare_reads_the_json(fault_run):
    _, _, out = fault_run
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_fault[fault.infer-torch-fp32-N4096]" in proc.stdout


def run_faults(folder, *args):
    return subprocess.run([sys.executable, "-m", "pytest", str(folder), "-p", "no:cacheprovider", "-q",
                           "--wattbench-min-time=0.02", *ON_CPU, "--rootdir", str(folder), *args],
                          capture_output=True, text=True, timeout=300, cwd=folder)


def test_pytest_run_can_be_gated_against_a_baseline(fault_run, tmp_path):
    _, _, baseline = fault_run
    folder = baseline.parent
    (folder / "pyproject.toml").write_text('[tool.wattbench.gate]\ntime = "90%"\n')
    proc = run_faults(folder, "-k", "torch", f"--benchmark-json={tmp_path / 'current.json'}",
                      f"--wattbench-gate={baseline}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: 0 regressions" in proc.stdout


def test_a_gate_that_cannot_compare_is_a_usage_error_not_an_interruption(fault_run, tmp_path):
    """The gate's bad-input code 2 would read as pytest's 2 (interrupted): the session ends with 4."""
    _, _, baseline = fault_run
    proc = run_faults(baseline.parent, "-k", "oom", f"--benchmark-json={tmp_path / 'current.json'}",
                      f"--wattbench-gate={baseline}")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "wattbench: error: the pytest run produced no wattbench run data to gate" in proc.stderr


def test_gate_option_needs_the_benchmark_json(fault_run):
    _, _, baseline = fault_run
    proc = run_faults(baseline.parent, f"--wattbench-gate={baseline}")
    assert proc.returncode == 4  # pytest's usage error
    assert "--wattbench-gate needs --benchmark-json=FILE" in proc.stderr


def test_a_bad_spec_file_is_a_usage_error(fault_run, tmp_path):
    _, _, baseline = fault_run
    specs = tmp_path / "specs.json"
    specs.write_text('{"format": "wattbench-device-specs/1", "devices": [{"peak_tflops": {}}]}')
    proc = run_faults(baseline.parent, f"--wattbench-specs={specs}")
    assert proc.returncode == 4  # pytest's usage error
    assert "specs.json" in proc.stderr and "Traceback" not in proc.stderr


SIMULATED_GPU_CONFTEST = '''
import json
import sys

import pytest

sys.path.insert(0, {tests!r})
from simulated_cuda import SimulatedCuda  # noqa: E402

from wattbench.workloads import Size, Workload, register  # noqa: E402

SIM = SimulatedCuda(devices=2).install(pytest.MonkeyPatch())  # before the plugin detects the device
SEEN = set()


def build(inputs):
    def step():
        SEEN.add(SIM.current)
        SIM.host_work(12e-6)  # Python before the launch: must not be timed
        SIM.launch("work", 40e-6)
        return inputs["x"]
    return step


register(Workload(
    name="sim.infer", op="sim", style="infer", unit="items", sizes=(Size({{"N": 64}}),),
    precisions={{"cuda": ("fp32",)}}, make_inputs=lambda params, precision, device, generator: {{"x": None}},
    impls={{"torch": build}}, units_per_call=lambda p: p["N"], flops=lambda p: p["N"], bytes=lambda p, precision: 0,
    suite="simulated",
))


def pytest_sessionfinish(session):
    with open("simulated.json", "w") as out:
        json.dump({{"seen": sorted(SEEN), "devices": sorted({{launch.device for launch in SIM.launches}})}}, out)
'''

SIMULATED_GPU_SUITE = '''
import pytest


@pytest.mark.wattbench(suite="simulated")
def test_simulated(wattbench_case, wattbench_benchmark):
    wattbench_benchmark(wattbench_case)
'''


def test_a_run_on_cuda_1_keeps_pytest_benchmark_stats_in_device_time(tmp_path):
    """End to end through pytest-benchmark's own loop, on a simulated GPU 1 (GPU 0 current by default)."""
    from pathlib import Path

    (tmp_path / "conftest.py").write_text(SIMULATED_GPU_CONFTEST.format(tests=str(Path(__file__).parent)))
    (tmp_path / "test_simulated.py").write_text(SIMULATED_GPU_SUITE)
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-p", "no:cacheprovider", "-q",
                           f"--benchmark-json={out}", "--wattbench-min-time=0.001", "--wattbench-device=cuda:1",
                           "--wattbench-idle=0", "--rootdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["extra_info"]["device"] == "cuda:1" and bench["extra_info"]["timing"]["method"] == "cuda_event"
    assert bench["stats"]["min"] == pytest.approx(40e-6, abs=1e-6)  # pytest-benchmark's own figures
    assert bench["stats"]["max"] == pytest.approx(40e-6, abs=1e-6)
    simulated = json.loads((tmp_path / "simulated.json").read_text())
    assert simulated == {"seen": [1], "devices": [1]}  # the step and every launch ran with cuda:1 current


@pytest.mark.parametrize("option, pattern", [
    ("--wattbench-energy-window=0", r"ERROR: --wattbench-energy-window must be above 0 and at most 3600 seconds"),
    ("--wattbench-run-file=/proc/x/run.json", r"ERROR: output folder '/proc/x' is not writable"),
    ("--wattbench-save-trace=/proc/x/trace.csv", r"ERROR: output folder '/proc/x' is not writable"),
])
def test_bad_option_values_are_a_usage_error_before_anything_runs(fault_run, option, pattern):
    _, _, baseline = fault_run
    proc = run_faults(baseline.parent, option)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert re.search(pattern, proc.stderr), proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert "PASSED" not in proc.stdout and "passed" not in proc.stdout


def test_a_session_stopped_early_is_not_complete_and_resume_refuses_another_selection(fault_run, tmp_path):
    """-x stops after the first failure: the run file says `stopped`, never `complete`; a resume must select
    the same benchmarks, then completes it."""
    _, _, baseline = fault_run
    folder, run_file = baseline.parent, tmp_path / "run.json"
    stopped = run_faults(folder, "-x", f"--wattbench-run-file={run_file}")
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    block = json.loads(run_file.read_text())["wattbench"]
    assert block["complete"] is False and len(block["planned"]) == 4
    assert block["segments"][-1]["end"] == "stopped" and len(block["failed"]) == 1

    narrower = run_faults(folder, "-k", "oom", f"--wattbench-run-file={run_file}", "--wattbench-resume")
    assert narrower.returncode == 4 and "was made with -k '', not 'oom'" in narrower.stderr, narrower.stderr

    resumed = run_faults(folder, f"--wattbench-run-file={run_file}", "--wattbench-resume")
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # the crash case fails, as recorded
    data = json.loads(run_file.read_text())
    block = data["wattbench"]
    assert block["complete"] is True and [s["end"] for s in block["segments"]] == ["stopped", "finished"]
    assert sorted(f["case"] for f in block["failed"]) == ["fault.infer-crash-fp32-N4096",
                                                          "fault.infer-triton-fp32-N4096"]
    assert [b["params"]["wattbench_case"] for b in data["benchmarks"]] == ["fault.infer-torch-fp32-N4096"]


@pytest.mark.parametrize("args, pattern", [
    (["--wattbench-gate=/nonexistent/base.json"], r"^/nonexistent/base\.json: cannot read"),
    (["--wattbench-resume"], r"^--wattbench-resume needs --wattbench-run-file$"),
    (["--wattbench-power-replay=/nonexistent/meter.csv"], r"^/nonexistent/meter\.csv: cannot read"),
    (["--wattbench-specs=/nonexistent/specs.json"], r"^/nonexistent/specs\.json: cannot read"),
    (["--wattbench-preset=huge"], r"unknown preset 'huge'"),
])
def test_every_input_file_and_option_is_checked_in_configure(args, pattern):
    """pytest_configure builds the RunConfig with from_options; here called as configure calls it."""
    from wattbench.config import OptionParser, from_options
    from wattbench.errors import UsageError

    given, _ = OptionParser().parse_known_args(args)
    with pytest.raises(UsageError, match=pattern):
        from_options(lambda name: getattr(given, name))
