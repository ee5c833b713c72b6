"""Weight-only INT4 group-wise GEMM, against float64 and torch's tinygemm (`_weight_int4pack_mm`).

Which path runs on a CPU: the Triton kernel through the interpreter. For fp32 and fp16 activations it
runs as written. For bf16 the interpreter's tl.dot is wrong (triton#11584), so the kernel (UPCAST, as
matmul_int8w does) rounds the dequantised weight to bf16 exactly as on a GPU and then multiplies the
bf16 values in fp32: the quantised arithmetic is the GPU's, only the dot's input type is emulated.

Tolerances (relative Frobenius error; documented in docs/kernel-performance.md):
- against the exact answer on the same int4 weight (float64 dequantise-then-matmul): the output
  dtype's (kernel_checks.REL_TOL: fp32 1e-5, fp16 1e-3, bf16 8e-3); 16-bit outputs also carry the
  dequantised weight's rounding to that dtype, which the same bound covers;
- against tinygemm (or the labelled fallback): twice that;
- the quantisation itself, against the dense product of the unquantised weight: 3% to 15% for groups
  of 128 (about 10% asymmetric, 12% symmetric on Gaussian weights), the accuracy measure a run records.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kernel_checks import DEVICE, INTERPRETED, REL_TOL, assert_rel_close, generator_for, randn
from wattbench.kernels.accuracy import gemm_accuracy
from wattbench.kernels.quantize import Int4Weight, quantize_int4

int4 = importlib.import_module("wattbench.kernels.matmul_int4")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# N a multiple of 16 (tinygemm on CPU needs it), not of the tile; K several groups of 32 and 64.
K, N = 256, 48


def _path(dtype: torch.dtype) -> str:
    if not INTERPRETED:
        return "GPU"
    return "Triton interpreter" + (" (bf16 dot emulated in fp32)" if dtype == torch.bfloat16 else "")


def _case(name, m, dtype, group_size=128, symmetric=False, bias=True, n=N):
    generator = generator_for(name)
    w = randn(K, n, generator=generator, scale=K ** -0.5)
    x = randn(m, K, dtype=dtype, generator=generator)
    c_bias = randn(n, dtype=dtype, generator=generator, scale=0.5) if bias else None
    return x, w, quantize_int4(w, group_size, symmetric), c_bias


def _exact(x, weight, bias):
    return int4.matmul_int4w_reference(x.to(torch.float64), weight, None if bias is None else bias.to(torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 5, 37, 80], ids=lambda m: f"M{m}")  # decode-sized, and prefill-sized (M > 64)
@pytest.mark.parametrize("group_size, symmetric", [(128, False), (64, True), (32, False)],
                         ids=["g128-asym", "g64-sym", "g32-asym"])
def test_matches_the_exact_product_of_the_int4_weight(dtype, m, group_size, symmetric):
    x, _, weight, c_bias = _case(f"int4-{dtype}-{m}-{group_size}", m, dtype, group_size, symmetric)
    out = int4.matmul_int4w(x, weight, c_bias)
    assert out.dtype == dtype and out.shape == (m, N)
    assert_rel_close(out, _exact(x, weight, c_bias), dtype, name=f"{_path(dtype)} output")


def test_without_bias():
    x, _, weight, _ = _case("int4-no-bias", 3, torch.float32, bias=False)
    assert_rel_close(int4.matmul_int4w(x, weight), _exact(x, weight, None), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_tinygemm_and_quantisation_error_is_recorded(dtype):
    x, w, weight, c_bias = _case(f"int4-tinygemm-{dtype}", 16, dtype)
    path = int4.int4_reference_path(DEVICE, dtype, K, N, 128)
    if DEVICE.type == "cpu" or dtype == torch.bfloat16:  # CUDA's tinygemm takes bf16 activations only
        assert path == "torch._weight_int4pack_mm", int4.tinygemm_unsupported(DEVICE, dtype, K, N, 128)
    prepared = int4.prepare_int4_reference(weight, dtype)
    assert isinstance(prepared, int4.TinygemmWeight) == (path == "torch._weight_int4pack_mm")
    out = int4.matmul_int4w(x, weight, c_bias)
    reference = int4.matmul_int4w_reference(x, prepared, c_bias)
    assert_rel_close(out, reference, dtype, name=f"{_path(dtype)} vs {path}", tol=2 * REL_TOL[dtype])
    accuracy = gemm_accuracy(out, x, w, c_bias)
    assert 0.03 < accuracy < 0.15, f"int4 g128 quantisation error {accuracy:.4f} against the dense GEMM"


def test_reference_falls_back_to_dequantise_then_matmul_with_a_label():
    """N = 46 is not a multiple of 16, which tinygemm on CPU refuses; the kernel takes any even N."""
    x, _, weight, c_bias = _case("int4-fallback", 4, torch.float32, n=46)
    if DEVICE.type == "cpu":
        assert "N to be dividable by 16" in int4.tinygemm_unsupported(DEVICE, torch.float32, K, 46, 128)
        assert int4.int4_reference_path(DEVICE, torch.float32, K, 46, 128) == "dequantise-then-matmul"
    prepared = int4.prepare_int4_reference(weight, torch.float32)
    assert (prepared is weight) == (int4.int4_reference_path(DEVICE, torch.float32, K, 46, 128)
                                    == "dequantise-then-matmul")
    reference = int4.matmul_int4w_reference(x, prepared, c_bias)
    assert_rel_close(int4.matmul_int4w(x, weight, c_bias), reference, torch.float32, tol=2 * REL_TOL[torch.float32])


def test_reads_strided_activations():
    x, _, weight, c_bias = _case("int4-strided", 9, torch.float32)
    strided = x.t().contiguous().t()
    assert strided.stride() == (1, 9)
    assert_rel_close(int4.matmul_int4w(strided, weight, c_bias), _exact(x, weight, c_bias), torch.float32)


def _good():
    weight = quantize_int4(torch.ones(64, 32, device=DEVICE), 32)
    return torch.ones(2, 64, device=DEVICE), weight, torch.ones(32, device=DEVICE)


def _replace(weight, **fields):
    return Int4Weight(**{**weight.__dict__, **fields})


@pytest.mark.parametrize("change, error, match", [
    (lambda x, w, b: (x[0], w, b), ValueError, "x must be 2-D"),
    (lambda x, w, b: (x.double(), w, b), TypeError, "x must be one of"),
    (lambda x, w, b: (x, (w.packed, w.scales), b), TypeError, "w must be an Int4Weight"),
    (lambda x, w, b: (x, w, b.half()), TypeError, "bias must have x's dtype"),
    (lambda x, w, b: (x[:, :32], w, b), ValueError, "inner dimensions differ"),
    (lambda x, w, b: (x, _replace(w, packed=w.packed.to(torch.int8)), b), TypeError, "uint8 pairs"),
    (lambda x, w, b: (x, _replace(w, scales=w.scales.float()), b), TypeError, "bfloat16 scales"),
    (lambda x, w, b: (x, _replace(w, scales=w.scales[:1, :16]), b), ValueError, r"must have shape \(2, 32\)"),
    (lambda x, w, b: (x, _replace(w, group_size=48), b), ValueError, "group_size must be one of"),
    (lambda x, w, b: (x[:, :48], _replace(w, packed=w.packed[:48], group_size=32), b), ValueError,
     "K=48 is not a multiple of group_size=32"),
    (lambda x, w, b: (x, w, b[:4]), ValueError, "bias must have shape"),
    (lambda x, w, b: (x, _replace(w, zeros=w.zeros.t().contiguous().t()), b), ValueError, "share strides"),
    (lambda x, w, b: (x, _replace(w, packed=w.packed.to("meta")), b), ValueError, "one device"),
], ids=["x_rank", "x_dtype", "w_type", "bias_dtype", "inner", "packed_dtype", "scales_dtype", "scales_shape",
        "group_size", "partial_group", "bias_len", "strides", "device"])
def test_bad_input_is_rejected_before_launch(change, error, match):
    with pytest.raises(error, match=match):
        int4.matmul_int4w(*change(*_good()))


@pytest.mark.parametrize("capability, shared", [((8, 0), 166_912), ((8, 6), 101_376), ((8, 9), 101_376),
                                                ((9, 0), 232_448)], ids=["sm_80", "sm_86", "sm_89", "sm_90"])
@pytest.mark.parametrize("dtype, precision", [(torch.bfloat16, "tf32"), (torch.float32, "tf32"),
                                              (torch.float32, "ieee")], ids=["bf16", "fp32-tf32", "fp32-ieee"])
@pytest.mark.parametrize("rows", [1, 4096])
@pytest.mark.parametrize("group_size", [32, 128])
def test_each_target_keeps_tiles_that_fit_and_stay_within_a_group(described_gpu, capability, shared, dtype, precision,
                                                                  rows, group_size):
    described_gpu(capability, shared)
    a = torch.empty(1, dtype=dtype, device="meta")
    configs = int4.tile_configs(int4.TENSOR_CORES + int4.HOPPER + int4.FP32)
    args = {"a_ptr": a, "PRECISION": precision, "M": rows, "GROUP_SIZE": group_size}
    kept = int4._matmul_int4w_kernel.early_config_prune(configs, {}, **args)
    assert kept and all(int4._shared_memory(c, args, capability) <= shared for c in kept)
    assert all(c.kwargs["BLOCK_K"] <= group_size for c in kept)
    assert any(c.kwargs["BLOCK_M"] <= 32 for c in kept) == (rows <= 64), "decode tiles for decode-sized M only"
    hopper_tile = any((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) == (128, 256) for c in kept)
    assert hopper_tile == (capability >= (9, 0) and dtype == torch.bfloat16 and group_size >= 64)


def test_flops_count_the_product_as_torch_does():
    x, w, _, _ = _case("int4-flops", 5, torch.float32, bias=False)
    with FlopCounterMode(display=False) as counter:
        x @ w
    assert int4.matmul_int4w_flops(5, N, K) == counter.get_total_flops() == 2 * 5 * N * K


def test_bytes_are_activations_half_byte_weights_scales_zeros_and_result():
    # M=1, K=N=4096, bf16, groups of 128, bias: 2 B x (4096 in + 4096 out + 4096 bias) = 24,576 B;
    # the weight 4096 x 4096 / 2 = 8,388,608 B, its 32 x 4096 bf16 scales and zeros 524,288 B.
    assert int4.matmul_int4w_bytes(1, 4096, 4096, 2, 128, bias=True) == 24_576 + 8_388_608 + 524_288
    x, _, weight, c_bias = _case("int4-bytes", 5, torch.float16)
    out = int4.matmul_int4w(x, weight, c_bias)
    stored = sum(t.numel() * t.element_size() for t in (x, weight.packed, weight.scales, weight.zeros, c_bias, out))
    assert int4.matmul_int4w_bytes(5, N, K, 2, 128, bias=True) == stored
