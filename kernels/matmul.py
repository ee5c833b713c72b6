"""Tiled matmul with a fused bias epilogue, differentiable through the same kernel.

The backward pass runs both products (dA = dC @ B^T, dB = A^T @ dC) through the Triton
kernel too, by passing transposed strides: no copies, so a training step measures Triton
end to end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K,
                   stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                   HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + kk[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + kk[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn,
             acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def _launch(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    block_m, block_n, block_k = (64, 64, 32) if M > 16 else (16, 64, 64)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _matmul_kernel[grid](a, b, bias if bias is not None else c, c, M, N, K,
                         a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                         HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                         UPCAST=INTERPRETED and a.dtype == torch.bfloat16)
    return c


class _MatmulFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, bias):
        ctx.save_for_backward(a, b)
        ctx.has_bias = bias is not None
        return _launch(a, b, bias)

    @staticmethod
    def backward(ctx, grad_c):
        a, b = ctx.saved_tensors
        grad_a = _launch(grad_c, b.t(), None) if ctx.needs_input_grad[0] else None
        grad_b = _launch(a.t(), grad_c, None) if ctx.needs_input_grad[1] else None
        grad_bias = grad_c.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_a, grad_b, grad_bias


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(M, K) @ (K, N) [+ bias (N,)] in fp32/fp16/bf16, accumulating in fp32."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"matmul: a and b must be 2-D, got a{tuple(a.shape)} and b{tuple(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: inner dimensions differ: a{tuple(a.shape)} @ b{tuple(b.shape)}")
    if a.dtype not in _DTYPES or b.dtype != a.dtype:
        raise TypeError(f"matmul: a and b must share one dtype of {_DTYPES}, got {a.dtype} and {b.dtype}")
    if bias is not None and (bias.shape != (b.shape[1],) or bias.dtype != a.dtype):
        raise ValueError(f"matmul: bias must be ({b.shape[1]},) {a.dtype}, got {tuple(bias.shape)} {bias.dtype}")
    if a.device != b.device or (bias is not None and bias.device != a.device):
        raise ValueError("matmul: a, b and bias must be on one device")
    return _MatmulFunction.apply(a, b, bias)


def matmul_reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The PyTorch path (cuBLAS on GPU) with the same signature and semantics."""
    return torch.addmm(bias, a, b) if bias is not None else a @ b


def matmul_flops(M: int, N: int, K: int, bias: bool = False) -> int:
    return 2 * M * N * K + (M * N if bias else 0)


def matmul_bytes(M: int, N: int, K: int, element_size: int, bias: bool = False) -> int:
    """Compulsory traffic: each operand read once, the result written once."""
    return (M * K + K * N + M * N + (N if bias else 0)) * element_size
