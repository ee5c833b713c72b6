"""RMSNorm and LayerNorm over the last dimension, with Triton forward and backward passes.

Forward: one program per row holds the whole row in registers (hidden sizes up to
MAX_HIDDEN), computes the statistics in fp32 and saves them (rstd, and the mean for
LayerNorm) for the backward pass.

Backward: the weight (and bias) gradient is a sum over every row. Rather than have every row
add into one vector with atomics (contended, and non-deterministic in floating point), a
fixed number of programs each walk a contiguous chunk of rows, write dx per row, and keep
their own partial dw (db) in fp32 registers, stored once per program. A (programs, N) sum in
PyTorch then finishes the reduction: it is small next to the (rows, N) tensors and its
order is fixed, so gradients are reproducible run to run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED
from wattbench.kernels.softmax import _ROW_CONFIGS
from wattbench.kernels.targets import device_limits

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Widest row one program normalises in registers.
MAX_HIDDEN = 65536


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N"])
@triton.jit
def _rms_norm_forward_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, N, stride_xm, stride_xn, stride_w, stride_ym, eps,
                             BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / N + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * stride_ym + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N"])
@triton.jit
def _rms_norm_backward_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_partial_ptr, M, N, rows_per_program,
                              stride_dym, stride_dyn, stride_xm, stride_xn, stride_w, stride_dxm,
                              BLOCK_N: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    first = program.to(tl.int64) * rows_per_program
    for row in range(first, tl.minimum(first + rows_per_program, M)):
        dy = tl.load(dy_ptr + row * stride_dym + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row)
        x_hat = x * rstd
        w_dy = w * dy
        dx = (w_dy - x_hat * (tl.sum(x_hat * w_dy, axis=0) / N)) * rstd
        tl.store(dx_ptr + row * stride_dxm + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(dw_partial_ptr + program * N + cols, dw, mask=mask)


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N"])
@triton.jit
def _layer_norm_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N,
                               stride_xm, stride_xn, stride_w, stride_b, stride_ym, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols * stride_b, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    centred = tl.where(mask, x - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=0) / N + eps)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    tl.store(y_ptr + row * stride_ym + cols, (centred * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N"])
@triton.jit
def _layer_norm_backward_kernel(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_partial_ptr, db_partial_ptr,
                                M, N, rows_per_program, stride_dym, stride_dyn, stride_xm, stride_xn, stride_w,
                                stride_dxm, BLOCK_N: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    first = program.to(tl.int64) * rows_per_program
    for row in range(first, tl.minimum(first + rows_per_program, M)):
        dy = tl.load(dy_ptr + row * stride_dym + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + row)
        rstd = tl.load(rstd_ptr + row)
        x_hat = tl.where(mask, (x - mean) * rstd, 0.0)
        w_dy = w * dy
        c_hat = tl.sum(x_hat * w_dy, axis=0) / N
        c_mean = tl.sum(w_dy, axis=0) / N
        dx = (w_dy - x_hat * c_hat - c_mean) * rstd
        tl.store(dx_ptr + row * stride_dxm + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
        db += dy
    tl.store(dw_partial_ptr + program * N + cols, dw, mask=mask)
    tl.store(db_partial_ptr + program * N + cols, db, mask=mask)


def _backward_programs(rows: int, device: torch.device) -> int:
    """Enough programs to fill the GPU a few times over; each adds one partial row to reduce."""
    if INTERPRETED:
        return min(rows, 4)
    return min(rows, 4 * device_limits(device).sm_count)


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        N = x.shape[-1]
        rows = x.reshape(-1, N)
        y = torch.empty(rows.shape, device=x.device, dtype=x.dtype)
        rstd = torch.empty(rows.shape[0], device=x.device, dtype=torch.float32)
        block = triton.next_power_of_2(N)
        _rms_norm_forward_kernel[(rows.shape[0],)](rows, weight, y, rstd, N, rows.stride(0), rows.stride(1),
                                                   weight.stride(0), y.stride(0), eps, BLOCK_N=block)
        ctx.save_for_backward(rows, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        rows, weight, rstd = ctx.saved_tensors
        M, N = rows.shape
        dy = grad_y.reshape(M, N)
        dx = torch.empty((M, N), device=rows.device, dtype=rows.dtype)
        programs = _backward_programs(M, rows.device)
        dw_partial = torch.empty((programs, N), device=rows.device, dtype=torch.float32)
        _rms_norm_backward_kernel[(programs,)](dy, rows, weight, rstd, dx, dw_partial, M, N, triton.cdiv(M, programs),
                                               dy.stride(0), dy.stride(1), rows.stride(0), rows.stride(1),
                                               weight.stride(0), dx.stride(0), BLOCK_N=triton.next_power_of_2(N))
        return dx.view(grad_y.shape), dw_partial.sum(0).to(weight.dtype), None


class _LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        N = x.shape[-1]
        rows = x.reshape(-1, N)
        y = torch.empty(rows.shape, device=x.device, dtype=x.dtype)
        mean = torch.empty(rows.shape[0], device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        _layer_norm_forward_kernel[(rows.shape[0],)](rows, weight, bias, y, mean, rstd, N, rows.stride(0),
                                                     rows.stride(1), weight.stride(0), bias.stride(0), y.stride(0),
                                                     eps, BLOCK_N=triton.next_power_of_2(N))
        ctx.save_for_backward(rows, weight, mean, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        rows, weight, mean, rstd = ctx.saved_tensors
        M, N = rows.shape
        dy = grad_y.reshape(M, N)
        dx = torch.empty((M, N), device=rows.device, dtype=rows.dtype)
        programs = _backward_programs(M, rows.device)
        dw_partial = torch.empty((programs, N), device=rows.device, dtype=torch.float32)
        db_partial = torch.empty_like(dw_partial)
        _layer_norm_backward_kernel[(programs,)](dy, rows, weight, mean, rstd, dx, dw_partial, db_partial, M, N,
                                                 triton.cdiv(M, programs), dy.stride(0), dy.stride(1), rows.stride(0),
                                                 rows.stride(1), weight.stride(0), dx.stride(0),
                                                 BLOCK_N=triton.next_power_of_2(N))
        return (dx.view(grad_y.shape), dw_partial.sum(0).to(weight.dtype), db_partial.sum(0).to(weight.dtype),
                None)


def _check_inputs(op: str, x: torch.Tensor, eps: float, **params: torch.Tensor) -> None:
    """Validate x and its per-feature parameters (weight, bias) before any launch."""
    for name, tensor in {"x": x, **params}.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"{op}: x must have at least one dimension and no zero-sized ones, got {tuple(x.shape)}")
    if x.shape[-1] > MAX_HIDDEN:
        raise ValueError(f"{op}: the last dimension of x must be at most {MAX_HIDDEN}, got {x.shape[-1]}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{op}: x must be one of {_DTYPES}, got {x.dtype}")
    for name, tensor in params.items():
        if tensor.shape != (x.shape[-1],):
            raise ValueError(f"{op}: {name} must have shape ({x.shape[-1]},) to match x{tuple(x.shape)}, "
                             f"got {tuple(tensor.shape)}")
        if tensor.dtype != x.dtype:
            raise TypeError(f"{op}: {name} must have x's dtype {x.dtype}, got {tensor.dtype}")
        if tensor.device != x.device:
            raise ValueError(f"{op}: {name} is on {tensor.device} but x is on {x.device}")
    if not isinstance(eps, (int, float)) or eps <= 0:
        raise ValueError(f"{op}: eps must be a positive number, got {eps!r}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension, fp32/fp16/bf16, computed in fp32."""
    _check_inputs("rms_norm", x, eps, weight=weight)
    return _RMSNormFunction.apply(x, weight, float(eps))


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The PyTorch path with the same signature and semantics."""
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


def rms_norm_flops(M: int, N: int, backward: bool = False) -> int:
    """Per element, forward: square, sum, scale by rstd, scale by weight (4). Backward: x*rstd, w*dy,
    their product, its sum, x_hat*sum, subtract, scale by rstd, dy*x_hat and its add into dweight (9)."""
    return (9 if backward else 4) * M * N


def rms_norm_bytes(M: int, N: int, element_size: int, backward: bool = False) -> int:
    """Compulsory traffic. Forward: read x and weight, write y. Backward: read dy, x, weight and the
    saved fp32 rstd, write dx and dweight."""
    if backward:
        return (3 * M * N + 2 * N) * element_size + 4 * M
    return (2 * M * N + N) * element_size


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dimension, fp32/fp16/bf16, in fp32."""
    _check_inputs("layer_norm", x, eps, weight=weight, bias=bias)
    return _LayerNormFunction.apply(x, weight, bias, float(eps))


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The PyTorch path with the same signature and semantics."""
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def layer_norm_flops(M: int, N: int, backward: bool = False) -> int:
    """Per element, forward: sum, subtract mean, square, sum, scale by rstd, scale by weight, add bias (7).
    Backward: subtract mean, scale by rstd, w*dy, x_hat*w_dy, its sum, the sum of w*dy, x_hat*sum, two
    subtractions, scale by rstd, dy*x_hat and its add into dweight, dy added into dbias (13)."""
    return (13 if backward else 7) * M * N


def layer_norm_bytes(M: int, N: int, element_size: int, backward: bool = False) -> int:
    """Compulsory traffic. Forward: read x, weight and bias, write y. Backward: read dy, x, weight and
    the saved fp32 mean and rstd, write dx, dweight and dbias."""
    if backward:
        return (3 * M * N + 3 * N) * element_size + 8 * M
    return (2 * M * N + 2 * N) * element_size
