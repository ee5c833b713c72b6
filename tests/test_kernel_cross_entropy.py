"""Cross-entropy kernel: mean loss and logits gradient against float64 PyTorch."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import DEVICE, GRAD_TOL, assert_rel_close, float64_leaf, generator_for, randn

from wattbench.kernels.cross_entropy import MAX_BLOCK, cross_entropy, cross_entropy_bytes, cross_entropy_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (rows, classes): a vocabulary within one block, and one spanning several with a partial last block.
SHAPES = [(13, 1000), (5, 2 * MAX_BLOCK + 123)]


def _targets(rows: int, classes: int, gen: torch.Generator, ignore_index: int = -100) -> torch.Tensor:
    """Random classes with every third row ignored."""
    target = torch.randint(0, classes, (rows,), generator=gen)
    target[::3] = ignore_index
    return target.to(DEVICE)


def _check_against_reference(logits, target, dtype, gen, **kwargs) -> None:
    logits.requires_grad_()
    loss = cross_entropy(logits, target, **kwargs)
    grad_loss = randn(1, dtype=dtype, generator=gen).reshape(())
    loss.backward(grad_loss)
    logits64 = float64_leaf(logits)
    loss64 = cross_entropy_reference(logits64, target, **kwargs)
    loss64.backward(grad_loss.to(torch.float64))
    assert loss.shape == () and loss.dtype == dtype
    assert_rel_close(loss, loss64, dtype, "loss")
    assert_rel_close(logits.grad, logits64.grad, dtype, "logits gradient", GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows, classes", SHAPES)
def test_cross_entropy_matches_reference(request, rows, classes, dtype):
    gen = generator_for(request.node.name)
    logits = randn(rows, classes, dtype=dtype, generator=gen, scale=4.0)
    _check_against_reference(logits, _targets(rows, classes, gen), dtype, gen)


@pytest.mark.parametrize("classes", [1000, 2 * MAX_BLOCK + 123], ids=["one block", "several blocks"])
def test_cross_entropy_is_stable_for_large_logits(request, classes):
    """Rows around +3e4 overflow exp() and rows around -3e4 underflow it, unless the running
    maximum is subtracted first."""
    gen = generator_for(request.node.name)
    logits = randn(3, classes, generator=gen, scale=3.0) + torch.tensor([[3e4], [-3e4], [0.0]], device=DEVICE)
    target = torch.randint(0, classes, (3,), generator=gen).to(DEVICE)
    _check_against_reference(logits, target, torch.float32, gen)


def test_ignore_index_inside_the_class_range(request):
    gen = generator_for(request.node.name)
    logits = randn(9, 40, generator=gen)
    target = _targets(9, 40, gen, ignore_index=3)
    _check_against_reference(logits, target, torch.float32, gen, ignore_index=3)


def test_all_targets_ignored_gives_nan_like_pytorch(request):
    logits = randn(4, 40, generator=generator_for(request.node.name))
    target = torch.full((4,), -100, device=DEVICE)
    assert torch.isnan(cross_entropy_reference(logits, target))
    assert torch.isnan(cross_entropy(logits, target))


def test_out_of_range_target_gives_nan(request):
    """Targets are checked on the device (no host sync): a bad one poisons the loss, never reads out of bounds."""
    gen = generator_for(request.node.name)
    logits = randn(4, 40, generator=gen)
    for bad in (40, -1):
        target = torch.tensor([1, bad, 2, 3], device=DEVICE)
        assert torch.isnan(cross_entropy(logits, target))


def test_cross_entropy_non_contiguous(request):
    """Column-strided logits (a transpose) and every-other-element targets."""
    gen = generator_for(request.node.name)
    logits = randn(300, 7, generator=gen).t()
    target = _targets(14, 300, gen)[::2]
    assert logits.stride(-1) != 1 and target.stride(0) != 1
    _check_against_reference(logits, target, torch.float32, gen)


def test_inference_skips_the_gradient(request):
    gen = generator_for(request.node.name)
    logits = randn(6, 100, generator=gen).requires_grad_()
    target = _targets(6, 100, gen)
    with torch.no_grad():
        loss = cross_entropy(logits, target)
    assert loss.grad_fn is None
    assert_rel_close(loss, cross_entropy_reference(logits.detach().to(torch.float64), target), torch.float32)


def test_bytes_count_every_tensor_once(request):
    gen = generator_for(request.node.name)
    logits = randn(6, 100, dtype=torch.bfloat16, generator=gen)
    target = _targets(6, 100, gen)
    assert cross_entropy_bytes(6, 100, 2) == logits.nbytes + target.nbytes
    assert cross_entropy_bytes(6, 100, 2, backward=True) == logits.nbytes


_LOGITS = torch.randn(4, 10, device=DEVICE)
_TARGET = torch.tensor([1, 2, 3, 4], device=DEVICE)


@pytest.mark.parametrize("error, call", [
    pytest.param(TypeError, lambda: cross_entropy([[1.0]], _TARGET), id="logits not a tensor"),
    pytest.param(TypeError, lambda: cross_entropy(_LOGITS, [1, 2, 3, 4]), id="target not a tensor"),
    pytest.param(ValueError, lambda: cross_entropy(_LOGITS[0], _TARGET[0]), id="1-D logits"),
    pytest.param(ValueError, lambda: cross_entropy(_LOGITS.view(2, 2, 10), _TARGET), id="3-D logits"),
    pytest.param(ValueError, lambda: cross_entropy(torch.randn(0, 10, device=DEVICE), _TARGET[:0]), id="empty"),
    pytest.param(ValueError, lambda: cross_entropy(_LOGITS, _TARGET[:3]), id="target length"),
    pytest.param(ValueError, lambda: cross_entropy(_LOGITS, _TARGET.view(4, 1)), id="target rank"),
    pytest.param(TypeError, lambda: cross_entropy(_LOGITS.double(), _TARGET), id="float64 logits"),
    pytest.param(TypeError, lambda: cross_entropy(_LOGITS.int(), _TARGET), id="integer logits"),
    pytest.param(TypeError, lambda: cross_entropy(_LOGITS, _TARGET.int()), id="int32 target"),
    pytest.param(TypeError, lambda: cross_entropy(_LOGITS, _TARGET.float()), id="float target"),
    pytest.param(ValueError, lambda: cross_entropy(_LOGITS, torch.empty(4, dtype=torch.int64, device="meta")),
                 id="device mismatch"),
    pytest.param(TypeError, lambda: cross_entropy(_LOGITS, _TARGET, ignore_index=1.5), id="float ignore_index"),
])
def test_bad_input_raises(error, call):
    with pytest.raises(error):
        call()
