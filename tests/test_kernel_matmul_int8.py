"""Weight-only int8 GEMM and its quantiser, against PyTorch in float64."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kernel_checks import DEVICE, assert_rel_close, generator_for, randn, skip_if_bf16_dot_interpreted
from wattbench.kernels.matmul_int8 import (INT8_MAX, matmul_int8w, matmul_int8w_bytes, matmul_int8w_flops,
                                           matmul_int8w_reference, quantize_int8)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Not multiples of any tile size; several N and K tiles under the interpreter's 16x32x32 tile.
N, K = 45, 70


def _quantised_weight(generator, layout="contiguous"):
    """A random weight, quantised; `sliced` hands the kernel every other column of a wider one."""
    width = 2 * N if layout == "sliced" else N
    w_q, scale = quantize_int8(randn(K, width, generator=generator, scale=K ** -0.5))
    return (w_q[:, ::2], scale[::2]) if layout == "sliced" else (w_q, scale)


def _expected(a, w_q, scale, bias):
    return matmul_int8w_reference(a.to(torch.float64), w_q, scale.to(torch.float64),
                                  None if bias is None else bias.to(torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 5, 37], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_matches_dequantised_float64_reference(dtype, m, bias):
    skip_if_bf16_dot_interpreted(dtype)
    generator = generator_for(f"int8w-{dtype}-{m}-{bias}")
    w_q, scale = _quantised_weight(generator)
    a = randn(m, K, dtype=dtype, generator=generator)
    c_bias = randn(N, dtype=dtype, generator=generator, scale=0.5) if bias else None
    out = matmul_int8w(a, w_q, scale, c_bias)
    assert out.dtype == dtype and out.shape == (m, N)
    assert_rel_close(out, _expected(a, w_q, scale, c_bias), dtype)


@pytest.mark.parametrize("weight_layout", ["contiguous", "sliced"])
def test_reads_strided_activations_and_weights(weight_layout):
    generator = generator_for(f"int8w-strides-{weight_layout}")
    w_q, scale = _quantised_weight(generator, weight_layout)
    a = randn(K, 9, generator=generator).t()  # a transposed view: K is the strided dimension
    assert_rel_close(matmul_int8w(a, w_q, scale), _expected(a, w_q, scale, None), torch.float32)
    c_bias = randn(2 * N, generator=generator)[::2]
    assert_rel_close(matmul_int8w(a, w_q, scale, c_bias), _expected(a, w_q, scale, c_bias), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_quantiser_is_symmetric_per_column_and_within_half_a_step(dtype):
    generator = generator_for(f"quantize-{dtype}")
    w = randn(2 * N, K, dtype=dtype, generator=generator).t()  # non-contiguous input
    w_q, scale = quantize_int8(w)
    assert w_q.dtype == torch.int8 and w_q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (w.shape[1],)
    w64, scale64 = w.to(torch.float64), scale.to(torch.float64)
    assert torch.allclose(scale64, w64.abs().amax(dim=0) / INT8_MAX, rtol=1e-6, atol=0)
    assert (w_q.abs().amax(dim=0) == INT8_MAX).all(), "each column's largest weight maps to +-127"
    error = (w_q.to(torch.float64) * scale64 - w64).abs()
    assert (error <= scale64 * (0.5 + 1e-5)).all(), f"worst error {(error / scale64).max():.4f} steps"


def test_quantiser_gives_a_zero_column_a_usable_scale():
    w = randn(K, N, generator=generator_for("quantize-zero-column"))
    w[:, 3] = 0
    w_q, scale = quantize_int8(w)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert (w_q[:, 3] == 0).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_quantiser_rejects_non_finite_weights(value):
    w = torch.ones(4, 3, device=DEVICE)
    w[1, 2] = value
    with pytest.raises(ValueError, match="finite"):
        quantize_int8(w)


@pytest.mark.parametrize("w, error, match", [
    (torch.ones(4), ValueError, "w must be 2-D"),
    (torch.ones(4, 3, dtype=torch.int32), TypeError, "w must be one of"),
    ([[1.0]], TypeError, "w must be a torch.Tensor"),
], ids=["rank", "dtype", "list"])
def test_quantiser_rejects_bad_weights(w, error, match):
    with pytest.raises(error, match=match):
        quantize_int8(w)


def _good():
    return (torch.ones(2, 3, device=DEVICE), torch.ones(3, 5, dtype=torch.int8, device=DEVICE),
            torch.ones(5, device=DEVICE), torch.ones(5, device=DEVICE))


@pytest.mark.parametrize("change, error, match", [
    (lambda a, q, s, b: (a[0], q, s, b), ValueError, "a must be 2-D"),
    (lambda a, q, s, b: (a, q[0], s, b), ValueError, "w_q must be 2-D"),
    (lambda a, q, s, b: (a, q, s[None], b), ValueError, "scale must be 1-D"),
    (lambda a, q, s, b: (a, q[:2], s, b), ValueError, "inner dimensions"),
    (lambda a, q, s, b: (a, q, s[:4], b), ValueError, "scale must have shape"),
    (lambda a, q, s, b: (a, q, s, b[:4]), ValueError, "bias must have shape"),
    (lambda a, q, s, b: (a.double(), q, s, b.double()), TypeError, "a must be one of"),
    (lambda a, q, s, b: (a, q.float(), s, b), TypeError, "w_q must be torch.int8"),
    (lambda a, q, s, b: (a, q, s.half(), b), TypeError, "scale must be torch.float32"),
    (lambda a, q, s, b: (a.half(), q, s, b), TypeError, "bias must have a's dtype"),
    (lambda a, q, s, b: (a, q.to("meta"), s, b), ValueError, "one device"),
    (lambda a, q, s, b: (a, q, s.to("meta"), b), ValueError, "one device"),
], ids=["a_rank", "w_rank", "scale_rank", "inner", "scale_len", "bias_len", "a_dtype", "w_dtype", "scale_dtype",
        "bias_dtype", "w_device", "scale_device"])
def test_bad_input_is_rejected_before_launch(change, error, match):
    with pytest.raises(error, match=match):
        matmul_int8w(*change(*_good()))


def test_flops_count_the_product_as_torch_does():
    generator = generator_for("int8w-flops")
    w_q, scale = _quantised_weight(generator)
    a = randn(5, K, generator=generator)
    with FlopCounterMode(display=False) as counter:
        a @ (w_q.float() * scale)
    assert matmul_int8w_flops(5, N, K) == counter.get_total_flops()


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
def test_bytes_are_activations_int8_weight_scales_and_result(dtype):
    generator = generator_for("int8w-bytes")
    w_q, scale = _quantised_weight(generator)
    a = randn(5, K, dtype=dtype, generator=generator)
    c_bias = randn(N, dtype=dtype, generator=generator)
    out = matmul_int8w_reference(a, w_q, scale, c_bias)
    expected = sum(t.numel() * t.element_size() for t in (a, w_q, scale, c_bias, out))
    assert matmul_int8w_bytes(5, N, K, a.element_size(), bias=True) == expected
