"""The kernel performance check: each target's decision, the roofline bound, and the interpreted mode."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch

from wattbench import cli
from wattbench.selfcheck import kernels as kernel_perf
from wattbench.device import detect
from wattbench.errors import UsageError
from wattbench.selfcheck.kernels import (CHECKS, NO_SPEC, NO_TIMING, SEED, Outcome, Target, figures, format_table,
                                   median_time, most_bytes, output_tensors, relative_error, roofline_tflops,
                                   verdict)
from wattbench.specs import load_specs
from wattbench.timing import TimingPlan
from wattbench.workloads import Case, Size, Workload

CPU = detect("cpu")
#: What the fake workload below does per call.
FLOPS, BYTES = 1e9, 1e9


def check_for(kernel: str):
    return next(check for check in CHECKS if check.kernel == kernel)


def fake_case(precision: str = "bf16", bytes_moved: float = BYTES) -> Case:
    """A case with round accounting, so that each figure can be worked out by hand."""
    workload = Workload(
        name="fake.infer", op="fake", style="infer", unit="rows", sizes=(Size({"M": 1}),),
        precisions={"cuda": (precision,)}, make_inputs=lambda *args: {},
        impls={"torch": lambda inputs: None, "triton": lambda inputs: None},
        units_per_call=lambda p: 1, flops=lambda p: FLOPS, bytes=lambda p, precision: bytes_moved)
    return Case(workload, "triton", precision, workload.sizes[0])


def timed(kernel: str, triton_s: float, baseline_s: float, case: Case | None = None) -> Outcome:
    return Outcome(check_for(kernel), case or fake_case(), error=0.0, triton_s=triton_s, baseline_s=baseline_s)


@pytest.fixture
def fake_spec(tmp_path):
    """100 TFLOP/s bf16, 10 TFLOP/s fp32, 1000 GB/s: ridge point at 100 FLOP/byte for bf16."""
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({"format": "wattbench-device-specs/1", "devices": [{
        "name": "Fake GPU", "match": ["^Fake GPU$"],
        "peak_tflops": {"bf16": {"value": 100.0, "source": "test"}, "fp32": {"value": 10.0, "source": "test"}},
        "memory_bandwidth_gbps": {"value": 1000.0, "source": "test"}}]}))
    return load_specs(path).find("Fake GPU")


@pytest.mark.parametrize("kernel, speedup, passes", [
    ("matmul", 1 / 1.09, True), ("matmul", 1 / 1.11, False),            # within 10% of cuBLAS
    ("attention", 1 / 1.19, True), ("attention", 1 / 1.21, False),      # within 20% of SDPA flash
    ("matmul_int8w", 1.51, True), ("matmul_int8w", 1.49, False),        # 1.5x faster than bf16 torch
    ("adamw_step", 1.01, True), ("adamw_step", 1.0, False),             # strictly faster than foreach
])
def test_speed_targets_decide_on_the_ratio_to_the_baseline(kernel, speedup, passes, fake_spec):
    outcome = timed(kernel, triton_s=1e-3, baseline_s=speedup * 1e-3)
    assert verdict(outcome, fake_spec) == (("PASS", True) if passes else ("FAIL", False))
    assert verdict(outcome, None) == verdict(outcome, fake_spec)  # a speed ratio needs no spec


@pytest.mark.parametrize("kernel", ["rms_norm", "layer_norm", "softmax", "swiglu", "cross_entropy"])
@pytest.mark.parametrize("pct, passes", [(81.0, True), (80.0, True), (79.0, False)])
def test_bandwidth_targets_need_80_percent_of_peak(kernel, pct, passes, fake_spec):
    triton_s = BYTES / (pct / 100 * 1000e9)  # the fake spec's 1000 GB/s
    outcome = timed(kernel, triton_s=triton_s, baseline_s=2 * triton_s)  # faster than torch changes nothing
    assert figures(outcome, fake_spec).pct_bandwidth == pytest.approx(pct)
    assert verdict(outcome, fake_spec)[1] is passes


def test_a_bandwidth_target_without_a_spec_is_unchecked_and_not_passed():
    outcome = timed("rms_norm", triton_s=1e-6, baseline_s=1e-6)
    assert verdict(outcome, None) == (f"{NO_SPEC}: unchecked", False)


def test_target_rejects_bad_arguments():
    with pytest.raises(ValueError, match="metric"):
        Target("x", "latency", 1.0)
    with pytest.raises(ValueError, match="minimum"):
        Target("x", "speedup", 0.0)


@pytest.mark.parametrize("precision, flops_per_byte, bound", [
    ("bf16", 1.0, 1.0),          # memory-bound: 1 FLOP/byte x 1000 GB/s = 1 TFLOP/s
    ("bf16", 50.0, 50.0),        # still under the ridge point (100 FLOP/byte)
    ("bf16", 1000.0, 100.0),     # compute-bound: the bf16 peak
    ("int8w-bf16", 1000.0, 100.0),  # dequantised to bf16: the bf16 peak
    ("fp32", 1000.0, 10.0),
])
def test_roofline_bound_is_the_lower_of_peak_and_intensity_times_bandwidth(precision, flops_per_byte, bound,
                                                                            fake_spec):
    assert roofline_tflops(fake_spec, precision, flops_per_byte * 1e6, 1e6) == pytest.approx(bound)


def test_roofline_bound_is_unknown_without_the_figures(fake_spec):
    assert roofline_tflops(None, "bf16", 1e9, 1e9) is None
    assert roofline_tflops(fake_spec, "fp16", 1e9, 1e9) is None  # the fake spec has no fp16 peak


def test_figures_of_a_timed_case(fake_spec):
    found = figures(timed("softmax", triton_s=2e-3, baseline_s=3e-3), fake_spec)
    assert found.tflops == pytest.approx(0.5) and found.gbps == pytest.approx(500)
    assert found.pct_bound == pytest.approx(50)  # 1 FLOP/byte: bound 1 TFLOP/s
    assert found.pct_bandwidth == pytest.approx(50) and found.speedup == pytest.approx(1.5)
    without_spec = figures(timed("softmax", triton_s=2e-3, baseline_s=3e-3), None)
    assert without_spec.pct_bound is None and without_spec.pct_bandwidth is None


def test_gpu_table_prints_the_figures_and_no_spec_where_a_bound_is_unknown(fake_spec):
    outcomes = [timed("softmax", triton_s=2e-3, baseline_s=3e-3)]
    table = format_table(outcomes, fake_spec, interpreted=False)
    cells = re.split(r"\s{2,}", table.splitlines()[-1])
    assert cells[2:] == ["0.0e+00", "2 ms", "0.5", "500", "50.0%", "3 ms", "1.50x", ">= 80% BW", "FAIL"]
    assert NO_SPEC in format_table(outcomes, None, interpreted=False)


def test_wrong_or_failed_cases_pass_nothing_and_print_no_figures(fake_spec):
    wrong = Outcome(check_for("matmul"), fake_case("fp32"), error=1e-3)  # fp32 tolerance is 1e-5
    broken = Outcome(check_for("matmul"), fake_case("fp32"), failure="OutOfMemoryError: CUDA out of memory")
    assert verdict(wrong, fake_spec) == ("WRONG: rel err 1.0e-03 > 1e-05", False)
    assert verdict(broken, fake_spec) == ("ERROR: OutOfMemoryError: CUDA out of memory", False)
    for line in format_table([wrong, broken], fake_spec, interpreted=False).splitlines()[2:]:
        assert re.search(r"-\s+-\s+-\s+-\s+-\s+-", line)


def test_relative_error():
    x = torch.randn(10, 7, dtype=torch.float64)
    assert relative_error(x, x.clone()) == 0.0
    assert relative_error((x, 2 * x), (x, x)) == pytest.approx(1.0)  # the worst output counts
    assert relative_error(torch.full_like(x, math.nan), x) == math.inf
    assert relative_error(x[:5], x) == math.inf
    assert relative_error([x], [x, x]) == math.inf


def test_most_bytes_keeps_the_largest_case_per_precision():
    cases = [fake_case("bf16", 10.0), fake_case("bf16", 30.0), fake_case("fp32", 5.0), fake_case("bf16", 20.0)]
    assert [(c.precision, c.accounting()["bytes"]) for c in most_bytes(cases)] == [("bf16", 30.0), ("fp32", 5.0)]


def test_gpu_cases_follow_the_targets():
    for check in CHECKS:
        assert check.cases("quick", interpreted=False), f"{check.kernel}: no GPU case"
        assert check.cases("quick", interpreted=True), f"{check.kernel}: not checked by the reduced mode"
    matmul = check_for("matmul").cases("quick", interpreted=False)
    assert all(c.precision == "bf16" and c.size.params["K"] * c.size.params["N"] >= 4096 ** 2 for c in matmul)
    int8w = check_for("matmul_int8w").cases("full", interpreted=False)
    assert {c.size.params["M"] for c in int8w} == {1, 4, 16}
    assert all(c.precision == "int8w-bf16" for c in int8w)


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def test_each_checked_case_counts_at_least_the_bytes_of_its_inputs():
    """GB/s and % of bandwidth are only as good as the registry's byte counts: a call must read its inputs."""
    for check in CHECKS:
        for case in check.cases("quick", interpreted=True):
            generator = torch.Generator().manual_seed(0)
            inputs = case.workload.make_inputs(case.size.params, case.precision, CPU.torch, generator)
            inputs.pop("w_dense", None)  # the accuracy guard's unquantised weight: the step never reads it
            assert case.accounting()["bytes"] >= _tensor_bytes(inputs), case.id


def test_every_baseline_builds_and_runs():
    for check in CHECKS:
        case = check.cases("quick", interpreted=True)[0]
        outputs = output_tensors(check.build_baseline(case, CPU, SEED)())
        assert outputs and all(torch.isfinite(t).all() for t in outputs), check.kernel


def test_adamw_baseline_is_torch_optim_adamw_with_foreach(monkeypatch):
    made = []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **kw: made.append(kw) or real(*a, **kw))
    check = check_for("adamw_step")
    case = check.cases("quick", interpreted=True)[0]
    generator = torch.Generator().manual_seed(case.seed(SEED))
    params = case.workload.make_inputs(case.size.params, case.precision, CPU.torch, generator)["tensors"][0]
    after = check.build_baseline(case, CPU, SEED)()
    assert made and made[0]["foreach"] is True
    assert math.inf > relative_error(after, params) > 0  # the same parameters, stepped


def test_median_time_plans_rounds_like_the_harness():
    calls = []

    def step():
        calls.append(1)
        time.sleep(0.002)

    plan = TimingPlan(min_time_s=0.02, min_rounds=3, max_rounds=50, warmup_rounds=1)
    median = median_time(step, CPU, plan)
    assert 0.002 <= median < 0.05
    assert len(calls) >= 1 + 1 + 3  # warm-up, the planning call, at least min_rounds


def test_measure_times_both_sides_with_the_checks_plan(monkeypatch):
    plans = []
    monkeypatch.setattr(kernel_perf, "median_time", lambda step, device, plan: plans.append(plan) or 1e-3)
    check = check_for("rms_norm")
    outcome = kernel_perf.measure(check, check.cases("quick", interpreted=True)[0], CPU, True, TimingPlan())
    assert outcome.correct and outcome.triton_s == outcome.baseline_s == 1e-3
    assert [plan.cuda_graph for plan in plans] == [True, True]


def test_measure_does_not_time_a_wrong_result(monkeypatch):
    monkeypatch.setattr(kernel_perf, "relative_error", lambda actual, expected: 1.0)
    monkeypatch.setattr(kernel_perf, "median_time", lambda *args: pytest.fail("a wrong kernel was timed"))
    check = check_for("swiglu")
    outcome = kernel_perf.measure(check, check.cases("quick", interpreted=True)[0], CPU, True, TimingPlan())
    assert not outcome.correct and outcome.triton_s is None


def test_reduced_mode_checks_every_kernel_and_prints_no_timing(monkeypatch, capsys):
    monkeypatch.setattr(kernel_perf, "median_time", lambda *args: pytest.fail("interpreted kernels were timed"))
    assert cli.main(["selfcheck", "kernels", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith(NO_TIMING)]
    assert {row.split()[0] for row in rows} == {check.kernel for check in CHECKS}
    assert all(" ok " in row for row in rows)
    assert not re.search(r"\d\s?(ns|us|ms|s)\b", out), "a time was printed"
    assert not re.search(r"\d\.\d\dx\b|GB/s\s+\d", out), "a speed figure was printed"
    assert f"{len(rows)} of {len(rows)} Triton results match" in out


def test_reduced_mode_fails_on_a_wrong_result(monkeypatch, capsys):
    monkeypatch.setattr(kernel_perf, "CHECKS", (check_for("rms_norm"),))
    monkeypatch.setattr(kernel_perf, "relative_error", lambda actual, expected: 0.5)
    assert cli.main(["selfcheck", "kernels", "--device", "cpu"]) == 1
    assert "WRONG: rel err 5.0e-01" in capsys.readouterr().out


def test_main_rejects_bad_input(monkeypatch):
    with pytest.raises(UsageError, match="preset"):
        kernel_perf.check_kernels("cpu", preset="huge")
    monkeypatch.setattr(kernel_perf.kernels, "INTERPRETED", False)
    with pytest.raises(UsageError, match="TRITON_INTERPRET"):
        kernel_perf.check_kernels("cpu")
