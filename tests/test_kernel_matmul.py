"""Triton matmul (bias + activation epilogue, autograd) against its PyTorch reference in float64."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kernel_checks import DEVICE, assert_rel_close, generator_for, randn, skip_if_bf16_dot_interpreted
from wattbench.kernels.matmul import ACTIVATIONS, matmul, matmul_bytes, matmul_flops, matmul_reference

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Not multiples of any tile size; several tiles in every dimension under the interpreter's 32-wide tiles.
M, N, K = 37, 45, 70


def _matrix(rows, cols, layout, dtype, generator, scale=1.0):
    """A (rows, cols) operand stored contiguously, as a transposed view, or as a column slice."""
    if layout == "contiguous":
        return randn(rows, cols, dtype=dtype, generator=generator, scale=scale)
    if layout == "transposed":
        return randn(cols, rows, dtype=dtype, generator=generator, scale=scale).t()
    return randn(rows, 2 * cols, dtype=dtype, generator=generator, scale=scale)[:, ::2]


def _inputs(name, dtype, m=M, layout_a="contiguous", layout_b="transposed", bias=True):
    generator = generator_for(name)
    a = _matrix(m, K, layout_a, dtype, generator)
    b = _matrix(K, N, layout_b, dtype, generator, scale=K ** -0.5)
    c_bias = randn(N, dtype=dtype, generator=generator, scale=0.5) if bias else None
    return a, b, c_bias, generator


def _float64(t):
    return None if t is None else t.detach().to(torch.float64).requires_grad_(t.requires_grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("m", [1, M], ids=["decode", "prefill"])
def test_forward_matches_float64_reference(dtype, activation, bias, m):
    skip_if_bf16_dot_interpreted(dtype)
    a, b, c_bias, _ = _inputs(f"matmul-forward-{dtype}-{activation}-{bias}-{m}", dtype, m=m, bias=bias)
    out = matmul(a, b, c_bias, activation=activation)
    assert out.dtype == dtype and out.device == a.device
    expected = matmul_reference(_float64(a), _float64(b), _float64(c_bias), activation=activation)
    assert_rel_close(out, expected, dtype)


@pytest.mark.parametrize("layout_a", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("layout_b", ["contiguous", "transposed", "sliced"])
def test_forward_reads_any_strides(layout_a, layout_b):
    a, b, c_bias, _ = _inputs(f"matmul-strides-{layout_a}-{layout_b}", torch.float32,
                              layout_a=layout_a, layout_b=layout_b)
    assert_rel_close(matmul(a, b, c_bias), matmul_reference(_float64(a), _float64(b), _float64(c_bias)), torch.float32)


def test_a_strided_bias_is_read_in_place():
    a, b, _, generator = _inputs("matmul-strided-bias", torch.float32, bias=False)
    c_bias = randn(2 * N, generator=generator, scale=0.5)[::2]
    assert_rel_close(matmul(a, b, c_bias), matmul_reference(_float64(a), _float64(b), _float64(c_bias)), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_gradients_match_float64_reference(dtype, activation, bias):
    skip_if_bf16_dot_interpreted(dtype)
    a, b, c_bias, generator = _inputs(f"matmul-backward-{dtype}-{activation}-{bias}", dtype, bias=bias)
    leaves = [t.requires_grad_() for t in (a, b, c_bias) if t is not None]
    grad_out = randn(M, N, dtype=dtype, generator=generator)

    matmul(a, b, c_bias, activation=activation).backward(grad_out)
    leaves64 = [_float64(t) for t in leaves]
    matmul_reference(*leaves64[:2], leaves64[2] if bias else None, activation=activation).backward(
        grad_out.to(torch.float64))

    for name, leaf, leaf64 in zip(("a", "b", "bias"), leaves, leaves64):
        assert leaf.grad.dtype == dtype
        assert_rel_close(leaf.grad, leaf64.grad, dtype, name=f"grad of {name}")


def test_gradient_of_sum_reads_a_broadcast_upstream_gradient():
    """`.sum().backward()` hands the kernel a stride-0 gradient: every element must still count."""
    a, b, c_bias, _ = _inputs("matmul-sum-backward", torch.float32)
    leaves = [t.requires_grad_() for t in (a, b, c_bias)]
    matmul(a, b, c_bias, activation="gelu").sum().backward()
    leaves64 = [_float64(t) for t in leaves]
    matmul_reference(*leaves64, activation="gelu").sum().backward()
    for name, leaf, leaf64 in zip(("a", "b", "bias"), leaves, leaves64):
        assert_rel_close(leaf.grad, leaf64.grad, torch.float32, name=f"grad of {name}")


def test_inference_under_no_grad_records_no_graph():
    a, b, c_bias, _ = _inputs("matmul-no-grad", torch.float32)
    b.requires_grad_()
    with torch.no_grad():
        out = matmul(a, b, c_bias, activation="silu")
    assert out.grad_fn is None
    assert_rel_close(out, matmul_reference(_float64(a), _float64(b), _float64(c_bias), "silu"), torch.float32)


def _good():
    a = torch.ones(4, 3, device=DEVICE)
    return a, torch.ones(3, 5, device=DEVICE), torch.ones(5, device=DEVICE)


@pytest.mark.parametrize("change, error, match", [
    (lambda a, b, bias: (a[0], b, bias), ValueError, "a must be 2-D"),
    (lambda a, b, bias: (a, b[None], bias), ValueError, "b must be 2-D"),
    (lambda a, b, bias: (a, b, bias[None]), ValueError, "bias must be 1-D"),
    (lambda a, b, bias: (a, b[:2], bias), ValueError, "inner dimensions"),
    (lambda a, b, bias: (a, b, bias[:4]), ValueError, "bias must have shape"),
    (lambda a, b, bias: (a.double(), b.double(), bias.double()), TypeError, "dtype"),
    (lambda a, b, bias: (a.int(), b.int(), None), TypeError, "dtype"),
    (lambda a, b, bias: (a, b.half(), None), TypeError, "dtype"),
    (lambda a, b, bias: (a, b, bias.half()), TypeError, "dtype"),
    (lambda a, b, bias: (a.tolist(), b, bias), TypeError, "a must be a torch.Tensor"),
    (lambda a, b, bias: (a, b.to("meta"), bias), ValueError, "one device"),
    (lambda a, b, bias: (a, b, bias.to("meta")), ValueError, "one device"),
], ids=["a_rank", "b_rank", "bias_rank", "inner", "bias_len", "float64", "int", "mixed", "bias_dtype", "list",
        "b_device", "bias_device"])
def test_bad_input_is_rejected_before_launch(change, error, match):
    with pytest.raises(error, match=match):
        matmul(*change(*_good()))


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation must be one of"):
        matmul(*_good(), activation="tanh")


def test_flops_count_the_product_as_torch_does():
    a, b, _, _ = _inputs("matmul-flops", torch.float32, bias=False)
    with FlopCounterMode(display=False) as counter:
        matmul_reference(a, b)
    assert matmul_flops(M, N, K) == counter.get_total_flops()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bytes_are_operands_plus_result(dtype):
    a, b, c_bias, _ = _inputs("matmul-bytes", dtype)
    out = matmul_reference(a, b, c_bias)
    expected = sum(t.numel() * t.element_size() for t in (a, b, c_bias, out))
    assert matmul_bytes(M, N, K, a.element_size(), bias=True) == expected
