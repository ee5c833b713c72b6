"""Fused AdamW: one kernel launch updates every parameter tensor of a step, in place.

A model has many parameter tensors of very different sizes. Launching one kernel per tensor
makes small tensors pay a launch each, so (like apex's multi-tensor apply) the update runs
as one launch over fixed-size blocks: a table maps each block to its tensor and its place
in it, and holds each tensor's four addresses (param, grad, exp_avg, exp_avg_sq). Each
element is read once and written once, with the arithmetic in fp32 whatever the storage dtype.
The tables depend only on the tensors' addresses and sizes, so they are cached: an
optimiser calling this every step over the same tensors builds them once.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Sequence

import torch
import triton
import triton.language as tl
from torch.optim.adamw import adamw as torch_functional_adamw

from wattbench.kernels.matmul import check_devices

_TRITON_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}

#: Elements one program updates.
BLOCK = 1024

#: Arithmetic per element: decay 1, exp_avg lerp 3, exp_avg_sq 4, denominator 3 (sqrt, divide,
#: add eps), update 3.
FLOPS_PER_ELEMENT = 14


@triton.jit
def _adamw_kernel(addresses_ptr, numels_ptr, block_tensor_ptr, block_index_ptr,
                  decay_factor, beta1_complement, beta2, beta2_complement, eps, step_size, bias_correction2_sqrt,
                  DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    block = tl.program_id(0)
    tensor = tl.load(block_tensor_ptr + block)
    offsets = tl.load(block_index_ptr + block) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < tl.load(numels_ptr + tensor)
    pointer = tl.pointer_type(DTYPE)
    param_ptr = tl.load(addresses_ptr + 4 * tensor).to(pointer)
    grad_ptr = tl.load(addresses_ptr + 4 * tensor + 1).to(pointer)
    exp_avg_ptr = tl.load(addresses_ptr + 4 * tensor + 2).to(pointer)
    exp_avg_sq_ptr = tl.load(addresses_ptr + 4 * tensor + 3).to(pointer)

    param = tl.load(param_ptr + offsets, mask=mask).to(tl.float32)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask).to(tl.float32)
    exp_avg_sq = tl.load(exp_avg_sq_ptr + offsets, mask=mask).to(tl.float32)

    # The same operations, in the same order, as torch.optim.AdamW's single-tensor path;
    # IEEE-rounded sqrt and division (Triton's defaults are approximate on GPU).
    param = param * decay_factor
    exp_avg = exp_avg + beta1_complement * (grad - exp_avg)
    exp_avg_sq = exp_avg_sq * beta2 + beta2_complement * (grad * grad)
    denom = tl.math.div_rn(tl.sqrt_rn(exp_avg_sq), bias_correction2_sqrt) + eps
    param = param - step_size * tl.math.div_rn(exp_avg, denom)

    tl.store(param_ptr + offsets, param.to(DTYPE), mask=mask)
    tl.store(exp_avg_ptr + offsets, exp_avg.to(DTYPE), mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, exp_avg_sq.to(DTYPE), mask=mask)


@functools.lru_cache(maxsize=16)
def _block_tables(device: torch.device, tensors: tuple[tuple[int, int, int, int, int], ...]):
    """(addresses (T, 4), numels (T,), block -> tensor, block -> block index within its tensor),
    all int64 on `device`, for `tensors` = ((param, grad, exp_avg, exp_avg_sq addresses, numel), ...)."""
    addresses = torch.tensor([entry[:4] for entry in tensors], dtype=torch.int64)
    numels = torch.tensor([entry[4] for entry in tensors], dtype=torch.int64)
    blocks = (numels + BLOCK - 1) // BLOCK
    first_block = torch.cumsum(blocks, 0) - blocks
    block_tensor = torch.repeat_interleave(torch.arange(len(tensors)), blocks)
    block_index = torch.arange(int(blocks.sum())) - first_block[block_tensor]
    return tuple(t.to(device) for t in (addresses, numels, block_tensor, block_index))


def _check_hyperparameters(step, lr, beta1, beta2, eps, weight_decay) -> None:
    if not isinstance(step, numbers.Integral) or isinstance(step, bool):
        raise TypeError(f"adamw_step: step must be an int, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"adamw_step: step counts from 1 (the first update), got {step}")
    for name, value in (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps), ("weight_decay", weight_decay)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"adamw_step: {name} must be a real number, got {type(value).__name__}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"adamw_step: {name} must be finite and >= 0, got {value}")
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if value >= 1:
            raise ValueError(f"adamw_step: {name} must be in [0, 1), got {value}")


def _check_tensors(params, grads, exp_avg, exp_avg_sq) -> None:
    lists = {"params": params, "grads": grads, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    for name, values in lists.items():
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"adamw_step: {name} must be a list of tensors, got {type(values).__name__}")
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"adamw_step: params, grads, exp_avg and exp_avg_sq must have equal lengths, got {lengths}")
    if not params:
        return
    named = {f"{name}[{i}]": t for name, values in lists.items() for i, t in enumerate(values)}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"adamw_step: {name} must be a torch.Tensor, got {type(t).__name__}")
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _TRITON_DTYPES:
        raise TypeError(f"adamw_step: all tensors must share one dtype of {tuple(_TRITON_DTYPES)}, got {dtypes}")
    for i, param in enumerate(params):
        for name in ("grads", "exp_avg", "exp_avg_sq"):
            if lists[name][i].shape != param.shape:
                raise ValueError(f"adamw_step: {name}[{i}] has shape {tuple(lists[name][i].shape)}, "
                                 f"params[{i}] has {tuple(param.shape)}")
    for name, t in named.items():
        if not t.is_contiguous():
            raise ValueError(f"adamw_step: {name} must be contiguous (the kernel walks each tensor as flat memory)")
    check_devices("adamw_step", **named)


def adamw_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], exp_avg: Sequence[torch.Tensor],
               exp_avg_sq: Sequence[torch.Tensor], step: int, lr: float, beta1: float, beta2: float, eps: float,
               weight_decay: float) -> None:
    """One AdamW update of every `params[i]` (and its moment buffers) in place, as torch.optim.AdamW
    (amsgrad=False, maximize=False) does. `step` is the update's number, counting from 1, for the
    bias corrections. All tensors share one dtype (fp32/fp16/bf16), one device, and are contiguous.
    """
    _check_hyperparameters(step, lr, beta1, beta2, eps, weight_decay)
    _check_tensors(params, grads, exp_avg, exp_avg_sq)
    if not params:
        return
    entries = tuple((p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), p.numel())
                    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq))
    addresses, numels, block_tensor, block_index = _block_tables(params[0].device, entries)
    if block_tensor.numel() == 0:
        return
    # Scalars are derived in float64 here, as torch does: 1 - 0.999 in fp32 is off by 1e-5.
    _adamw_kernel[(block_tensor.numel(),)](
        addresses, numels, block_tensor, block_index,
        1.0 - lr * weight_decay, 1.0 - beta1, beta2, 1.0 - beta2, eps,
        lr / (1.0 - beta1 ** step), math.sqrt(1.0 - beta2 ** step),
        DTYPE=_TRITON_DTYPES[params[0].dtype], BLOCK=BLOCK)


def adamw_step_reference(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                         exp_avg: Sequence[torch.Tensor], exp_avg_sq: Sequence[torch.Tensor], step: int, lr: float,
                         beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """The PyTorch path: torch.optim.adamw.adamw, the public functional form of torch.optim.AdamW,
    so the baseline is torch's own implementation (its multi-tensor `foreach` path on GPU) rather
    than a re-derivation. It increments its step tensors before using them, hence `step - 1`."""
    steps = [torch.tensor(float(step - 1)) for _ in params]
    with torch.no_grad():  # parameters are leaves that require grad; the update is not part of the graph
        torch_functional_adamw(list(params), list(grads), list(exp_avg), list(exp_avg_sq), [], steps,
                               amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay,
                               eps=eps, maximize=False)


def adamw_step_flops(numel: int) -> int:
    """Arithmetic for `numel` parameter elements (sqrt and division count as one each)."""
    return FLOPS_PER_ELEMENT * numel


def adamw_step_bytes(numel: int, element_size: int) -> int:
    """Compulsory traffic: param, grad and both moments read once; param and moments written once."""
    return 7 * numel * element_size
