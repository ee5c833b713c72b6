"""Fused multi-tensor AdamW against torch.optim.AdamW and against its reference in float64."""

from __future__ import annotations

import pytest
import torch

from kernel_checks import DEVICE, assert_rel_close, generator_for, randn
from wattbench.kernels.adamw import BLOCK, adamw_step, adamw_step_bytes, adamw_step_reference

# Odd sizes, one spanning several blocks, one empty: every block-to-tensor mapping case.
SHAPES = [(37,), (5, 13), (3, 7, 11), (1,), (0,), (2 * BLOCK + 77,)]
HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)


def test_matches_torch_optim_adamw_over_several_steps():
    generator = generator_for("adamw-vs-torch-optim")
    params = [randn(*shape, generator=generator) for shape in SHAPES]
    torch_params = [p.clone().requires_grad_() for p in params]
    optimizer = torch.optim.AdamW(torch_params, lr=HYPER["lr"], betas=(HYPER["beta1"], HYPER["beta2"]),
                                  eps=HYPER["eps"], weight_decay=HYPER["weight_decay"])
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    for step in range(1, 6):
        grads = [randn(*shape, generator=generator) for shape in SHAPES]
        for torch_param, grad in zip(torch_params, grads):
            torch_param.grad = grad.clone()
        optimizer.step()
        adamw_step(params, grads, exp_avg, exp_avg_sq, step, **HYPER)

    for i, torch_param in enumerate(torch_params):
        state = optimizer.state[torch_param]
        assert_rel_close(params[i], torch_param.detach(), torch.float32, name=f"params[{i}]")
        assert_rel_close(exp_avg[i], state["exp_avg"], torch.float32, name=f"exp_avg[{i}]")
        assert_rel_close(exp_avg_sq[i], state["exp_avg_sq"], torch.float32, name=f"exp_avg_sq[{i}]")


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16, torch.bfloat16), ids=str)
def test_one_step_matches_float64_reference(dtype):
    """A mid-training step (non-zero moments, step 7) in each storage dtype."""
    generator = generator_for(f"adamw-float64-{dtype}")
    tensors = {
        "params": [randn(*s, dtype=dtype, generator=generator) for s in SHAPES],
        "grads": [randn(*s, dtype=dtype, generator=generator) for s in SHAPES],
        "exp_avg": [randn(*s, dtype=dtype, generator=generator, scale=0.1) for s in SHAPES],
        "exp_avg_sq": [(randn(*s, generator=generator, scale=0.1) ** 2).to(dtype) for s in SHAPES],
    }
    expected = {name: [t.to(torch.float64) for t in values] for name, values in tensors.items()}
    adamw_step(*tensors.values(), 7, **HYPER)
    adamw_step_reference(*expected.values(), 7, **HYPER)
    for name, values in tensors.items():
        for i, (actual, wanted) in enumerate(zip(values, expected[name])):
            if actual.numel():
                assert actual.dtype == dtype
                assert_rel_close(actual, wanted, dtype, name=f"{name}[{i}]")


def test_empty_parameter_list_is_a_no_op():
    assert adamw_step([], [], [], [], 1, **HYPER) is None


def _good():
    return [[torch.ones(3, device=DEVICE), torch.ones(2, 2, device=DEVICE)] for _ in range(4)]


def _replace(lists, which, index, value):
    lists[which][index] = value
    return lists


@pytest.mark.parametrize("change, error, match", [
    (lambda ls: [ls[0], ls[1][:1], ls[2], ls[3]], ValueError, "equal lengths"),
    (lambda ls: _replace(ls, 1, 1, torch.ones(4, device=DEVICE)), ValueError, r"grads\[1\] has shape"),
    (lambda ls: _replace(ls, 3, 0, torch.ones(3, dtype=torch.float16, device=DEVICE)), TypeError, "one dtype"),
    (lambda ls: [[t.double() for t in lst] for lst in ls], TypeError, "one dtype"),
    (lambda ls: _replace(ls, 0, 1, torch.ones(2, 4, device=DEVICE)[:, ::2]), ValueError, "contiguous"),
    (lambda ls: _replace(ls, 2, 0, [1.0, 1.0, 1.0]), TypeError, r"exp_avg\[0\] must be a torch.Tensor"),
    (lambda ls: [ls[0][0], ls[1], ls[2], ls[3]], TypeError, "params must be a list"),
    (lambda ls: _replace(ls, 1, 0, torch.ones(3, device="meta")), ValueError, "one device"),
], ids=["lengths", "shape", "mixed_dtype", "float64", "non_contiguous", "not_tensor", "not_list", "device"])
def test_bad_tensors_are_rejected_before_launch(change, error, match):
    with pytest.raises(error, match=match):
        adamw_step(*change(_good()), 1, **HYPER)


@pytest.mark.parametrize("override, error, match", [
    (dict(step=0), ValueError, "step counts from 1"),
    (dict(step=1.0), TypeError, "step must be an int"),
    (dict(lr=-1e-3), ValueError, "lr must be finite and >= 0"),
    (dict(eps=float("nan")), ValueError, "eps must be finite"),
    (dict(weight_decay="0.1"), TypeError, "weight_decay must be a real number"),
    (dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    (dict(beta2=1.5), ValueError, r"beta2 must be in \[0, 1\)"),
], ids=["step_zero", "step_float", "lr", "eps", "weight_decay", "beta1", "beta2"])
def test_bad_hyperparameters_are_rejected(override, error, match):
    arguments = dict(step=1, **HYPER) | override
    with pytest.raises(error, match=match):
        adamw_step(*_good(), **arguments)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_bytes_read_four_tensors_and_write_three(dtype):
    tensors = [[torch.ones(s, dtype=dtype) for s in SHAPES] for _ in range(4)]
    read = sum(t.numel() * t.element_size() for group in tensors for t in group)
    written = sum(t.numel() * t.element_size() for group in (tensors[0], tensors[2], tensors[3]) for t in group)
    numel = sum(t.numel() for t in tensors[0])
    assert adamw_step_bytes(numel, tensors[0][0].element_size()) == read + written
