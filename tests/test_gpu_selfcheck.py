"""`wattbench selfcheck gpu` on a CPU: the step runner (time limits, crash isolation, budget),
the verdict rules, the evidence, the refusal without a GPU, and the steps against fakes (the
simulated CUDA device for the clock and capture, a faked pynvml for NVML truth, a simulated
power source for the energy run, a small pytest suite for the kernel tests)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import pynvml
import pytest

import wattbench.selfcheck.kernels  # noqa: F401  (imported before the simulated CUDA: it picks the interpreter)
from simulated_cuda import SimulatedCuda
from wattbench import cli
from wattbench.selfcheck import gpu as gpu_selfcheck, gpu_checks
from wattbench.device import Device, detect
from wattbench.selfcheck.gpu import FAIL, NOT_APPLICABLE, NOT_RUN, PASS, Step, StepContext, check, step_result
from wattbench.power import PowerConfig
from wattbench.power.simulate import constant, live_probe

FAKE_STEPS = '''
import os, subprocess, sys, time
import numpy
from wattbench.selfcheck.gpu import check, step_result

def ok(context):
    return step_result([check("fine", True, "as expected")], value=numpy.int64(1), where=object)

def fails(context):
    return step_result([check("wrong", False, "2 + 2 gave 5")])

def raises(context):
    raise ValueError("no such thing")

def aborts(context):
    os.abort()

def hangs(context):
    context.progress(step_result([check("first half", True, "done before the hang")]))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.environ["SLEEPER_PID_FILE"], "w").write(str(sleeper.pid))
    time.sleep(600)

def takes_a_second(context):
    time.sleep(1.0)
    return ok(context)

def environment(context):
    return step_result([check("environment", True, "recorded")], host="gpu-host", cuda_runtime="13.0",
                       nvidia_driver="580.159.04", packages={"torch": "2.11.0", "triton": "3.6.0",
                       "nvidia-ml-py": "13.580.65"}, gpu={"cuda_driver_version": "13.0"},
                       wattbench_commit={"id": "abc123", "dirty": False})
'''


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Step functions that pass, fail, raise, abort or hang, importable by the children as `fake_steps`."""
    folder = tmp_path / "fakes"
    folder.mkdir()
    (folder / "fake_steps.py").write_text(FAKE_STEPS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SLEEPER_PID_FILE", str(tmp_path / "sleeper.pid"))
    return tmp_path


def fake(name: str, limit_s: float = 20.0, function: str | None = None) -> Step:
    return Step(name, f"the fake step {name}", limit_s, f"fake_steps:{function or name}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- the step runner ------------------------------------------------------------------------

def test_a_step_that_hangs_is_killed_with_its_children_and_the_next_still_runs(fakes):
    began = time.monotonic()
    hung, after = gpu_selfcheck.run_steps([fake("hangs", limit_s=2.0), fake("ok")], "cpu", 60, fakes)
    assert time.monotonic() - began < 15
    assert hung["verdict"] == "timed out" and hung["reason"] == "timed out after 2 s (partial results kept)"
    assert [c["name"] for c in hung["checks"]] == ["first half"]  # what it reported before hanging
    assert 2.0 <= hung["elapsed_s"] < 5
    sleeper = int((fakes / "sleeper.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(sleeper)  # the whole process group went
    assert after["verdict"] == PASS and after["figures"] == {"value": 1, "where": "<class 'object'>"}


def test_a_crash_or_an_exception_is_recorded_and_does_not_stop_the_others(fakes):
    aborted, raised, passed = gpu_selfcheck.run_steps([fake("aborts"), fake("raises"), fake("ok")], "cpu", 120, fakes)
    assert aborted["verdict"] == "crashed" and "killed by signal 6" in aborted["reason"]
    assert raised["verdict"] == FAIL and raised["reason"] == "raised ValueError: no such thing"
    assert "Traceback" in raised["figures"]["traceback"]
    assert passed["verdict"] == PASS
    assert gpu_selfcheck.exit_code([passed]) == 0 and gpu_selfcheck.exit_code([passed, aborted]) == 1


def test_a_step_whose_limit_no_longer_fits_the_budget_is_not_run_and_a_shorter_one_still_is(fakes):
    first, too_long, short = gpu_selfcheck.run_steps(
        [fake("slow", limit_s=2.0, function="takes_a_second"), fake("long", limit_s=2.0, function="ok"),
         fake("short", limit_s=1.0, function="ok")], "cpu", 3.0, fakes)
    assert first["verdict"] == PASS and first["elapsed_s"] >= 1.0
    assert too_long["verdict"] == NOT_RUN and too_long["elapsed_s"] == 0
    assert too_long["reason"].startswith("not run: ") and "of the 3 s budget left, its limit is 2 s" in \
        too_long["reason"]
    assert short["verdict"] == PASS
    assert gpu_selfcheck.exit_code([first, too_long, short]) == 1


# -- verdict rules --------------------------------------------------------------------------

def test_a_step_fails_on_any_failed_check_and_passes_when_the_rest_do_not_apply():
    passed, skipped, failed = check("a", True, "fine"), check("b", None, "no MIG"), check("c", False, "5 W")
    assert step_result([passed, skipped]) == {"verdict": PASS, "reason": None, "checks": [passed, skipped],
                                              "figures": {}}
    assert step_result([passed, failed, skipped], x=1)["reason"] == "c: 5 W"
    assert step_result([passed, failed])["verdict"] == FAIL
    assert step_result([skipped]) == {"verdict": NOT_APPLICABLE, "reason": "b: no MIG", "checks": [skipped],
                                      "figures": {}}


@pytest.mark.parametrize("reference_us, harness_us, agrees", [
    (100.0, 102.9, True), (100.0, 97.1, True), (100.0, 103.1, False), (100.0, 96.9, False),  # 3% above 50 us
    (50.0, 53.4, True), (50.0, 46.6, True), (50.0, 53.6, False),  # at 50 us: 1 us + 5% = 3.5 us
    (50.1, 51.5, True), (50.1, 52.0, False),  # just above 50 us: 3% = 1.5 us, not 3.5
    (2.0, 3.0, True), (2.0, 1.0, True), (2.0, 3.2, False), (0.0, 0.9, True), (0.0, 1.1, False),
])
def test_the_do_bench_agreement_rule_at_its_edges(reference_us, harness_us, agrees):
    assert gpu_checks.clock_agreement(harness_us * 1e-6, reference_us * 1e-6)[0] is agrees


# -- steps against the simulated CUDA device ------------------------------------------------

@pytest.fixture
def sim(monkeypatch):
    return SimulatedCuda(devices=2).install(monkeypatch)


GPU1 = Device("cuda", 1, "Simulated H100")


def test_the_event_clock_comparison_times_the_call_as_the_harness_does(sim):
    def kernel():
        sim.launch("work", 10e-6)

    with GPU1.current():
        close = gpu_checks.compare_clocks("kernel", kernel, GPU1, reference=lambda call: 10.4e-6)
        off = gpu_checks.compare_clocks("kernel", kernel, GPU1, reference=lambda call: 12e-6)
    assert close["verdict"] == PASS and close["harness_s"] == pytest.approx(10e-6, abs=1e-6)
    assert "do_bench 10.4 us" in close["detail"] and "1 us + 5%" in close["detail"]
    assert off["verdict"] == FAIL and off["difference_s"] == pytest.approx(-2e-6, abs=1e-6)


def test_a_reference_that_raises_fails_only_its_own_case(sim):
    def broken(call):
        raise RuntimeError("do_bench: no driver\nsecond line")

    with GPU1.current():
        found = gpu_checks.compare_clocks("no-op", lambda: None, GPU1, reference=broken)
    assert found["verdict"] == FAIL and found["detail"] == "raised RuntimeError: do_bench: no driver"


def test_empty_captures_work_elsewhere_and_host_syncs_are_refused_and_a_real_capture_is_not(sim):
    def on_cuda_0():
        with Device("cuda", 0, "gpu0").current():
            sim.launch("work", 5e-6)

    def synchronising():
        sim.launch("work", 5e-6)
        sim.synchronize()

    empty = gpu_checks.capture_refused("empty", lambda: None, 1, graph_error_only=True)
    elsewhere = gpu_checks.capture_refused("elsewhere", on_cuda_0, 1, graph_error_only=True)
    synced = gpu_checks.capture_refused("sync", synchronising, 1, graph_error_only=False)
    synced_strict = gpu_checks.capture_refused("sync", synchronising, 1, graph_error_only=True)
    accepted = gpu_checks.capture_refused("real work", lambda: sim.launch("work", 5e-6), 1, graph_error_only=True)
    assert empty["verdict"] == elsewhere["verdict"] == PASS and "empty" in elsewhere["detail"]
    assert synced["verdict"] == PASS and synced["raised"] == "RuntimeError"
    assert synced_strict["verdict"] == FAIL and "instead of GraphCaptureError" in synced_strict["detail"]
    assert accepted["verdict"] == FAIL and accepted["detail"].startswith("accepted")


# -- NVML truth against a faked pynvml ------------------------------------------------------

UUID = "2f6b8a1e-0000-4c1d-9a3e-1234567890ab"
OTHER_UUID = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
H100 = Device("cuda", 0, "NVIDIA H100 80GB HBM3", UUID)


def field(value_mw: int, ret: int = pynvml.NVML_SUCCESS) -> pynvml.c_nvmlFieldValue_t:
    result = pynvml.c_nvmlFieldValue_t()
    result.fieldId = pynvml.NVML_FI_DEV_POWER_INSTANT
    result.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    result.value.uiVal = value_mw
    result.nvmlReturn = ret
    return result


def context_on(device, limit_s: float = 60.0) -> StepContext:
    context = StepContext(device.spec, limit_s)
    context.device = device
    return context


@pytest.fixture
def nvml(monkeypatch):
    """A whole H100 at 300 W whose counter (mJ) updates every 20 ms; short polls."""
    monkeypatch.setattr(gpu_checks, "POLL_S", 0.2)
    began = time.perf_counter()
    with mock.patch.object(gpu_checks, "pynvml", autospec=True) as fake:
        fake.nvmlDeviceGetHandleByUUID.side_effect = lambda uuid: "board" if uuid == "GPU-" + UUID else \
            (_ for _ in ()).throw(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND))
        fake.nvmlDeviceGetHandleByIndex.return_value = "board"
        fake.nvmlDeviceGetUUID.return_value = "GPU-" + UUID
        fake.nvmlDeviceIsMigDeviceHandle.return_value = 0
        fake.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
        # Polled back to back: plain functions, not mocks (a mock keeps every call and stalls in garbage collection).
        fake.nvmlDeviceGetTotalEnergyConsumption = lambda handle: 6000 * int((time.perf_counter() - began) / 0.02)
        fake.nvmlDeviceGetFieldValues = lambda handle, ids: [
            field(300_000) if ids[0][1] == pynvml.NVML_POWER_SCOPE_GPU else field(0, pynvml.NVML_ERROR_NOT_SUPPORTED)]
        fake.nvmlDeviceGetPowerUsage = lambda handle: 290_000
        for limit in ("nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetEnforcedPowerLimit",
                      "nvmlDeviceGetPowerManagementDefaultLimit"):
            getattr(fake, limit).return_value = 700_000
        fake.nvmlDeviceGetPowerManagementLimitConstraints.return_value = [200_000, 700_000]
        fake.nvmlDeviceGetTemperature.return_value = 35
        fake.nvmlDeviceGetClockInfo.return_value = 1980
        fake.nvmlDeviceGetCurrentClocksEventReasons.return_value = 0x1
        fake.nvmlDeviceGetSupportedClocksEventReasons.return_value = 0x1FF
        fake.nvmlSystemGetNVMLVersion.return_value = "13.580.65"
        fake.nvmlSystemGetDriverVersion.return_value = "580.159.04"
        yield fake


def checks_by_name(result: dict) -> dict:
    return {c["name"]: c for c in result["checks"]}


def test_nvml_truth_on_a_healthy_gpu_passes_with_its_figures(nvml):
    result = gpu_checks.nvml_truth(context_on(H100))
    found = checks_by_name(result)
    assert result["verdict"] == PASS, result["reason"]
    units = found["units and value types"]
    assert units["counter_w"] == pytest.approx(300.0, rel=0.15) and units["instant_w"] == pytest.approx(300.0)
    assert units["types"] == {"counter": "int", "instant": "NVML_VALUE_TYPE_UNSIGNED_INT", "power usage": "int"}
    assert found["update periods"]["counter"]["period_s"] == pytest.approx(0.02, rel=0.25)
    assert found["power limits"]["watts"]["enforced"] == 700.0
    costs = found["read costs"]["costs"]
    assert set(costs) == set(gpu_checks.sampler_calls(None)) and all(c["calls"] > 0 for c in costs.values())
    assert found["read costs"]["tick_p99_s"] < 0.01
    assert found["power scopes"]["answers"]["NVML_POWER_SCOPE_GPU"] == 300.0
    assert "Not Supported" in found["power scopes"]["answers"]["NVML_POWER_SCOPE_MODULE"]
    assert found["clock events"]["active"] == ["gpu_idle"] and found["clock events"]["throttles"] == []
    assert found["torch and NVML identity"]["index_agrees"] is True
    assert found["MIG mode"]["current"] == "disabled"
    nvml.nvmlShutdown.assert_called_once()


def test_a_counter_in_joules_instead_of_millijoules_fails_the_units_check(nvml):
    began = time.perf_counter()
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda handle: 6 * int((time.perf_counter() - began) / 0.02)
    result = gpu_checks.nvml_truth(context_on(H100))
    assert result["verdict"] == FAIL
    assert checks_by_name(result)["units and value types"]["counter_over_instant"] == pytest.approx(0.001, rel=0.2)


def test_a_different_gpu_at_the_same_index_is_reported_and_a_missing_uuid_fails(nvml):
    nvml.nvmlDeviceGetUUID.side_effect = lambda handle: "GPU-" + UUID if handle == "board" else OTHER_UUID
    nvml.nvmlDeviceGetHandleByIndex.return_value = "another board"
    identity = checks_by_name(gpu_checks.nvml_truth(context_on(H100)))["torch and NVML identity"]
    assert identity["verdict"] == PASS and identity["index_agrees"] is False
    assert "finding it by index would read the wrong GPU" in identity["detail"]
    stranger = Device("cuda", 0, "NVIDIA H100 80GB HBM3", "cccccccc-0000-0000-0000-000000000000")
    result = gpu_checks.nvml_truth(context_on(stranger))
    assert result["verdict"] == FAIL and "no NVML device has torch's UUID" in result["reason"]


def test_on_a_mig_slice_the_power_checks_do_not_apply(nvml):
    not_supported = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    nvml.nvmlDeviceGetHandleByUUID.side_effect = lambda uuid: "slice"
    nvml.nvmlDeviceGetUUID.return_value = "MIG-" + UUID
    nvml.nvmlDeviceIsMigDeviceHandle.return_value = 1
    nvml.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    nvml.nvmlDeviceGetTotalEnergyConsumption = mock.Mock(side_effect=not_supported)
    nvml.nvmlDeviceGetFieldValues = lambda handle, ids: [field(0, pynvml.NVML_ERROR_NOT_SUPPORTED)]
    found = checks_by_name(gpu_checks.nvml_truth(context_on(H100)))
    assert found["MIG mode"]["mig_slice"] is True and "MIG slice" in found["MIG mode"]["detail"]
    assert found["units and value types"]["verdict"] == NOT_APPLICABLE
    assert found["power scopes"]["verdict"] == NOT_APPLICABLE


# -- the energy run, the probes, the registry, the sampler ----------------------------------

CPU = Device("cpu", None, "Test CPU")
FAST_POWER = PowerConfig(min_window_s=0.1, max_window_s=0.1, repeats=2, idle_s=0.1, sample_hz=200)


def test_the_energy_run_measures_each_gemm_and_cross_checks_counter_and_instant():
    probe = live_probe(constant(200.0), duration_s=60.0)
    result = gpu_checks.energy_run(context_on(CPU), gemms=((64, 64, 64), (1, 64, 64)), config=FAST_POWER,
                                   probes=[probe])
    assert result["verdict"] == PASS, result["reason"]
    assert list(result["figures"]["records"]) == ["GEMM 64x64x64 float32", "GEMM 1x64x64 float32"]
    for item in result["checks"]:
        assert "instant disagrees by" in item["detail"] and abs(item["disagreement_pct"]) <= item["allowed_pct"]
    assert result["figures"]["run_info"]["source"] == "simulated"


def energy_record(**changes) -> dict:
    record = {"method": "counter", "valid": True, "reason": None, "joules_per_call": 0.5, "avg_power_w": 650.0,
              "uncertainty_pct": 1.0, "channel": "nvml:0:counter", "disagreement_pct": 4.0,
              "cross_check_method": "instant", "cross_check_joules_per_call": 0.52,
              "channels": {"nvml:0:counter": {"method": "counter", "joules_per_call": 0.5, "uncertainty_pct": 1.0},
                           "nvml:0:instant": {"method": "instant", "joules_per_call": 0.52, "uncertainty_pct": 2.5}}}
    return {**record, **changes}


def test_energy_check_rules():
    apart = gpu_checks.energy_check("g", energy_record(disagreement_pct=3.4))
    too_far = gpu_checks.energy_check("g", energy_record(disagreement_pct=-3.6))
    none = gpu_checks.energy_check("g", {"method": "none", "reason": "no power source: nvml: MIG slice"})
    invalid = gpu_checks.energy_check("g", energy_record(valid=False, reason="energy invalid: device lost"))
    unchecked = gpu_checks.energy_check("g", energy_record(disagreement_pct=None))
    alone = gpu_checks.energy_check("g", energy_record(
        disagreement_pct=None, channels={"nvml:0:counter": {"method": "counter"}, "rapl:0": {"method": "instant"}}))
    assert apart["verdict"] == PASS and apart["allowed_pct"] == pytest.approx(3.5)
    assert too_far["verdict"] == FAIL
    assert none["verdict"] == NOT_APPLICABLE and "MIG" in none["detail"]
    assert invalid["verdict"] == FAIL and invalid["detail"] == "energy invalid: device lost"
    assert unchecked["verdict"] == FAIL and "no counter/instant disagreement" in unchecked["detail"]
    assert alone["verdict"] == PASS and "no instant channel of the same sensor" in alone["detail"]


def test_the_24_probe_on_a_device_without_support_does_not_apply():
    result = gpu_checks.sparse_24(context_on(detect("cpu")))
    assert result["verdict"] == NOT_APPLICABLE
    assert result["reason"].startswith("2:4 probe: this torch build cannot run a 2:4 sparse GEMM here: ")


def test_registry_cases_are_checked_against_torch_and_inapplicable_ones_say_why():
    cpu = detect("cpu")
    case = next(c for c in gpu_checks.registry_cases("cpu") if c.id == "rms_norm.infer-triton-fp32-M1-N512")
    sparse = gpu_checks.registry_case("gemm.infer", "triton", "sp24-bf16", "M1-K512-N512")
    result = gpu_checks.registry_shapes(context_on(cpu), cases=[case, sparse])
    checked, skipped = result["checks"]
    assert result["verdict"] == PASS
    assert checked["verdict"] == PASS and checked["rel_error"] <= 1e-5
    assert skipped["verdict"] == NOT_APPLICABLE and "no Triton 2:4 sparse GEMM" in skipped["detail"]
    assert len(gpu_checks.registry_cases("cuda")) > len({c.workload.op for c in gpu_checks.registry_cases("cuda")})


@pytest.mark.parametrize("code, line, verdict", [(0, "result: all targets met", PASS),
                                                 (1, "result: targets missed; the thread's CPU is over 1%", FAIL)])
def test_sampler_overhead_keeps_the_selfchecks_output_and_verdict(code, line, verdict):
    def run(device):
        print(f"sampler-overhead on {device.spec}\n{line}")
        return code

    result = gpu_checks.sampler_overhead(context_on(H100), run=run)
    assert result["verdict"] == verdict and result["checks"][0]["detail"] == line
    assert result["figures"]["output"] == ["sampler-overhead on cuda:0", line]


KERNEL_TESTS = '''
import pytest

@pytest.mark.parametrize("dtype", ["torch.float32", "torch.bfloat16"])
def test_matches(dtype):
    pass

def test_bfloat16_backward():
    assert 1 == 2, "off by one"

def test_interpreted_only():
    pytest.skip("needs the interpreter")
'''


def test_kernel_tests_report_counts_overall_and_for_bf16(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_kernel_fake.py").write_text(textwrap.dedent(KERNEL_TESTS))
    (tmp_path / "tests" / "test_other.py").write_text("def test_not_a_kernel_test():\n    pass\n")
    result = gpu_checks.kernel_tests(context_on(CPU), root=tmp_path, extra_args=("-p", "no:wattbench"))
    every, bf16 = result["checks"]
    assert (every["passed"], every["failed"], every["skipped"], every["exit_code"]) == (2, 1, 1, 1)
    assert every["verdict"] == FAIL
    assert (bf16["passed"], bf16["failed"]) == (1, 1) and bf16["verdict"] == FAIL
    assert result["figures"]["failures"] == [{"test": "tests.test_kernel_fake::test_bfloat16_backward",
                                              "message": "AssertionError: off by one"}]
    assert result["figures"]["skip_reasons"] == {"needs the interpreter": 1}


def test_without_a_checkout_there_are_no_kernel_tests_to_run(tmp_path):
    result = gpu_checks.kernel_tests(context_on(CPU), root=tmp_path)
    assert result["verdict"] == NOT_APPLICABLE and "run from a wattbench checkout" in result["reason"]


# -- evidence, the command ------------------------------------------------------------------

def test_the_command_writes_evidence_with_the_environment_and_every_step(fakes, monkeypatch, capsys):
    steps = (fake("environment"), fake("ok"), fake("fails"))
    monkeypatch.setattr(gpu_selfcheck, "STEPS", steps)
    monkeypatch.setattr(gpu_selfcheck, "_gpu", lambda requested: Device("cuda", 0, "NVIDIA H200", UUID))
    code = gpu_selfcheck.main(out=fakes / "results", steps="environment,fails,ok")
    out = capsys.readouterr().out
    assert code == 1
    (json_path,) = (fakes / "results" / "selfcheck-gpu").glob("*_nvidia-h200_*.json")
    assert f"evidence: {json_path}" in out and "result: 2 pass, 1 fail" in out
    data = json.loads(json_path.read_text())
    assert data["format"] == "wattbench-selfcheck-gpu/1" and data["exit_code"] == 1 and data["complete"] is True
    assert [s["name"] for s in data["steps"]] == ["environment", "ok", "fails"]
    assert data["header"] == {"GPU": "NVIDIA H200", "UUID": UUID, "device": "cuda:0", "driver": "580.159.04",
                              "CUDA driver": "13.0", "CUDA runtime (torch)": "13.0", "torch": "2.11.0",
                              "triton": "3.6.0", "nvidia-ml-py": "13.580.65", "host": "gpu-host",
                              "wattbench commit": "abc123"}
    markdown = json_path.with_suffix(".md").read_text()
    assert markdown.startswith("# wattbench selfcheck gpu: NVIDIA H200")
    assert "- driver: 580.159.04" in markdown and "- torch: 2.11.0" in markdown
    assert data["steps"][2]["verdict"] == FAIL and data["steps"][2]["reason"] == "wrong: 2 + 2 gave 5"
    assert "| fails | fail |" in markdown and "| wrong | fail | 2 + 2 gave 5 |" in markdown
    assert '"value": 1,' in markdown


DRIVER = """
import sys
from pathlib import Path
from wattbench.selfcheck import gpu as gpu_selfcheck
from wattbench.device import Device

gpu_selfcheck._gpu = lambda requested: Device("cuda", 0, "NVIDIA H200", "0000")
gpu_selfcheck.STEPS = (gpu_selfcheck.Step("ok", "passes", 20, "fake_steps:ok"),
                       gpu_selfcheck.Step("hangs", "hangs", 60, "fake_steps:hangs"))
sys.exit(gpu_selfcheck.main(out=Path(sys.argv[1])))
"""


def test_sigterm_ends_the_running_step_and_leaves_the_evidence_of_the_finished_ones(fakes):
    (fakes / "driver.py").write_text(DRIVER)
    run = subprocess.Popen([sys.executable, str(fakes / "driver.py"), str(fakes / "out")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (fakes / "sleeper.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=30)[0]
    assert run.returncode == 128 + signal.SIGTERM, output
    (path,) = (fakes / "out" / "selfcheck-gpu").glob("*.json")
    data = json.loads(path.read_text())
    assert data["complete"] is False and [s["name"] for s in data["steps"]] == ["ok"]
    assert "INCOMPLETE" in path.with_suffix(".md").read_text()
    sleeper = int((fakes / "sleeper.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(sleeper)


def test_facts_the_environment_could_not_read_say_so():
    data = gpu_selfcheck.evidence([], {"spec": "cuda:0", "name": "NVIDIA H200", "uuid": None},
                                  gpu_selfcheck.datetime.now(gpu_selfcheck.timezone.utc),
                                  gpu_selfcheck.datetime.now(gpu_selfcheck.timezone.utc), 480)
    assert data["header"]["UUID"] == "unknown" and data["header"]["torch"] == "unknown"
    no_proc = {"unknown": True, "reason": "no NVIDIA kernel driver"}
    facts = gpu_selfcheck.header_facts({"nvidia_driver": no_proc}, {})
    assert gpu_selfcheck._known(facts["driver"]) == "unknown (no NVIDIA kernel driver)"
    from_nvml = gpu_selfcheck.header_facts({"nvidia_driver": no_proc, "gpu": {"driver_version": "580.159.04"}}, {})
    assert from_nvml["driver"] == "580.159.04"


def assert_refused(capsys, code, pattern):
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and pattern in err, err


def test_without_a_gpu_nothing_is_run_and_one_line_says_why(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code = cli.main(["selfcheck", "gpu", "--out", str(tmp_path)])
    assert_refused(capsys, code, "selfcheck gpu needs a CUDA GPU and torch sees none on this host")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, pattern", [
    (["--steps", "nvml-truth,bogus"], "unknown step(s) bogus: choose from environment, nvml-truth"),
    (["--budget", "0"], "--budget must be a positive number of seconds, got 0"),
    (["--budget", "nan"], "--budget must be a positive number of seconds, got nan"),
])
def test_bad_options_are_refused_before_anything_runs(capsys, tmp_path, args, pattern):
    assert_refused(capsys, cli.main(["selfcheck", "gpu", "--out", str(tmp_path), *args]), pattern)


def test_every_step_of_the_real_run_names_a_step_function_and_fits_the_default_budget():
    assert len({step.name for step in gpu_selfcheck.STEPS}) == len(gpu_selfcheck.STEPS)
    for step in gpu_selfcheck.STEPS:
        module, function = step.target.split(":")
        assert module == "wattbench.selfcheck.gpu_checks" and callable(getattr(gpu_checks, function)), step
        assert 0 < step.limit_s < gpu_selfcheck.BUDGET_S
