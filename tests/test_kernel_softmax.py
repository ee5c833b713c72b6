"""Softmax kernel: outputs and input gradients against float64 PyTorch, short and long rows."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import DEVICE, GRAD_TOL, assert_rel_close, float64_leaf, generator_for, randn

from wattbench.kernels.softmax import MAX_BLOCK, softmax, softmax_bytes, softmax_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Rows within one block (a non-power-of-two width, 3-D input) and rows spanning several
# blocks, whose last block is partial.
SHAPES = [(4, 7, 33), (3, 2 * MAX_BLOCK + 101)]


def _check_against_reference(x: torch.Tensor, dy: torch.Tensor, dtype: torch.dtype) -> None:
    x.requires_grad_()
    y = softmax(x)
    y.backward(dy)
    x64 = float64_leaf(x)
    y64 = softmax_reference(x64)
    y64.backward(dy.to(torch.float64))
    assert y.dtype == dtype
    assert_rel_close(y, y64, dtype, "output")
    assert_rel_close(x.grad, x64.grad, dtype, "x gradient", GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_matches_reference(request, shape, dtype):
    gen = generator_for(request.node.name)
    _check_against_reference(randn(*shape, dtype=dtype, generator=gen), randn(*shape, dtype=dtype, generator=gen),
                             dtype)


@pytest.mark.parametrize("width", [50, 2 * MAX_BLOCK + 101], ids=["one block", "several blocks"])
def test_softmax_is_stable_for_large_logits(request, width):
    """Rows around +3e4 overflow exp() and rows around -3e4 underflow it, unless the row maximum
    is subtracted first."""
    gen = generator_for(request.node.name)
    x = randn(3, width, generator=gen, scale=3.0) + torch.tensor([[3e4], [-3e4], [0.0]], device=DEVICE)
    _check_against_reference(x, randn(3, width, generator=gen), torch.float32)


def test_softmax_handles_leading_minus_infinity(request):
    """A row whose first blocks are all -inf (masked scores) must not turn the running sum into NaN."""
    gen = generator_for(request.node.name)
    x = randn(2, 2 * MAX_BLOCK + 101, generator=gen)
    x[:, : MAX_BLOCK + 7] = float("-inf")
    x[1, -3:] = float("-inf")
    with torch.no_grad():
        y = softmax(x)
    assert_rel_close(y, softmax_reference(x.to(torch.float64)), torch.float32)


def test_softmax_non_contiguous(request):
    """Column-strided input (a transpose) and a transposed output gradient."""
    gen = generator_for(request.node.name)
    x = randn(300, 6, generator=gen).t()
    dy = randn(300, 6, generator=gen).t()
    assert x.stride(-1) != 1 and dy.stride(-1) != 1
    _check_against_reference(x, dy, torch.float32)


def test_bytes_count_every_tensor_once(request):
    x = randn(5, 40, dtype=torch.float16, generator=generator_for(request.node.name))
    y = softmax(x)
    assert softmax_bytes(5, 40, 2) == x.nbytes + y.nbytes
    assert softmax_bytes(5, 40, 2, backward=True) == 3 * y.nbytes


@pytest.mark.parametrize("error, make_input", [
    pytest.param(TypeError, lambda: [[1.0, 2.0]], id="not a tensor"),
    pytest.param(ValueError, lambda: torch.tensor(1.0, device=DEVICE), id="0-dim"),
    pytest.param(ValueError, lambda: torch.randn(3, 0, device=DEVICE), id="empty"),
    pytest.param(TypeError, lambda: torch.randn(3, 4, device=DEVICE, dtype=torch.float64), id="float64"),
    pytest.param(TypeError, lambda: torch.ones(3, 4, device=DEVICE, dtype=torch.int32), id="integer"),
])
def test_bad_input_raises(error, make_input):
    with pytest.raises(error):
        softmax(make_input())
