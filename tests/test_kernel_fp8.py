"""FP8 (e4m3) GEMM with dynamic activation quantisation, against float64 and torch._scaled_mm.

Which path runs on a CPU: the Triton kernels themselves, through the interpreter. Its tl.dot on e4m3
operands is exact (each product of two e4m3 values fits fp32; the interpreter multiplies in fp32,
unlike its bf16 dot, triton#11584), so the GEMM is checked as written. Its cast from fp32 to e4m3 is
not (triton#8322, #11897), which is why the kernel rounds to e4m3 itself (`_round_to_e4m3`) before
casting an already-representable value; the first tests pin that rounding bit for bit against
torch's cast, so they check the same arithmetic a GPU runs.

Tolerances (relative Frobenius error; documented in docs/kernel-performance.md):
- against the exact answer on the same quantised operands (float64 dequantise-then-matmul): 8e-3,
  the bf16 output's rounding (kernel_checks.REL_TOL[bf16]), the only rounding besides fp32 accumulation;
- against torch._scaled_mm (which rounds its output too): twice that;
- the quantisation itself, against the dense product of the unquantised inputs: between 1% and 6%
  (about 4% on Gaussian inputs), the accuracy measure a run records.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kernel_checks import DEVICE, REL_TOL, assert_rel_close, generator_for, randn
from wattbench.kernels import INTERPRETED, targets
from wattbench.kernels.accuracy import gemm_accuracy, relative_error
from wattbench.kernels.quantize import FP8_MAX, Fp8Weight, quantize_fp8_activations, quantize_fp8_weight

fp8 = importlib.import_module("wattbench.kernels.matmul_fp8")

BF16 = torch.bfloat16
PATH = "Triton interpreter (fp8 tl.dot exact; e4m3 rounding done in the kernel)" if INTERPRETED else "GPU"
# Several K steps and N tiles under the interpreter's 16x32x32 tile, neither a multiple of the tile; multiples
# of 16, which cuBLASLt's _scaled_mm needs. ODD is a shape only the Triton kernel takes.
K, N = 208, 48
ODD = (200, 45)


def _bits(q: torch.Tensor) -> torch.Tensor:
    return q.view(torch.uint8)


def _e4m3_values() -> torch.Tensor:
    """Every finite non-negative e4m3 value, ascending."""
    values = torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
    return values.sort().values


def test_the_kernels_rounding_to_e4m3_matches_torchs_cast_bit_for_bit():
    """Every e4m3 value, every midpoint between neighbours (ties go to even), and the fp32 values just
    either side of each midpoint, both signs; the row's maximum is 448 so its scale is exactly 1."""
    values = _e4m3_values()
    midpoints = (values[:-1] + values[1:]) / 2
    nudged = torch.cat([torch.nextafter(midpoints, torch.tensor(0.0)), torch.nextafter(midpoints,
                                                                                     torch.tensor(1e9))])
    row = torch.cat([values, midpoints, nudged, torch.tensor([FP8_MAX])])
    row = torch.cat([row, -row])[None, :].to(DEVICE)
    q, scale = fp8.quantize_fp8_activations_triton(row, "row")
    assert scale.tolist() == [1.0], PATH
    expected = row.to(torch.float8_e4m3fn)
    mismatched = (_bits(q) != _bits(expected)).nonzero()[:, 1]
    assert mismatched.numel() == 0, (f"{PATH}: {mismatched.numel()} of {row.shape[1]} values rounded differently, "
                                     f"e.g. {row[0, mismatched[:4]].tolist()}")


@pytest.mark.parametrize("scaling", ["row", "tensor"])
def test_triton_quantiser_matches_torchs_bit_for_bit(scaling):
    x = randn(37, K, dtype=BF16, generator=generator_for(f"fp8-quantiser-{scaling}"))
    x[3] = 0  # a zero row: scale 1
    x[5] *= 2.0 ** -12  # a small row: part of it in e4m3's subnormals under a per-tensor scale
    x = x.t().contiguous().t()  # read through strides: K is not the contiguous dimension
    q, scale = fp8.quantize_fp8_activations_triton(x, scaling)
    q_torch, scale_torch = quantize_fp8_activations(x, scaling)
    assert torch.equal(scale, scale_torch), PATH
    assert torch.equal(_bits(q), _bits(q_torch)), f"{PATH}: {(_bits(q) != _bits(q_torch)).sum()} elements differ"


def _case(name, m, scaling, bias, shape=(K, N)):
    k, n = shape
    generator = generator_for(name)
    w = randn(k, n, generator=generator, scale=k ** -0.5)
    x = randn(m, k, dtype=BF16, generator=generator)
    c_bias = randn(n, dtype=BF16, generator=generator, scale=0.5) if bias else None
    return x, w, quantize_fp8_weight(w, scaling), c_bias


@pytest.mark.parametrize("scaling", ["row", "tensor"])
@pytest.mark.parametrize("m", [1, 5, 37], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("shape", [(K, N), ODD], ids=lambda shape: f"K{shape[0]}-N{shape[1]}")
def test_matches_the_exact_product_of_the_quantised_operands(scaling, m, bias, shape):
    x, _, weight, c_bias = _case(f"fp8-{scaling}-{m}-{bias}-{shape}", m, scaling, bias, shape)
    out = fp8.matmul_fp8(x, weight, c_bias)
    assert out.dtype == BF16 and out.shape == (m, shape[1])
    exact = fp8.matmul_fp8_dequantized(x, weight, c_bias, torch.float64)
    assert_rel_close(out, exact, BF16, name=f"{PATH} output")


@pytest.mark.parametrize("scaling", ["row", "tensor"])
def test_matches_torch_scaled_mm_and_quantisation_error_is_recorded(scaling):
    x, w, weight, c_bias = _case(f"fp8-reference-{scaling}", 24, scaling, True)
    out = fp8.matmul_fp8(x, weight, c_bias)
    path = fp8.fp8_reference_path(DEVICE, scaling, K, N)
    if DEVICE.type == "cpu":
        assert path == "torch._scaled_mm", "torch 2.13's CPU build runs _scaled_mm at both scalings"
    reference = fp8.FP8_REFERENCES[path](x, weight, c_bias)
    assert_rel_close(out, reference, BF16, name=f"{PATH} vs {path}", tol=2 * REL_TOL[BF16])
    accuracy = gemm_accuracy(out, x, w, c_bias)
    assert 0.01 < accuracy < 0.06, f"e4m3 quantisation error {accuracy:.4f} against the dense GEMM"
    assert accuracy == pytest.approx(gemm_accuracy(reference, x, w, c_bias), rel=0.1)


def test_reads_strided_activations():
    x, _, weight, _ = _case("fp8-strided", 9, "row", False)
    strided = x.t().contiguous().t()
    assert strided.stride() == (1, 9)
    assert_rel_close(fp8.matmul_fp8(strided, weight), fp8.matmul_fp8_dequantized(x, weight, None, torch.float64),
                     BF16)


@pytest.mark.parametrize("scaling, bad_rows", [("row", [2]), ("tensor", [0, 1, 2, 3])])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_activation_makes_its_output_non_finite_on_both_paths(scaling, bad_rows, value):
    """Dynamic quantisation does not read the device to refuse a NaN; it must not hide one either."""
    x, _, weight, _ = _case(f"fp8-nonfinite-{scaling}", 4, scaling, False)
    x[2, 11] = value
    reference = fp8.FP8_REFERENCES[fp8.fp8_reference_path(DEVICE, scaling, K, N)]
    for name, out in (("triton", fp8.matmul_fp8(x, weight)), ("torch", reference(x, weight))):
        finite_rows = torch.isfinite(out.float()).all(dim=1)
        assert (~finite_rows).nonzero().flatten().tolist() == bad_rows, name


def test_relative_error_is_infinite_for_a_non_finite_output():
    expected = torch.ones(2, 2)
    assert relative_error(torch.tensor([[1.0, float("nan")], [1.0, 1.0]]), expected) == float("inf")
    assert relative_error(torch.full((2, 2), 1.5), expected) == pytest.approx(0.5)
    assert relative_error(torch.full((2, 2), 0.5), torch.zeros(2, 2)) == pytest.approx(1.0)  # absolute


def _good():
    x = torch.ones(2, 64, device=DEVICE, dtype=BF16)
    return x, quantize_fp8_weight(torch.ones(64, 32, device=DEVICE), "row"), torch.ones(32, device=DEVICE, dtype=BF16)


@pytest.mark.parametrize("change, error, match", [
    (lambda x, w, b: (x[0], w, b), ValueError, "x must be 2-D"),
    (lambda x, w, b: (x.float(), w, b), TypeError, "x must be torch.bfloat16"),
    (lambda x, w, b: (x, (w.q, w.scale), b), TypeError, "w must be an Fp8Weight"),
    (lambda x, w, b: (x, w, b.float()), TypeError, "bias must be torch.bfloat16"),
    (lambda x, w, b: (x[:, :32], w, b), ValueError, "inner dimensions differ"),
    (lambda x, w, b: (x, Fp8Weight(w.q, w.scale[:1], "row"), b), ValueError, r"needs w.scale of shape \(32,\)"),
    (lambda x, w, b: (x, Fp8Weight(w.q, w.scale, "tensor"), b), ValueError, r"needs w.scale of shape \(1,\)"),
    (lambda x, w, b: (x, Fp8Weight(w.q.to(BF16), w.scale, "row"), b), TypeError, "float8_e4m3fn values"),
    (lambda x, w, b: (x, w, b[:4]), ValueError, "bias must have shape"),
    (lambda x, w, b: (x, Fp8Weight(w.q.to("meta"), w.scale, "row"), b), ValueError, "one device"),
], ids=["x_rank", "x_dtype", "w_type", "bias_dtype", "inner", "row_scale", "tensor_scale", "w_dtype", "bias_len",
        "device"])
def test_bad_input_is_rejected_before_launch(change, error, match):
    with pytest.raises(error, match=match):
        fp8.matmul_fp8(*change(*_good()))


def test_a_gpu_without_fp8_tensor_cores_is_refused_in_one_line(described_gpu, monkeypatch):
    monkeypatch.setattr(fp8, "INTERPRETED", False)  # the compiled kernels' check, not the interpreter's
    described_gpu((8, 0), 166_912)
    with pytest.raises(targets.UnsupportedDevice, match=r"compute capability 8.9 or newer .*this GPU is 8.0"):
        fp8.check_fp8_device(torch.device("cuda", 0))
    described_gpu((8, 9), 101_376)
    fp8.check_fp8_device(torch.device("cuda", 0))


@pytest.mark.parametrize("capability, shared", [((8, 9), 101_376), ((9, 0), 232_448)], ids=["sm_89", "sm_90"])
@pytest.mark.parametrize("rows", [1, 64, 4096])
def test_each_target_keeps_fitting_tiles_and_hopper_alone_the_largest(described_gpu, capability, shared, rows):
    described_gpu(capability, shared)
    configs = fp8.tile_configs(fp8.GEMM_FP8 + fp8.GEMM_FP8_HOPPER)
    kept = fp8._matmul_fp8_kernel.early_config_prune(configs, {}, M=rows, ROW_SCALES=True)
    blocks = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_stages, c.num_warps)
              for c in kept}
    assert blocks and all(fp8._shared_memory(c, {}, capability) <= shared for c in kept)
    assert ((128, 256, 128, 3, 8) in blocks) == (capability >= (9, 0))
    assert any(block[0] <= 32 for block in blocks) == (rows <= 64), "decode tiles for decode-sized M only"


def test_reference_falls_back_to_dequantise_then_matmul_with_a_label(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("scaled_mm: not on this device\nmore")

    fp8.scaled_mm_unsupported.cache_clear()
    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    try:
        assert fp8.scaled_mm_unsupported(DEVICE, "row", K, N) == "RuntimeError: scaled_mm: not on this device"
        assert fp8.fp8_reference_path(DEVICE, "row", K, N) == "dequantise-then-matmul"
    finally:
        fp8.scaled_mm_unsupported.cache_clear()


def test_flops_count_the_product_as_torch_does():
    x, w, _, _ = _case("fp8-flops", 5, "row", False)
    with FlopCounterMode(display=False) as counter:
        x.float() @ w
    assert fp8.matmul_fp8_flops(5, N, K) == counter.get_total_flops() == 2 * 5 * N * K


def test_bytes_are_bf16_activations_e4m3_weight_scales_and_bf16_result():
    # M=16, K=N=4096 with bias: 2 B x (16x4096 in + 16x4096 out + 4096 bias) = 270,336 B;
    # the weight 4096 x 4096 x 1 B = 16,777,216 B; its scales 4096 x 4 B per row, or 4 B per tensor.
    assert fp8.matmul_fp8_bytes(16, 4096, 4096, "row", bias=True) == 270_336 + 16_777_216 + 16_384
    assert fp8.matmul_fp8_bytes(16, 4096, 4096, "tensor", bias=True) == 270_336 + 16_777_216 + 4
    assert fp8.matmul_fp8_bytes(1, 8, 32, "tensor") == 2 * (32 + 8) + 256 + 4
