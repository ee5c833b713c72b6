"""The workload registry: what the suites are generated from."""

import pytest
import torch

from wattbench.device import Device
from wattbench.errors import UsageError
from wattbench.workloads import RUN_PRESETS, Size, Workload, case_by_id, cases, workloads

CPU = Device("cpu", None, "test cpu")
GPU = Device("cuda", 0, "test gpu")


def test_every_workload_is_complete():
    registered = workloads()
    assert {w.name for w in registered} >= {"gemm.train", "gemm.infer"}
    for workload in registered:
        assert workload.style in ("train", "infer")
        assert "torch" in workload.impls
        assert workload.unit and workload.sizes and workload.precisions
        for device_type in ("cpu", "cuda"):
            assert any("quick" in s.presets and device_type in s.devices for s in workload.sizes), \
                f"{workload.name} has no quick size for {device_type}"


@pytest.mark.parametrize("device", [CPU, GPU], ids=["cpu", "cuda"])
@pytest.mark.parametrize("preset", RUN_PRESETS)
def test_cases_cover_both_styles_and_impls_with_unique_ids(preset, device):
    selected = cases(preset, device)
    ids = [case.id for case in selected]
    assert len(ids) == len(set(ids))
    assert {c.workload.style for c in selected} == {"train", "infer"}
    quick_gpu = preset == "quick" and device.type == "cuda"  # its subset leaves the compiled impl to full
    assert {c.impl for c in selected} == {"torch", "triton"} | (set() if quick_gpu else {"compiled"})
    assert all(device.type in c.size.devices and preset in c.size.presets for c in selected)


def test_full_preset_extends_quick():
    quick = {c.id for c in cases("quick", CPU)}
    full = {c.id for c in cases("full", CPU)}
    assert quick < full


def test_case_ids_are_stable_and_round_trip():
    case = next(c for c in cases("quick", CPU) if c.workload.name == "gemm.train")
    assert case.id == "gemm.train-torch-fp32-M256-K128-N128"
    for case in cases("full", GPU):
        assert case_by_id(case.id) == case


def test_unknown_preset_and_case_are_refused():
    with pytest.raises(UsageError, match="unknown preset 'huge'"):
        cases("huge", CPU)
    with pytest.raises(KeyError):
        case_by_id("gemm.train-torch-fp64-M1")


def test_gemm_accounting_counts_three_gemms_for_training():
    train = case_by_id("gemm.train-torch-fp32-M256-K128-N128").accounting()
    M, K, N = 256, 128, 128
    assert train["unit"] == "tokens" and train["units_per_call"] == M
    assert train["flops"] == 3 * 2 * M * N * K + 2 * M * N  # 3 GEMMs, bias add, bias-gradient reduction
    assert train["bytes"] == (3 * (M * K + K * N + M * N) + 2 * N) * 4
    infer = case_by_id("gemm.infer-torch-bf16-M16-K512-N512").accounting()
    assert infer["flops"] == 2 * 16 * 512 * 512 + 16 * 512
    assert infer["bytes"] == (16 * 512 + 512 * 512 + 16 * 512 + 512) * 2


def test_inputs_are_reproducible_from_the_seed():
    case = case_by_id("gemm.infer-torch-fp32-M16-K512-N512")
    first, again, other = case.build(CPU, 7)(), case.build(CPU, 7)(), case.build(CPU, 8)()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert case.seed(7) != case.seed(8)
    assert case_by_id("gemm.infer-triton-fp32-M16-K512-N512").seed(7) == case.seed(7), "impls must share inputs"


@pytest.mark.parametrize("name", ["gemm.train", "gemm.infer"])
def test_triton_and_torch_steps_agree(name):
    """The two implementations of a workload compute the same thing on the same inputs."""
    size = next(c.size for c in cases("quick", CPU) if c.workload.name == name).name
    torch_out = case_by_id(f"{name}-torch-fp32-{size}").build(CPU, 3)()
    triton_out = case_by_id(f"{name}-triton-fp32-{size}").build(CPU, 3)()
    pairs = zip(torch_out, triton_out) if isinstance(torch_out, tuple) else [(torch_out, triton_out)]
    for expected, actual in pairs:
        assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4)


def _workload(**overrides):
    fields = dict(name="x", op="x", style="train", unit="samples", sizes=(Size({"N": 1}),),
                  precisions={"cpu": ("fp32",)},
                  make_inputs=lambda *a: {}, impls={"torch": None, "triton": None}, units_per_call=lambda p: 1,
                  flops=lambda p: 1, bytes=lambda p, e: 1)
    fields.update(overrides)
    return Workload(**fields)


def test_workload_definition_is_validated():
    with pytest.raises(ValueError, match="style"):
        _workload(style="serve")
    with pytest.raises(ValueError, match="'torch' reference"):
        _workload(impls={"triton": None})
    with pytest.raises(KeyError):
        _workload(precisions={"cpu": ("fp64",)})
    assert Size({"M": 1, "K": 2}).name == "M1-K2"
    assert Size({"model": "tiny", "B": 4}).name == "tiny-B4"


@pytest.mark.parametrize("device", [CPU, GPU], ids=["cpu", "cuda"])
def test_every_case_counts_positive_work_and_training_counts_more(device):
    by_op = {}
    for case in cases("full", device):
        counts = case.accounting()
        assert counts["units_per_call"] > 0 and counts["flops"] > 0 and counts["bytes"] > 0, case.id
        by_op.setdefault((case.workload.op, case.precision), {}).setdefault(case.workload.style, []).append(counts)
    for (op, _), styles in by_op.items():
        if op in ("rms_norm", "layer_norm", "softmax", "swiglu") and {"train", "infer"} <= set(styles):
            # Training rows outnumber any inference shape here, and add the backward pass's traffic.
            assert max(c["bytes"] for c in styles["train"]) > max(c["bytes"] for c in styles["infer"]), op


def test_sparse_24_support_is_probed_not_assumed_from_the_compute_capability(monkeypatch):
    """A Hopper GPU passes a capability >= 8.0 test, yet some torch builds cannot run 2:4 there."""
    from wattbench.workloads import gemm

    sparse = case_by_id("gemm.infer-torch-sp24-bf16-M1-K4096-N4096")
    hopper = Device("cuda", 0, "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    monkeypatch.setattr(gemm, "sparse_24_unsupported", lambda device: (
        "RuntimeError: CUDA error: architecture mismatch when calling cusparseLtInit"))
    assert sparse.workload.skip("torch", "sp24-bf16", hopper) == (
        "this torch build cannot run 2:4 sparse GEMMs on NVIDIA H100 80GB HBM3: "
        "RuntimeError: CUDA error: architecture mismatch when calling cusparseLtInit")
    monkeypatch.setattr(gemm, "sparse_24_unsupported", lambda device: None)
    assert sparse.workload.skip("torch", "sp24-bf16", hopper) is None
    assert "no Triton 2:4" in sparse.workload.skip("triton", "sp24-bf16", hopper)


def test_the_sparse_24_probe_reports_the_failure_of_a_real_attempt():
    from wattbench.workloads import gemm

    reason = gemm.sparse_24_unsupported(torch.device("cpu"))  # this CPU build has no 2:4 CPU kernels
    assert reason is not None and reason.split(":")[0].endswith("Error")
