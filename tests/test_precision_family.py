"""gemm.infer's precision family on CPU: every quantised case records its accuracy guard and the path that ran,
and its FLOP and byte counts are the hand-computed ones."""

import pytest

from wattbench.accuracy import Budget
from wattbench.device import detect
from wattbench.workloads import case_by_id, cases

CPU = detect("cpu")
#: Relative error against the fp32 GEMM of the unquantised weight, at K = 512 (docs/kernel-performance.md
#: has K = 4096's): a bound each precision's measure lands under, and one it lands over (not a no-op).
BOUNDS = {"fp8": (0.02, 0.06), "int8w-fp32": (0.001, 0.02), "int4w-fp32": (0.05, 0.15)}
PATHS = {"fp8": "torch._scaled_mm", "int8w-fp32": "dequantise-then-matmul", "int4w-fp32": "torch._weight_int4pack_mm"}


def test_the_cpu_family_holds_every_quantised_format():
    precisions = {c.precision for c in cases("quick", CPU) if c.workload.name == "gemm.infer"}
    assert precisions == {"fp32", "bf16", "fp8", "int8w-fp32", "int4w-fp32"}


@pytest.mark.parametrize("precision", sorted(BOUNDS))
@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_quantised_cases_record_their_accuracy_and_path(precision, impl):
    step = case_by_id(f"gemm.infer-{impl}-{precision}-M16-K512-N512").build(CPU, 0)
    fields = step.guard(step())
    low, high = BOUNDS[precision]
    assert low < fields["accuracy"] < high
    assert fields["reference_path"] == (PATHS[precision] if impl == "torch" else "triton")
    assert fields["within_budget"] is True and "accuracy_note" not in fields


def test_dense_cases_are_not_guarded():
    assert case_by_id("gemm.infer-torch-fp32-M16-K512-N512").build(CPU, 0).guard is None


def test_a_tight_budget_flags_int4():
    step = case_by_id("gemm.infer-torch-int4w-fp32-M16-K512-N512").build(CPU, 0)
    error = step.guard(step())["accuracy"]
    fields = Budget(gemm_relative_error=0.02).fields({"accuracy": error})
    assert fields["within_budget"] is False and "relative error" in fields["accuracy_note"]


@pytest.mark.parametrize("precision, expected_bytes", [
    # bf16 x, out, bias (2 B); e4m3 weight (1 B); one fp32 scale per column.
    ("fp8", 2 * (16 * 512 + 16 * 512 + 512) + 512 * 512 + 4 * 512),
    # fp32 x, out, bias; half a byte per weight; a bf16 scale and zero per group of 128 per column.
    ("int4w-fp32", 4 * (16 * 512 + 16 * 512 + 512) + 512 * 512 // 2 + (512 // 128) * 512 * 4),
    # fp32 x, out, bias; one byte per weight; an fp32 scale per column.
    ("int8w-fp32", 4 * (16 * 512 + 16 * 512 + 512) + 512 * 512 + 4 * 512),
    ("fp32", 4 * (16 * 512 + 16 * 512 + 512 + 512 * 512)),
])
def test_flops_and_bytes_per_precision(precision, expected_bytes):
    accounting = case_by_id(f"gemm.infer-torch-{precision}-M16-K512-N512").accounting()
    assert accounting["bytes"] == expected_bytes
    assert accounting["flops"] == 2 * 16 * 512 * 512 + 16 * 512  # the product and the bias, whatever the format


def test_gpu_family_bytes_for_int4_bf16_and_sp24():
    """On a GPU (accounting only): int4w-bf16 at 4096x4096, groups of 128, is docs' 8,912,896 weight bytes."""
    M, K, N = 1, 4096, 4096
    int4 = case_by_id("gemm.infer-torch-int4w-bf16-M1-K4096-N4096").accounting()["bytes"]
    assert int4 == 2 * (M * K + M * N + N) + 8_912_896
    sp24 = case_by_id("gemm.infer-torch-sp24-bf16-M1-K4096-N4096").accounting()["bytes"]
    assert sp24 == 2 * (M * K + M * N + N) + K * N + K * N // 8
