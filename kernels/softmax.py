"""Row softmax over the last dimension, numerically stable for rows of any length.

A row that fits in one block is loaded once and normalised in registers. A longer row is
read twice: a first loop keeps a running maximum and a running sum of exponentials rescaled
to that maximum (online log-sum-exp), a second loop writes exp(x - max) / sum. The backward
pass, dx = y * (dy - sum(dy * y)), runs through Triton too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Widest block one program holds in registers; longer rows loop over blocks of this size.
MAX_BLOCK = 8192

# Each program owns a whole row, so the block width follows the row; only warps are tuned.
_ROW_CONFIGS = ([triton.Config({}, num_warps=1)] if INTERPRETED
                else [triton.Config({}, num_warps=w) for w in (4, 8, 16, 32)])


@triton.jit
def online_logsumexp_step(m, s, x):
    """Fold block `x` into a running max `m` and sum `s` of exp(values - m).

    A max of -inf (every value so far -inf) is replaced by 0 when rescaling, so rows that
    start with -inf blocks, such as masked attention scores, do not produce NaN.
    """
    m_new = tl.maximum(m, tl.max(x, axis=0))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), axis=0)
    return m_new, s


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N"])
@triton.jit
def _softmax_forward_kernel(x_ptr, y_ptr, N, stride_xm, stride_xn, stride_ym,
                            BLOCK_N: tl.constexpr, SINGLE_BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    y_row = y_ptr + row * stride_ym
    cols = tl.arange(0, BLOCK_N)
    if SINGLE_BLOCK:
        mask = cols < N
        x = tl.load(x_row + cols * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
        e = tl.exp(x - tl.max(x, axis=0))
        tl.store(y_row + cols, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        m = tl.full((), float("-inf"), tl.float32)
        s = tl.full((), 0.0, tl.float32)
        for start in range(0, N, BLOCK_N):
            mask = start + cols < N
            x = tl.load(x_row + (start + cols) * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
            m, s = online_logsumexp_step(m, s, x)
        for start in range(0, N, BLOCK_N):
            mask = start + cols < N
            x = tl.load(x_row + (start + cols) * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
            y = tl.exp(x - m) / s
            tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N"])
@triton.jit
def _softmax_backward_kernel(y_ptr, dy_ptr, dx_ptr, N, stride_ym, stride_dym, stride_dyn, stride_dxm,
                             BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    y_row = y_ptr + row * stride_ym
    dy_row = dy_ptr + row * stride_dym
    cols = tl.arange(0, BLOCK_N)
    dot = tl.full((), 0.0, tl.float32)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        y = tl.load(y_row + start + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + (start + cols) * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        dot += tl.sum(y * dy, axis=0)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        y = tl.load(y_row + start + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + (start + cols) * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + row * stride_dxm + start + cols, (y * (dy - dot)).to(dx_ptr.dtype.element_ty), mask=mask)


def _block_for(n: int) -> int:
    return min(triton.next_power_of_2(n), MAX_BLOCK)


def _forward(x: torch.Tensor) -> torch.Tensor:
    N = x.shape[-1]
    rows = x.reshape(-1, N)  # a view whenever the leading dimensions allow it
    y = torch.empty(rows.shape, device=x.device, dtype=x.dtype)
    block = _block_for(N)
    _softmax_forward_kernel[(rows.shape[0],)](rows, y, N, rows.stride(0), rows.stride(1), y.stride(0),
                                              BLOCK_N=block, SINGLE_BLOCK=N <= block)
    return y.view(x.shape)


class _SoftmaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = _forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        N = y.shape[-1]
        y_rows = y.view(-1, N)
        dy_rows = grad_y.reshape(-1, N)
        dx = torch.empty(y_rows.shape, device=y.device, dtype=y.dtype)
        _softmax_backward_kernel[(y_rows.shape[0],)](y_rows, dy_rows, dx, N, y_rows.stride(0), dy_rows.stride(0),
                                                     dy_rows.stride(1), dx.stride(0), BLOCK_N=_block_for(N))
        return dx.view(y.shape)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of `x` (any leading shape), fp32/fp16/bf16, computed in fp32."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"softmax: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"softmax: x must have at least one dimension and no zero-sized ones, got {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"softmax: x must be one of {_DTYPES}, got {x.dtype}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _SoftmaxFunction.apply(x)
    return _forward(x)


def softmax_reference(x: torch.Tensor) -> torch.Tensor:
    """The PyTorch path with the same signature and semantics."""
    return torch.softmax(x, dim=-1)


def softmax_flops(M: int, N: int, backward: bool = False) -> int:
    """Elementwise operations, an exp counting as one.

    Forward per element: max, subtract, exp, sum, divide. Backward: multiply, sum, subtract, multiply.
    """
    return (4 if backward else 5) * M * N


def softmax_bytes(M: int, N: int, element_size: int, backward: bool = False) -> int:
    """Compulsory traffic: forward reads x and writes y; backward reads y and dy and writes dx."""
    return (3 if backward else 2) * M * N * element_size
