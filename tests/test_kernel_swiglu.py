"""SwiGLU kernel: output and both input gradients against float64 PyTorch."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import DEVICE, assert_rel_close, float64_leaf, generator_for, randn

from wattbench.kernels.swiglu import swiglu, swiglu_bytes, swiglu_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Neither dimension a multiple of a tile: a 3-D input, many short rows, a few long rows.
SHAPES = [(3, 5, 77), (300, 40), (2, 600)]


def _check_against_reference(gate, up, dy, dtype) -> None:
    gate.requires_grad_()
    up.requires_grad_()
    out = swiglu(gate, up)
    out.backward(dy)
    gate64, up64 = float64_leaf(gate), float64_leaf(up)
    out64 = swiglu_reference(gate64, up64)
    out64.backward(dy.to(torch.float64))
    assert out.dtype == dtype
    assert_rel_close(out, out64, dtype, "output")
    assert_rel_close(gate.grad, gate64.grad, dtype, "gate gradient")
    assert_rel_close(up.grad, up64.grad, dtype, "up gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_swiglu_matches_reference(request, shape, dtype):
    gen = generator_for(request.node.name)
    gate, up, dy = (randn(*shape, dtype=dtype, generator=gen, scale=3.0) for _ in range(3))
    _check_against_reference(gate, up, dy, dtype)


def test_swiglu_non_contiguous(request):
    """Every-other-column gate, a transposed up, a transposed output gradient."""
    gen = generator_for(request.node.name)
    gate = randn(30, 2 * 70, generator=gen)[:, ::2]
    up = randn(70, 30, generator=gen).t()
    dy = randn(70, 30, generator=gen).t()
    assert not (gate.is_contiguous() or up.is_contiguous() or dy.is_contiguous())
    _check_against_reference(gate, up, dy, torch.float32)


def test_bytes_count_every_tensor_once(request):
    gen = generator_for(request.node.name)
    gate, up = randn(6, 50, dtype=torch.bfloat16, generator=gen), randn(6, 50, dtype=torch.bfloat16, generator=gen)
    out = swiglu(gate, up)
    assert swiglu_bytes(gate.numel(), 2) == gate.nbytes + up.nbytes + out.nbytes
    assert swiglu_bytes(gate.numel(), 2, backward=True) == 5 * out.nbytes


_GATE = torch.randn(4, 8, device=DEVICE)


@pytest.mark.parametrize("error, inputs", [
    pytest.param(TypeError, ([[1.0]], _GATE), id="gate not a tensor"),
    pytest.param(TypeError, (_GATE, 2.0), id="up not a tensor"),
    pytest.param(ValueError, (_GATE, torch.randn(4, 9, device=DEVICE)), id="shape mismatch"),
    pytest.param(ValueError, (_GATE, torch.randn(32, device=DEVICE)), id="rank mismatch"),
    pytest.param(ValueError, (torch.tensor(1.0, device=DEVICE), torch.tensor(2.0, device=DEVICE)), id="0-dim"),
    pytest.param(ValueError, (torch.randn(0, 8, device=DEVICE), torch.randn(0, 8, device=DEVICE)), id="empty"),
    pytest.param(TypeError, (_GATE, _GATE.half()), id="dtype mismatch"),
    pytest.param(TypeError, (_GATE.double(), _GATE.double()), id="float64"),
    pytest.param(TypeError, (_GATE.int(), _GATE.int()), id="integer"),
    pytest.param(ValueError, (_GATE, torch.empty(4, 8, device="meta")), id="device mismatch"),
])
def test_bad_input_raises(error, inputs):
    with pytest.raises(error):
        swiglu(*inputs)
