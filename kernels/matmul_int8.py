"""Weight-only int8 GEMM for decode: activations stay fp16/bf16 (fp32 for CPU testing), the
weight is stored as int8 with one fp32 scale per output column.

At decode sizes (M = 1..64 tokens) a GEMM is bound by reading the weight, so storing it in
one byte instead of two halves the traffic. The kernel loads int8 tiles, converts them to
the activation dtype (exact: int8 fits in fp16/bf16), accumulates in fp32 and applies the
column scales once, in the epilogue: sum_k a[m,k] * q[k,n] * s[n] = s[n] * sum_k a[m,k] * q[k,n].
Inference only: the result carries no autograd history.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels.matmul import (autotune_configs, check_devices, check_tensor, dot_precision, gemm_grid,
                                      gemm_pruner, interpreter_upcast, load_k_step, matmul_flops, store_tile,
                                      tile_pointers)

_ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Largest magnitude of a quantised weight: symmetric, so -128 is never used.
INT8_MAX = 127


#: Small-M tiles (tl.dot needs at least 16 rows) with wide K steps to stream the weight; narrow N
#: tiles give enough programs to fill an H100 when M is 1. (BLOCK_M, BLOCK_N, BLOCK_K, num_stages,
#: num_warps), by what the dot runs on; each target tries those that fit its shared memory.
#: 16-bit activations, and fp32 ones with TF32 allowed: on tensor cores. A stage holds an int8 weight
#: tile and the activations, so fp32 needs no smaller tiles than 16-bit.
DECODE_TENSOR_CORES = [
    (16, 32, 128, 4, 4), (16, 32, 256, 3, 4), (16, 64, 128, 4, 4), (16, 64, 256, 3, 4),
    (16, 128, 64, 4, 4), (32, 64, 128, 4, 8), (32, 128, 64, 4, 8), (64, 64, 64, 4, 4), (64, 128, 64, 3, 4),
]
#: fp32 with TF32 off: FMA loops, whose operand fragments sit in registers: K steps of 64 at most.
DECODE_FP32 = [
    (16, 32, 32, 4, 4), (16, 32, 64, 3, 4), (16, 64, 32, 4, 4), (16, 128, 32, 3, 4), (32, 32, 32, 4, 4),
    (32, 64, 32, 3, 4),
]


@triton.autotune(configs=autotune_configs(DECODE_TENSOR_CORES, DECODE_FP32, interpreted=triton.Config(
                     {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1})),
                 key=["M", "N", "K", "PRECISION"],
                 prune_configs_by={"early_config_prune": gemm_pruner(
                     "matmul_int8w", DECODE_TENSOR_CORES, DECODE_TENSOR_CORES, DECODE_FP32, "q_ptr", b_converted=True)})
@triton.jit
def _matmul_int8w_kernel(a_ptr, q_ptr, scale_ptr, bias_ptr, c_ptr, M, N, K,
                         stride_am, stride_ak, stride_qk, stride_qn, stride_scale, stride_bias, stride_cm, stride_cn,
                         HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    rm, rn, rk, a_ptrs, q_ptrs = tile_pointers(a_ptr, q_ptr, M, N, stride_am, stride_ak, stride_qk, stride_qn,
                                               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a, w = load_k_step(a_ptrs, q_ptrs, k0, rk, K)
        w = w.to(a.dtype)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        q_ptrs += BLOCK_K * stride_qk
    acc *= tl.load(scale_ptr + (rn % N) * stride_scale)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + (rn % N) * stride_bias).to(tl.float32)[None, :]
    store_tile(c_ptr, acc, rm, rn, M, N, stride_cm, stride_cn)


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of a (K, N) weight: returns (w_q int8 (K, N), scale fp32 (N,)).

    scale[n] = max_k |w[k, n]| / 127 and w_q = round(w / scale), so w ~= w_q * scale to within
    scale / 2. The scale is fp32 whatever the weight's dtype: the kernel applies it to its fp32
    accumulator, so one quantised weight serves fp16, bf16 and fp32 activations alike. An
    all-zero column gets scale 1 (its w_q is all zeros). This is a one-off weight preparation,
    not a benchmarked op, so it is plain PyTorch.
    """
    check_tensor("quantize_int8", "w", w, 2)
    if w.dtype not in _ACTIVATION_DTYPES:
        raise TypeError(f"quantize_int8: w must be one of {_ACTIVATION_DTYPES}, got {w.dtype}")
    w32 = w.detach().to(torch.float32)
    if not torch.isfinite(w32).all():
        raise ValueError("quantize_int8: w must be finite (an inf or NaN would make its column's scale meaningless)")
    absmax = w32.abs().amax(dim=0)
    scale = torch.where(absmax > 0, absmax / INT8_MAX, torch.ones_like(absmax))
    w_q = torch.round(w32 / scale).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return w_q, scale


def _check_int8w_inputs(a, w_q, scale, bias) -> None:
    check_tensor("matmul_int8w", "a", a, 2)
    check_tensor("matmul_int8w", "w_q", w_q, 2)
    check_tensor("matmul_int8w", "scale", scale, 1)
    if bias is not None:
        check_tensor("matmul_int8w", "bias", bias, 1)
    if a.dtype not in _ACTIVATION_DTYPES:
        raise TypeError(f"matmul_int8w: a must be one of {_ACTIVATION_DTYPES}, got {a.dtype}")
    if w_q.dtype != torch.int8:
        raise TypeError(f"matmul_int8w: w_q must be torch.int8 (see quantize_int8), got {w_q.dtype}")
    if scale.dtype != torch.float32:
        raise TypeError(f"matmul_int8w: scale must be torch.float32, got {scale.dtype}")
    if bias is not None and bias.dtype != a.dtype:
        raise TypeError(f"matmul_int8w: bias must have a's dtype {a.dtype}, got {bias.dtype}")
    if a.shape[1] != w_q.shape[0]:
        raise ValueError(f"matmul_int8w: inner dimensions differ: a{tuple(a.shape)} @ w_q{tuple(w_q.shape)}")
    N = w_q.shape[1]
    if scale.shape[0] != N:
        raise ValueError(f"matmul_int8w: scale must have shape ({N},), got {tuple(scale.shape)}")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"matmul_int8w: bias must have shape ({N},), got {tuple(bias.shape)}")


def matmul_int8w(a: torch.Tensor, w_q: torch.Tensor, scale: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """(M, K) @ dequant(w_q (K, N) int8, scale (N,) fp32) [+ bias (N,)], in a's dtype.

    Any strides are read in place.
    """
    _check_int8w_inputs(a, w_q, scale, bias)
    check_devices("matmul_int8w", a=a, w_q=w_q, scale=scale, bias=bias)
    M, K = a.shape
    N = w_q.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    grid = gemm_grid(M, N)
    _matmul_int8w_kernel[grid](a, w_q, scale, bias if bias is not None else c, c, M, N, K,
                               a.stride(0), a.stride(1), w_q.stride(0), w_q.stride(1), scale.stride(0),
                               bias.stride(0) if bias is not None else 0, c.stride(0), c.stride(1),
                               HAS_BIAS=bias is not None, PRECISION=dot_precision(a.dtype),
                               UPCAST=interpreter_upcast(a.dtype))
    return c


def matmul_int8w_reference(a: torch.Tensor, w_q: torch.Tensor, scale: torch.Tensor,
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """The PyTorch path: dequantise the whole weight to a's dtype, then a (cuBLAS) GEMM.
    Accepts float64 activations, which is how the tests get an exact answer."""
    w = w_q.to(a.dtype) * scale.to(a.dtype)
    return torch.addmm(bias, a, w) if bias is not None else a @ w


def matmul_int8w_flops(M: int, N: int, K: int, bias: bool = False) -> int:
    """The GEMM's useful work, as for `matmul`; dequantising is overhead, not counted."""
    return matmul_flops(M, N, K, bias=bias)


def matmul_int8w_bytes(M: int, N: int, K: int, element_size: int, bias: bool = False) -> int:
    """Compulsory traffic: activations and result at `element_size`, the weight at one byte
    per element plus its fp32 scales."""
    return (M * K + M * N + (N if bias else 0)) * element_size + K * N + 4 * N
