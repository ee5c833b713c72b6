"""Cross-entropy over class logits, mean over non-ignored targets, with the gradient fused in.

One program per row. A first loop over column blocks keeps a running max and a rescaled sum
of exponentials (online log-sum-exp), so vocabularies far wider than a block stay stable
and never sit in registers whole. When the logits need a gradient, a second loop writes
d loss / d logits = (softmax - one_hot(target)) / n_valid during the forward pass
(Liger-Kernel style): the backward pass only scales that saved tensor by the incoming
gradient. The gradient goes into a new buffer, not over the logits, so the caller's tensor
is never changed.

Targets are checked on the device, without a host sync: a target outside [0, classes) that is
not `ignore_index` is never read out of bounds and makes the loss NaN.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels.softmax import _ROW_CONFIGS, online_logsumexp_step

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Column block each program loops over; vocabularies are usually far wider.
MAX_BLOCK = 4096


@triton.autotune(configs=_ROW_CONFIGS, key=["V", "BLOCK_V", "COMPUTE_GRAD"])
@triton.jit
def _cross_entropy_kernel(logits_ptr, target_ptr, loss_ptr, grad_ptr, n_valid_ptr, V, ignore_index,
                          stride_lm, stride_lv, stride_t, stride_gm,
                          COMPUTE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits_row = logits_ptr + row * stride_lm
    target = tl.load(target_ptr + row * stride_t)
    ignored = target == ignore_index
    in_range = (target >= 0) & (target < V)
    cols = tl.arange(0, BLOCK_V)

    m = tl.full((), float("-inf"), tl.float32)
    s = tl.full((), 0.0, tl.float32)
    for start in range(0, V, BLOCK_V):
        x = tl.load(logits_row + (start + cols) * stride_lv, mask=start + cols < V, other=float("-inf"))
        m, s = online_logsumexp_step(m, s, x.to(tl.float32))
    # log-sum-exp = m + log(s); kept apart so that x - m is exact for logits of any magnitude.
    log_s = tl.log(s)

    target_logit = tl.load(logits_row + target * stride_lv, mask=in_range & ~ignored, other=0.0).to(tl.float32)
    loss = tl.where(in_range, (m - target_logit) + log_s, float("nan"))
    tl.store(loss_ptr + row, tl.where(ignored, 0.0, loss))

    if COMPUTE_GRAD:
        scale = tl.where(ignored, 0.0, 1.0 / tl.load(n_valid_ptr).to(tl.float32))
        for start in range(0, V, BLOCK_V):
            mask = start + cols < V
            x = tl.load(logits_row + (start + cols) * stride_lv, mask=mask, other=float("-inf")).to(tl.float32)
            grad = tl.exp((x - m) - log_s) * scale - tl.where(start + cols == target, scale, 0.0)
            tl.store(grad_ptr + row * stride_gm + start + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def _launch(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, compute_grad: bool):
    """Return the mean loss, and the logits gradient for a unit upstream gradient (or None)."""
    M, V = logits.shape
    n_valid = (target != ignore_index).sum()
    row_losses = torch.empty(M, device=logits.device, dtype=torch.float32)
    grad = torch.empty((M, V), device=logits.device, dtype=logits.dtype) if compute_grad else None
    # Without a gradient, grad_ptr is never touched: any tensor stands in for it.
    _cross_entropy_kernel[(M,)](logits, target, row_losses, grad if compute_grad else row_losses, n_valid, V,
                                ignore_index, logits.stride(0), logits.stride(1), target.stride(0),
                                grad.stride(0) if compute_grad else 0,
                                COMPUTE_GRAD=compute_grad, BLOCK_V=min(triton.next_power_of_2(V), MAX_BLOCK))
    # Like PyTorch, a batch whose targets are all ignored has a NaN (0 / 0) mean loss.
    loss = (row_losses.sum() / n_valid).to(logits.dtype)
    return loss, grad


class _CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index):
        loss, grad = _launch(logits, target, ignore_index, compute_grad=True)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None, None


def _check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    for name, tensor in (("logits", logits), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"cross_entropy: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if logits.dim() != 2 or logits.numel() == 0:
        raise ValueError(f"cross_entropy: logits must be a non-empty (rows, classes) tensor, got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: target must have shape ({logits.shape[0]},) to match logits"
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if logits.dtype not in _DTYPES:
        raise TypeError(f"cross_entropy: logits must be one of {_DTYPES}, got {logits.dtype}")
    if target.dtype != torch.int64:
        raise TypeError(f"cross_entropy: target must hold int64 class indices, got {target.dtype}")
    if target.device != logits.device:
        raise ValueError(f"cross_entropy: target is on {target.device} but logits is on {logits.device}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"cross_entropy: ignore_index must be an int, got {ignore_index!r}")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of (rows, classes) logits against int64 targets, skipping `ignore_index`.

    fp32/fp16/bf16 logits, computed in fp32; the loss has the logits' dtype, as in PyTorch.
    """
    _check_inputs(logits, target, ignore_index)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _CrossEntropyFunction.apply(logits, target, ignore_index)
    return _launch(logits, target, ignore_index, compute_grad=False)[0]


def cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The PyTorch path with the same signature and semantics."""
    return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index)


def cross_entropy_flops(M: int, V: int, backward: bool = False) -> int:
    """Per logit, forward: max, subtract, exp, sum (4). Backward: subtract the max, subtract log(sum),
    exp, divide by the target count, times the upstream gradient (5); this kernel does all but the
    last during the forward pass when the logits need a gradient."""
    return (5 if backward else 4) * M * V


def cross_entropy_bytes(M: int, V: int, element_size: int, backward: bool = False) -> int:
    """Compulsory traffic. Forward: read the logits and the int64 targets. Backward: write the
    logits gradient (this kernel computes it during the forward pass, which then also writes it)."""
    if backward:
        return M * V * element_size
    return M * V * element_size + 8 * M
