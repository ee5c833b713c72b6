"""RMSNorm and LayerNorm over the last dimension, with Triton forward and backward passes.

One kernel serves both norms (LAYER_NORM chooses), computing in fp32 whatever the storage dtype.

Forward: one program per row. A row of up to MAX_BLOCK elements is held in registers and read
once; a wider one (up to MAX_HIDDEN) is read in MAX_BLOCK-wide blocks, twice: once for its
statistics (LayerNorm combines each block's mean and sum of squared deviations, Chan et al.,
so the variance is taken around the mean), once to normalise. The statistics (rstd, and the
mean for LayerNorm) are saved for the backward pass.

Backward: the weight (and bias) gradient is a sum over every row. Rather than have every row
add into one vector with atomics (contended, and non-deterministic in floating point), a
fixed number of programs each walk a contiguous chunk of rows, write dx per row, and keep
their own partial dw (db) in fp32 registers, stored once per program. A (programs, N) sum in
PyTorch then finishes the reduction: it is small next to the (rows, N) tensors and its
order is fixed, so gradients are reproducible run to run. dx needs two sums over its row; a
row wider than MAX_BLOCK gets them from a first kernel, and the programs then also split the
row into MAX_BLOCK-wide column blocks, so no program holds more than one block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED
from wattbench.kernels.targets import device_limits, prune_row_configs

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Widest row the norms accept.
MAX_HIDDEN = 65536

#: Widest block one program holds in registers; wider rows are processed block by block.
MAX_BLOCK = 8192

#: Row elements per thread beyond which the kernels spill registers (sm_80 to sm_90, fp32 math):
#: configs with fewer warps than that needs are not tried.
_FORWARD_ELEMENTS_PER_THREAD = 64
_BACKWARD_ELEMENTS_PER_THREAD = 32

# Each program owns a block of a row (or a whole one), so only warps are tuned; not 32, whose 1024
# threads get 64 registers each, which the backward kernels spill at.
_ROW_CONFIGS = ([triton.Config({}, num_warps=1)] if INTERPRETED
                else [triton.Config({}, num_warps=w) for w in (4, 8, 16)])


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N", "LAYER_NORM"],
                 prune_configs_by={"early_config_prune": prune_row_configs(_FORWARD_ELEMENTS_PER_THREAD)})
@triton.jit
def _norm_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N, stride_xm, stride_xn, stride_w, stride_b,
                         stride_ym, eps, LAYER_NORM: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    y_row = y_ptr + row * stride_ym
    cols = tl.arange(0, BLOCK_N)
    if SINGLE_BLOCK:
        mask = cols < N
        x = tl.load(x_row + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / N if LAYER_NORM else 0.0
        centred = tl.where(mask, x - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(centred * centred, axis=0) / N + eps)
    else:
        mean = tl.zeros((), tl.float32)
        squares = tl.zeros((), tl.float32)  # sum of squared deviations from `mean` (from 0 for RMSNorm)
        seen = tl.zeros((), tl.float32)  # elements in `mean` and `squares` so far
        for start in range(0, N, BLOCK_N):
            mask = start + cols < N
            x = tl.load(x_row + (start + cols) * stride_xn, mask=mask, other=0.0).to(tl.float32)
            if LAYER_NORM:
                count = tl.sum(mask.to(tl.float32), axis=0)
                block_mean = tl.sum(x, axis=0) / count
                deviation = tl.where(mask, x - block_mean, 0.0)
                delta = block_mean - mean
                squares += tl.sum(deviation * deviation, axis=0) + delta * delta * seen * count / (seen + count)
                mean += delta * count / (seen + count)
                seen += count
            else:
                squares += tl.sum(x * x, axis=0)
        rstd = tl.rsqrt(squares / N + eps)
    if LAYER_NORM:
        tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        if not SINGLE_BLOCK:
            x = tl.load(x_row + (start + cols) * stride_xn, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + (start + cols) * stride_w, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w
        if LAYER_NORM:
            y += tl.load(b_ptr + (start + cols) * stride_b, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _normalised(x, mean, rstd, mask, LAYER_NORM: tl.constexpr):
    """x_hat: (x - mean) * rstd for LayerNorm, x * rstd for RMSNorm; 0 outside the row."""
    if LAYER_NORM:
        x = x - mean
    return tl.where(mask, x * rstd, 0.0)


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N", "LAYER_NORM"],
                 prune_configs_by={"early_config_prune": prune_row_configs(_BACKWARD_ELEMENTS_PER_THREAD)})
@triton.jit
def _norm_row_sums_kernel(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, sums_ptr, N, stride_dym, stride_dyn, stride_xm,
                          stride_xn, stride_w, LAYER_NORM: tl.constexpr, BLOCK_N: tl.constexpr):
    """For a row wider than one block: sum(x_hat * w * dy) / N and (LayerNorm) sum(w * dy) / N, the
    two terms every dx of the row needs, block by block."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mean = tl.load(mean_ptr + row) if LAYER_NORM else 0.0
    rstd = tl.load(rstd_ptr + row)
    hat_sum = tl.zeros((), tl.float32)
    plain_sum = tl.zeros((), tl.float32)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        dy = tl.load(dy_ptr + row * stride_dym + (start + cols) * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + row * stride_xm + (start + cols) * stride_xn, mask=mask, other=0.0).to(tl.float32)
        w_dy = tl.load(w_ptr + (start + cols) * stride_w, mask=mask, other=0.0).to(tl.float32) * dy
        hat_sum += tl.sum(_normalised(x, mean, rstd, mask, LAYER_NORM) * w_dy, axis=0)
        plain_sum += tl.sum(w_dy, axis=0)
    tl.store(sums_ptr + 2 * row, hat_sum / N)
    tl.store(sums_ptr + 2 * row + 1, plain_sum / N)


@triton.autotune(configs=_ROW_CONFIGS, key=["N", "BLOCK_N", "LAYER_NORM", "SUMS_GIVEN"],
                 prune_configs_by={"early_config_prune": prune_row_configs(_BACKWARD_ELEMENTS_PER_THREAD)})
@triton.jit
def _norm_backward_kernel(dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, sums_ptr, dx_ptr, dw_partial_ptr, db_partial_ptr,
                          M, N, rows_per_program, stride_dym, stride_dyn, stride_xm, stride_xn, stride_w, stride_dxm,
                          LAYER_NORM: tl.constexpr, SUMS_GIVEN: tl.constexpr, BLOCK_N: tl.constexpr):
    """dx for a chunk of rows and one column block, with the block's partial dw (db) over those rows.
    Without SUMS_GIVEN the block is the whole row and the row sums are taken here."""
    program = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    first = program.to(tl.int64) * rows_per_program
    for row in range(first, tl.minimum(first + rows_per_program, M)):
        dy = tl.load(dy_ptr + row * stride_dym + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + row) if LAYER_NORM else 0.0
        rstd = tl.load(rstd_ptr + row)
        x_hat = _normalised(x, mean, rstd, mask, LAYER_NORM)
        w_dy = w * dy
        if SUMS_GIVEN:
            hat_sum = tl.load(sums_ptr + 2 * row)
            plain_sum = tl.load(sums_ptr + 2 * row + 1)
        else:
            hat_sum = tl.sum(x_hat * w_dy, axis=0) / N
            plain_sum = tl.sum(w_dy, axis=0) / N
        dx = w_dy - x_hat * hat_sum
        if LAYER_NORM:
            dx -= plain_sum
            db += dy
        tl.store(dx_ptr + row * stride_dxm + cols, (dx * rstd).to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(dw_partial_ptr + program * N + cols, dw, mask=mask)
    if LAYER_NORM:
        tl.store(db_partial_ptr + program * N + cols, db, mask=mask)


def _block_for(n: int) -> int:
    return min(triton.next_power_of_2(n), MAX_BLOCK)


def _backward_programs(rows: int, column_blocks: int, device: torch.device) -> int:
    """Enough programs, over all column blocks, to fill the GPU a few times over; each adds one
    partial row to reduce."""
    if INTERPRETED:
        return min(rows, 4)
    return max(1, min(rows, 4 * device_limits(device).sm_count // column_blocks))


def _forward(x, weight, bias, eps):
    """(y, rows, mean or None, rstd) for x's last dimension, normalised."""
    N = x.shape[-1]
    rows = x.reshape(-1, N)  # a view whenever the leading dimensions allow it
    y = torch.empty(rows.shape, device=x.device, dtype=x.dtype)
    rstd = torch.empty(rows.shape[0], device=x.device, dtype=torch.float32)
    mean = torch.empty_like(rstd) if bias is not None else None
    block = _block_for(N)
    _norm_forward_kernel[(rows.shape[0],)](
        rows, weight, bias if bias is not None else weight, y, mean if mean is not None else rstd, rstd, N,
        rows.stride(0), rows.stride(1), weight.stride(0), bias.stride(0) if bias is not None else 0, y.stride(0), eps,
        LAYER_NORM=bias is not None, BLOCK_N=block, SINGLE_BLOCK=N <= block)
    return y.view(x.shape), rows, mean, rstd


def _backward(grad_y, rows, weight, mean, rstd):
    """(dx, dweight, dbias or None); `mean` is None for RMSNorm."""
    layer_norm = mean is not None
    M, N = rows.shape
    dy = grad_y.reshape(M, N)
    dx = torch.empty((M, N), device=rows.device, dtype=rows.dtype)
    block = _block_for(N)
    column_blocks = triton.cdiv(N, block)
    mean_or_rstd = mean if layer_norm else rstd  # RMSNorm reads no mean
    sums = rstd  # stands in for the row sums when the kernel takes them itself
    if column_blocks > 1:
        sums = torch.empty((M, 2), device=rows.device, dtype=torch.float32)
        _norm_row_sums_kernel[(M,)](dy, rows, weight, mean_or_rstd, rstd, sums, N, dy.stride(0), dy.stride(1),
                                    rows.stride(0), rows.stride(1), weight.stride(0), LAYER_NORM=layer_norm,
                                    BLOCK_N=block)
    programs = _backward_programs(M, column_blocks, rows.device)
    dw_partial = torch.empty((programs, N), device=rows.device, dtype=torch.float32)
    db_partial = torch.empty_like(dw_partial) if layer_norm else dw_partial
    _norm_backward_kernel[(programs, column_blocks)](
        dy, rows, weight, mean_or_rstd, rstd, sums, dx, dw_partial, db_partial, M, N, triton.cdiv(M, programs),
        dy.stride(0), dy.stride(1), rows.stride(0), rows.stride(1), weight.stride(0), dx.stride(0),
        LAYER_NORM=layer_norm, SUMS_GIVEN=column_blocks > 1, BLOCK_N=block)
    dbias = db_partial.sum(0).to(weight.dtype) if layer_norm else None
    return dx.view(grad_y.shape), dw_partial.sum(0).to(weight.dtype), dbias


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rows, _, rstd = _forward(x, weight, None, eps)
        ctx.save_for_backward(rows, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        rows, weight, rstd = ctx.saved_tensors
        dx, dweight, _ = _backward(grad_y, rows, weight, None, rstd)
        return dx, dweight, None


class _LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, rows, mean, rstd = _forward(x, weight, bias, eps)
        ctx.save_for_backward(rows, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        rows, weight, mean, rstd = ctx.saved_tensors
        return (*_backward(grad_y, rows, weight, mean, rstd), None)


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
