"""The dry run's cost model (wattbench.estimate), the GPU quick preset it sizes, and `wattbench run --dry-run`."""

import re
import subprocess
import sys

import pytest

from wattbench import cli, estimate
from wattbench.device import Device
from wattbench.errors import UsageError
from wattbench.power import PowerConfig
from wattbench.power.monitor import EDGE_RUN_UPDATES, WindowRule
from wattbench.specs import load_specs
from wattbench.timing import TimingPlan
from wattbench.workloads import case_by_id, cases

H100 = Device("cuda", 0, "NVIDIA H100 80GB HBM3")
QUICK_PLAN = TimingPlan(min_time_s=0.2)


@pytest.fixture(scope="module")
def h100():
    return estimate.machine_for(H100, PowerConfig())


def test_a_call_is_the_roofline_at_the_attained_share_plus_its_launches(h100):
    spec = load_specs().find(H100.name)
    gemm = next(c for c in cases("full", H100) if c.workload.name == "gemm.infer" and c.precision == "bf16"
                and c.impl == "torch")
    work = gemm.accounting()
    by_hand = max(work["flops"] / (spec.peak_tflops["bf16"] * 1e12),
                  work["bytes"] / (spec.memory_bandwidth_gbps * 1e9)) / estimate.ATTAINED + estimate.LAUNCH_S
    assert estimate.call_seconds(gemm, h100) == pytest.approx(by_hand)
    train = next(c for c in cases("quick", H100) if c.workload.name == "rms_norm.train")
    assert estimate.launches(train) == 3


def test_energy_windows_follow_the_window_rule():
    rule = WindowRule(target=0.02, min_window_s=1.0, max_window_s=20.0, max_windows=3, update_s=0.1, poll_s=0.01)
    short = 1e-5
    around = 2 * EDGE_RUN_UPDATES * 0.1 + 0.05 + short
    # a short call's floor: three edge errors (2 x 10 us + a 10 ms poll) over the 2% target, 1.503 s
    assert estimate.energy_seconds(short, rule) == pytest.approx(estimate.EXPECTED_WINDOWS * (1.503 + around))
    fixed = WindowRule(target=None, min_window_s=5.0, max_window_s=20.0, max_windows=3, update_s=0.1)
    assert estimate.energy_seconds(short, fixed) == pytest.approx(3 * (5.0 + around))
    assert estimate.energy_seconds(short, None) == 0.0


def test_triton_compiles_a_kernel_once_and_tunes_it_per_shape(h100):
    small, large = (case_by_id(f"rms_norm.infer-triton-bf16-{size}") for size in ("M1-N4096", "M4096-N4096"))
    plan = estimate.estimate([small, large, case_by_id("rms_norm.train-triton-bf16-M16384-N4096")], h100,
                             QUICK_PLAN, PowerConfig())
    compile_once = estimate.CONFIGS_PER_KERNEL * estimate.COMPILE_S_PER_CONFIG
    tune = estimate.CONFIGS_PER_KERNEL * estimate.AUTOTUNE_S_PER_CONFIG
    first, second, train = (b.compile_s for b in plan.benchmarks)
    assert first == pytest.approx(compile_once + tune)
    assert second == pytest.approx(tune)
    assert train == pytest.approx(compile_once + 2 * tune)  # its backward kernel is new; the forward is tuned anew
    compiled = estimate.estimate([case_by_id("rms_norm.infer-compiled-bf16-M1-N4096")], h100, QUICK_PLAN,
                                 PowerConfig())
    assert compiled.benchmarks[0].compile_s == estimate.TORCH_COMPILE_S["cuda"]


def test_a_sweep_repeats_all_but_compilation_per_setting(h100):
    chosen = cases("quick", H100)[:4]
    once = estimate.estimate(chosen, h100, QUICK_PLAN, PowerConfig())
    swept = estimate.estimate(chosen, h100, QUICK_PLAN, PowerConfig(), settings=3, settle_s=2.0)
    assert swept.parts["timing"] == pytest.approx(3 * once.parts["timing"])
    assert swept.parts["energy windows"] == pytest.approx(3 * once.parts["energy windows"])
    assert swept.parts["idle baseline"] == 3 * once.parts["idle baseline"] == 30.0
    assert swept.parts["compilation"] == once.parts["compilation"]
    assert swept.parts["settling"] == 6.0 and once.parts["settling"] == 0.0
    assert swept.total_s == pytest.approx(sum(swept.parts.values()))


def test_the_gpu_quick_preset_is_the_representative_subset():
    quick = cases("quick", H100)
    by_workload = {}
    for case in quick:
        by_workload.setdefault(case.workload.name, set()).add((case.impl, case.precision, case.size.name))
    for name, found in by_workload.items():
        workload = case_by_id(next(c.id for c in quick if c.workload.name == name)).workload
        sizes = {size for _, _, size in found}
        assert len({precision for _, precision, _ in found}) == 1, name
        available = [s for s in workload.sizes if "quick" in s.presets and "cuda" in s.devices]
        if workload.suite == "kernels":
            assert len(sizes) == min(len(available), 2 if workload.style == "infer" else 1), name
            assert {impl for impl, _, _ in found} == {"torch", "triton"}, name
        else:
            assert len(sizes) == 1, name
    assert [name for name in by_workload if name.startswith("scenario.")] == ["scenario.single_stream"]
    ops = {c.workload.op for c in cases("full", H100) if c.workload.suite == "kernels"}
    assert ops == {c.workload.op for c in quick if c.workload.suite == "kernels"}
    assert {c.id for c in quick} <= {c.id for c in cases("full", H100)}


def test_the_gpu_quick_preset_fits_ten_minutes_on_an_h100(h100):
    plan = estimate.estimate(cases("quick", H100), h100, QUICK_PLAN, PowerConfig())
    assert plan.total_s <= 600, estimate.format_plan(plan, h100, "quick")


def test_the_gpu_full_preset_fits_ninety_minutes_on_an_h100(h100):
    full = cases("full", H100)
    plan = estimate.estimate(full, h100, TimingPlan(min_time_s=1.0), PowerConfig())
    assert plan.total_s <= 90 * 60, estimate.format_plan(plan, h100, "full")
    compiled = [c for c in full if c.impl == "compiled"]
    assert compiled and {c.precision for c in compiled} == {"bf16"}
    curves = [c for c in full if c.workload.name in ("llm.prefill", "llm.decode") and c.precision == "bf16"
              and c.impl == "torch" and c.size.params["model"] == "llama3.1-8b"]
    assert sorted(c.size.params["B"] for c in curves if c.workload.name == "llm.decode") == [1, 8, 32, 64, 128, 256, 512]
    quantised = {c.size.params["B"] for c in full if c.workload.name == "llm.decode" and c.precision == "fp8"
                 and c.size.params["model"] == "llama3.1-8b"}
    assert quantised == {1, 32, 256}


def test_k_selects_what_pytest_selects():
    keyword = "gemm and infer and not triton or rms_norm.train"
    chosen = [c.id for c in estimate.selected(cases("quick", Device("cpu", None, "cpu")), keyword)]
    collected = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                                "suites", "--wattbench-device", "cpu", "-k", keyword],
                               capture_output=True, text=True, timeout=300)
    ids = re.findall(r"\[(.+)\]$", collected.stdout, re.MULTILINE)
    assert ids and sorted(chosen) == sorted(ids)  # the registry's order depends on what imported it first


def test_dry_run_plans_a_gpu_run_on_a_host_without_one(capsys):
    code = cli.main(["run", "--device", "cuda", "--device-name", "NVIDIA H100 80GB HBM3", "--dry-run", "-k",
                     "softmax"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cuda:0 (NVIDIA H100 80GB HBM3; figures: NVIDIA H100 SXM)" in out
    listed = re.findall(r"^(softmax\.\S+)", out, re.MULTILINE)
    assert listed == [c.id for c in cases("quick", H100) if "softmax" in c.id]
    assert re.search(r"6 benchmarks; estimated .*: timing .*, energy windows .*, idle baseline 10 s, "
                     r"compilation .*, settling 0.0 s", out)


def test_dry_run_on_the_cpu_lists_the_cpu_sizes(capsys):
    assert cli.main(["run", "--device", "cpu", "--dry-run", "-k", "gemm and train"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^(gemm\.train\S+)", out, re.MULTILINE) == [
        c.id for c in cases("quick", Device("cpu", None, "cpu")) if c.workload.name == "gemm.train"]


@pytest.mark.parametrize("args, pattern", [
    (["--device", "cuda", "--device-name", "Bogus GPU 9000", "--dry-run"], r"no spec-table figures for 'Bogus"),
    (["--device", "cuda:x", "--dry-run"], r"unknown device 'cuda:x'"),
    (["--device-name", "NVIDIA H100 80GB HBM3"], r"--device-name only plans"),
    (["--device", "cuda", "--dry-run", "-k", "no_such_benchmark"], r"matches no benchmark"),
])
def test_bad_dry_runs_give_one_line_and_exit_2(capsys, args, pattern):
    code = cli.main(["run", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


def test_a_sweep_plans_the_default_and_every_value_asked_for():
    assert estimate.sweep_settings({"power_limits": "200:400:100", "sm_clocks": "1200,1500"}) == 6
    assert estimate.sweep_settings({}) == 1
    with pytest.raises(UsageError, match="--power-limits"):
        estimate.sweep_settings({"power_limits": "lots"})


def test_a_sweep_dry_run_plans_every_setting(capsys):
    assert cli.main(["sweep", "--device", "cuda", "--dry-run", "-k", "softmax", "--power-limits", "300,400"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"6 benchmarks x 3 settings; estimated .*, idle baseline 30 s, .*, settling 6.0 s", out)
