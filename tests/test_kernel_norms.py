"""RMSNorm and LayerNorm kernels: outputs and gradients (x, weight, bias) against float64 PyTorch."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import DEVICE, assert_rel_close, float64_leaf, generator_for, randn

from wattbench.kernels.norms import (
    MAX_BLOCK,
    MAX_HIDDEN,
    layer_norm,
    layer_norm_bytes,
    layer_norm_reference,
    rms_norm,
    rms_norm_bytes,
    rms_norm_reference,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (leading shape, hidden): hidden sizes that are not powers of two; row counts that do not
# divide evenly between the backward programs; a single row.
SHAPES = [((2, 9), 100), ((5,), 1000), ((1,), 7)]


def _check_against_reference(op, reference, dtype, x, params, dy, tol=None, **kwargs):
    """Run `op` and its float64 reference forward and backward; compare output and every gradient."""
    x.requires_grad_()
    for p in params:
        p.requires_grad_()
    y = op(x, *params, **kwargs)
    y.backward(dy)
    x64, params64 = float64_leaf(x), [float64_leaf(p) for p in params]
    y64 = reference(x64, *params64, **kwargs)
    y64.backward(dy.to(torch.float64))
    assert y.dtype == dtype
    assert_rel_close(y, y64, dtype, "output", tol)
    assert_rel_close(x.grad, x64.grad, dtype, "x gradient", tol)
    for name, p, p64 in zip(("weight", "bias"), params, params64):
        assert_rel_close(p.grad, p64.grad, dtype, f"{name} gradient", tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("leading, hidden", SHAPES)
def test_rms_norm_matches_reference(request, leading, hidden, dtype):
    gen = generator_for(request.node.name)
    x = randn(*leading, hidden, dtype=dtype, generator=gen)
    weight = randn(hidden, dtype=dtype, generator=gen)
    dy = randn(*leading, hidden, dtype=dtype, generator=gen)
    _check_against_reference(rms_norm, rms_norm_reference, dtype, x, [weight], dy, eps=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("leading, hidden", SHAPES)
def test_layer_norm_matches_reference(request, leading, hidden, dtype):
    gen = generator_for(request.node.name)
    x = randn(*leading, hidden, dtype=dtype, generator=gen)
    weight = randn(hidden, dtype=dtype, generator=gen)
    bias = randn(hidden, dtype=dtype, generator=gen)
    dy = randn(*leading, hidden, dtype=dtype, generator=gen)
    _check_against_reference(layer_norm, layer_norm_reference, dtype, x, [weight, bias], dy, eps=1e-4)


# Rows wider than one block: three blocks, the last one partial.
WIDE = 2 * MAX_BLOCK + 101


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op, reference, n_params", [(rms_norm, rms_norm_reference, 1),
                                                     (layer_norm, layer_norm_reference, 2)], ids=["rms", "layer"])
def test_rows_wider_than_a_block_match_reference(request, op, reference, n_params, dtype):
    """The block-by-block forward (two reads of the row) and backward (row sums first, then column
    blocks) give what the one-block path gives: the reference."""
    gen = generator_for(request.node.name)
    x = randn(3, WIDE, dtype=dtype, generator=gen)
    params = [randn(WIDE, dtype=dtype, generator=gen) for _ in range(n_params)]
    dy = randn(3, WIDE, dtype=dtype, generator=gen)
    _check_against_reference(op, reference, dtype, x, params, dy)


def test_layer_norm_is_stable_for_a_large_mean(request):
    """The variance is taken around the mean, not as E[x^2] - E[x]^2, which cancels to noise here.

    The fp32 mean of values near 3000 is itself rounded (half an ulp is 1.2e-4 of the unit
    spread), so about 1e-4 is the floor for any fp32 kernel, PyTorch's included; E[x^2] - E[x]^2
    would be off by about 100%.
    """
    gen = generator_for(request.node.name)
    for hidden in (300, WIDE):  # one block; blocks combined by their means and squared deviations
        x = randn(2, hidden, generator=gen) + 3000.0
        weight, bias = randn(hidden, generator=gen), randn(hidden, generator=gen)
        dy = randn(2, hidden, generator=gen)
        _check_against_reference(layer_norm, layer_norm_reference, torch.float32, x, [weight, bias], dy, tol=1e-3)


@pytest.mark.parametrize("op, reference, n_params", [(rms_norm, rms_norm_reference, 1),
                                                     (layer_norm, layer_norm_reference, 2)], ids=["rms", "layer"])
def test_non_contiguous_inputs(request, op, reference, n_params):
    """Every-other-column x and parameters, leading dimensions transposed, a transposed gradient."""
    gen = generator_for(request.node.name)
    hidden = 50
    x = randn(4, 3, 2 * hidden, generator=gen)[..., ::2].transpose(0, 1)
    params = [randn(2 * hidden, generator=gen)[::2] for _ in range(n_params)]
    dy = randn(4, 3, hidden, generator=gen).transpose(0, 1)
    assert not x.is_contiguous() and not params[0].is_contiguous() and not dy.is_contiguous()
    _check_against_reference(op, reference, torch.float32, x, params, dy)


def test_bytes_count_every_tensor_once(request):
    gen = generator_for(request.node.name)
    x = randn(6, 40, dtype=torch.float16, generator=gen)
    weight, bias = randn(40, dtype=torch.float16, generator=gen), randn(40, dtype=torch.float16, generator=gen)
    y = layer_norm(x, weight, bias)
    row_stat_bytes = 6 * 4  # one fp32 value per row (rstd, or the mean), read by the backward pass
    assert layer_norm_bytes(6, 40, 2) == x.nbytes + weight.nbytes + bias.nbytes + y.nbytes
    assert layer_norm_bytes(6, 40, 2, backward=True) == 3 * y.nbytes + 3 * weight.nbytes + 2 * row_stat_bytes
    assert rms_norm_bytes(6, 40, 2) == x.nbytes + weight.nbytes + y.nbytes
    assert rms_norm_bytes(6, 40, 2, backward=True) == 3 * y.nbytes + 2 * weight.nbytes + row_stat_bytes


_X = torch.randn(4, 8, device=DEVICE)
_W = torch.randn(8, device=DEVICE)

BAD_INPUTS = [
    pytest.param(TypeError, lambda norm: norm([[1.0]], _W), id="x not a tensor"),
    pytest.param(TypeError, lambda norm: norm(_X, None), id="weight not a tensor"),
    pytest.param(ValueError, lambda norm: norm(torch.tensor(1.0, device=DEVICE), _W), id="0-dim x"),
    pytest.param(ValueError, lambda norm: norm(torch.randn(0, 8, device=DEVICE), _W), id="empty x"),
    pytest.param(ValueError, lambda norm: norm(_X, torch.randn(7, device=DEVICE)), id="weight length"),
    pytest.param(ValueError, lambda norm: norm(_X, torch.randn(1, 8, device=DEVICE)), id="weight rank"),
    pytest.param(TypeError, lambda norm: norm(_X.double(), _W.double()), id="float64"),
    pytest.param(TypeError, lambda norm: norm(_X.int(), _W.int()), id="integer"),
    pytest.param(TypeError, lambda norm: norm(_X, _W.half()), id="dtype mismatch"),
    pytest.param(ValueError, lambda norm: norm(_X, torch.empty(8, device="meta")), id="device mismatch"),
    pytest.param(ValueError, lambda norm: norm(torch.empty(1, MAX_HIDDEN + 1, device=DEVICE),
                                               torch.empty(MAX_HIDDEN + 1, device=DEVICE)), id="hidden too wide"),
    pytest.param(ValueError, lambda norm: norm(_X, _W, eps=0.0), id="eps not positive"),
]


def _layer_norm_with_weight_as_bias(x, weight, eps=1e-5):
    """layer_norm with the weight passed as bias too, so each bad weight is also a bad bias."""
    return layer_norm(x, weight, weight, eps=eps)


@pytest.mark.parametrize("error, call", BAD_INPUTS)
@pytest.mark.parametrize("norm", [rms_norm, _layer_norm_with_weight_as_bias], ids=["rms", "layer"])
def test_bad_input_raises(norm, error, call):
    with pytest.raises(error):
        call(norm)


@pytest.mark.parametrize("bias", [torch.randn(7, device=DEVICE), torch.randn(8, device=DEVICE).half(),
                                  torch.empty(8, device="meta")], ids=["length", "dtype", "device"])
def test_layer_norm_bad_bias_raises(bias):
    with pytest.raises((ValueError, TypeError), match="bias"):
        layer_norm(_X, _W, bias)
