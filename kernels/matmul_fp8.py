"""FP8 (e4m3) GEMM: bf16 activations quantised on every call, e4m3 weights quantised once, fp32
accumulation, bf16 output. For sm_89 (Ada: mma.sync on e4m3) and sm_90 (Hopper: wgmma on e4m3).

    y = (q_x @ q_w) * scale_x[m] * scale_w[n] (+ bias)

with per-tensor scales (one each) or per-row ones (one per token, one per output channel). A product
of two e4m3 values is exact in fp32, so the dot's only rounding is fp32 accumulation; the scales are
applied once, in the epilogue. The dynamic quantisation of the activations (one pass for their
row or tensor maxima, one to scale and round) is part of the measured work, as it is of the torch
path (`matmul_fp8_reference`: torch's quantisation, then `torch._scaled_mm` with the same scales).
Inference only: no autograd.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED, targets
from wattbench.kernels.matmul import (DECODE_ROWS, autotune_configs, check_devices, check_tensor, gemm_grid,
                                      load_k_step, matmul_flops, store_tile, tile_configs, tile_pointers)
from wattbench.kernels.quantize import (FP8_DTYPE, FP8_MAX, FP8_SCALINGS, Fp8Weight, dequantize_fp8, fp8_scale_bytes,
                                        quantize_fp8_activations, quantize_fp8_weight)

#: Activations the GEMM takes (and the dtype of its output and bias): FP8 GEMMs serve bf16 models.
ACTIVATION_DTYPE = torch.bfloat16
#: The oldest GPUs with e4m3 tensor cores (Ada, sm_89): sm_80 has none, and Triton refuses e4m3 there.
FP8_CAPABILITY = (8, 9)

#: (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps). An e4m3 element is one byte, so each stage holds
#: the tiles of a 16-bit GEMM at twice the K step (the e4m3 MMAs take K in steps of 32). Each target
#: tries those that fit its shared memory (128x128x128 at 4 stages: 96 KB in three buffers on an L4,
#: 128 KB in four on an H100); 16- and 32-row tiles are tried for decode-sized M only.
GEMM_FP8 = [
    (128, 128, 128, 4, 8), (128, 64, 128, 4, 4), (64, 128, 128, 4, 4), (64, 64, 128, 4, 4), (64, 64, 256, 3, 4),
    (16, 64, 256, 4, 4), (16, 128, 128, 4, 4), (32, 64, 256, 3, 4), (32, 128, 128, 3, 4),
]
#: Hopper only: wgmma keeps these tiles' accumulators without spilling; Ada's mma.sync spills them
#: (some 600 B per thread on sm_89).
GEMM_FP8_HOPPER = [(128, 256, 128, 3, 8), (256, 128, 128, 3, 8), (128, 128, 64, 4, 4)]
#: Columns of a row the activation quantiser reads per step (and threads per program, by warps).
QUANTIZE_BLOCK = 2048
QUANTIZE_WARPS = 4
_FP8_MAX = tl.constexpr(FP8_MAX)


def _choose(args, capability):
    rows = GEMM_FP8 + (GEMM_FP8_HOPPER if capability >= (9, 0) else [])
    return tile_configs(rows if args["M"] <= DECODE_ROWS else [row for row in rows if row[0] > 32])


def _shared_memory(config, args, capability):
    """One e4m3 A tile and B tile per pipeline buffer."""
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return targets.pipeline_buffers(capability, config.num_stages) * (m * k + k * n)


@triton.autotune(configs=autotune_configs(GEMM_FP8, GEMM_FP8_HOPPER, interpreted=triton.Config(
                     {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1})),
                 key=["M", "N", "K", "ROW_SCALES"],
                 prune_configs_by={"early_config_prune": targets.shared_memory_pruner("matmul_fp8", _choose,
                                                                                      _shared_memory)})
@triton.jit
def _matmul_fp8_kernel(a_ptr, b_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, c_ptr, M, N, K,
                       stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                       HAS_BIAS: tl.constexpr, ROW_SCALES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    rm, rn, rk, a_ptrs, b_ptrs = tile_pointers(a_ptr, b_ptr, M, N, stride_am, stride_ak, stride_bk, stride_bn,
                                               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a, b = load_k_step(a_ptrs, b_ptrs, k0, rk, K)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if ROW_SCALES:
        acc *= tl.load(a_scale_ptr + rm % M)[:, None] * tl.load(b_scale_ptr + rn % N)[None, :]
    else:
        acc *= tl.load(a_scale_ptr) * tl.load(b_scale_ptr)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn % N).to(tl.float32)[None, :]
    store_tile(c_ptr, acc, rm, rn, M, N, stride_cm, stride_cn)


@triton.jit
def _round_to_e4m3(x):
    """fp32 x (|x| <= 448, or NaN) rounded to the nearest e4m3 value, ties to even, still in fp32.

    Done by hand so the cast to e4m3 that follows is exact: Triton's interpreter rounds that cast
    wrongly (ties away, and it drops the carry when the mantissa rounds up: 31.6 -> 16, not 32;
    triton#8322, #11897) and sm_89's cast goes through fp16, rounding twice (triton#11753). Adding
    2^(e + 20), whose fp32 step is 2^(e - 3), rounds |x| in [2^e, 2^(e + 1)) to e4m3's step there
    (2^-9 for e4m3's subnormals, below 2^-6); the sign, and NaN, are put back from x's bits.
    """
    bits = x.to(tl.int32, bitcast=True)
    exponent = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)
    magic = ((exponent + 147) << 23).to(tl.float32, bitcast=True)
    rounded = (tl.abs(x) + magic) - magic
    return (rounded.to(tl.int32, bitcast=True) | (bits & -2147483648)).to(tl.float32, bitcast=True)


@triton.jit
def _row_absmax(x_ptr, row, K, stride_xm, stride_xk, BLOCK_K: tl.constexpr):
    """max |x[row, :]| in fp32, inf if the row holds a NaN (so its scale, and its output row, is non-finite)."""
    rk = tl.arange(0, BLOCK_K)
    running = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + row * stride_xm + (k0 + rk) * stride_xk, mask=k0 + rk < K, other=0.0).to(tl.float32)
        running = tl.maximum(running, tl.where(x == x, tl.abs(x), float("inf")))
    return tl.max(running, axis=0)


@triton.jit
def _fp8_absmax_kernel(x_ptr, absmax_ptr, K, stride_xm, stride_xk, BLOCK_K: tl.constexpr):
    """The tensor's max |x| into absmax_ptr[0] (zeroed first), one row per program."""
    tl.atomic_max(absmax_ptr, _row_absmax(x_ptr, tl.program_id(0), K, stride_xm, stride_xk, BLOCK_K))


@triton.jit
def _fp8_quantize_kernel(x_ptr, q_ptr, scale_ptr, absmax_ptr, K, stride_xm, stride_xk, stride_qm,
                         PER_TENSOR: tl.constexpr, BLOCK_K: tl.constexpr):
    """One row: its scale (from its own maximum, or the tensor's in absmax_ptr), then x / scale in e4m3."""
    row = tl.program_id(0)
    if PER_TENSOR:
        absmax = tl.load(absmax_ptr)
    else:
        absmax = _row_absmax(x_ptr, row, K, stride_xm, stride_xk, BLOCK_K)
    scale = tl.where(absmax == 0.0, 1.0, tl.div_rn(absmax, _FP8_MAX))
    rk = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        mask = k0 + rk < K
        x = tl.load(x_ptr + row * stride_xm + (k0 + rk) * stride_xk, mask=mask, other=0.0).to(tl.float32)
        scaled = tl.clamp(tl.div_rn(x, scale), -_FP8_MAX, _FP8_MAX, propagate_nan=tl.PropagateNan.ALL)
        tl.store(q_ptr + row * stride_qm + k0 + rk, _round_to_e4m3(scaled).to(q_ptr.dtype.element_ty), mask=mask)
    if PER_TENSOR:
        tl.store(scale_ptr, scale, mask=row == 0)
    else:
        tl.store(scale_ptr + row, scale)


def quantize_fp8_activations_triton(x: torch.Tensor, scaling: str = "row") -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton path's dynamic quantisation: what `quantize.quantize_fp8_activations` returns, bit for bit.

    Per row: one launch (each program reads its row twice: for the maximum, then to scale it).
    Per tensor: a zeroed maximum, a launch that raises it to the tensor's, then the scaling launch."""
    M, K = x.shape
    q = torch.empty((M, K), device=x.device, dtype=FP8_DTYPE)
    per_tensor = scaling == "tensor"
    scale = torch.empty((1 if per_tensor else M,), device=x.device, dtype=torch.float32)
    block = min(QUANTIZE_BLOCK, triton.next_power_of_2(K))
    absmax = torch.zeros(1, device=x.device, dtype=torch.float32) if per_tensor else scale  # per row: unread
    if per_tensor:
        _fp8_absmax_kernel[(M,)](x, absmax, K, x.stride(0), x.stride(1), BLOCK_K=block, num_warps=QUANTIZE_WARPS)
    _fp8_quantize_kernel[(M,)](x, q, scale, absmax, K, x.stride(0), x.stride(1), q.stride(0),
                               PER_TENSOR=per_tensor, BLOCK_K=block, num_warps=QUANTIZE_WARPS)
    return q, scale


def _check_fp8_inputs(x, w, bias) -> None:
    check_tensor("matmul_fp8", "x", x, 2)
    if not isinstance(w, Fp8Weight):
        raise TypeError(f"matmul_fp8: w must be an Fp8Weight (see quantize_fp8_weight), got {type(w).__name__}")
    if bias is not None:
        check_tensor("matmul_fp8", "bias", bias, 1)
    if x.dtype != ACTIVATION_DTYPE:
        raise TypeError(f"matmul_fp8: x must be {ACTIVATION_DTYPE}, got {x.dtype}")
    if bias is not None and bias.dtype != ACTIVATION_DTYPE:
        raise TypeError(f"matmul_fp8: bias must be {ACTIVATION_DTYPE}, got {bias.dtype}")
    if w.scaling not in FP8_SCALINGS:
        raise ValueError(f"matmul_fp8: w.scaling must be one of {FP8_SCALINGS}, got {w.scaling!r}")
    if w.q.dtype != FP8_DTYPE or w.scale.dtype != torch.float32:
        raise TypeError(f"matmul_fp8: w must hold {FP8_DTYPE} values and float32 scales, got {w.q.dtype} and "
                        f"{w.scale.dtype}")
    K, N = w.shape
    if x.shape[1] != K:
        raise ValueError(f"matmul_fp8: inner dimensions differ: x{tuple(x.shape)} @ w{(K, N)}")
    scales = N if w.scaling == "row" else 1
    if tuple(w.scale.shape) != (scales,):
        raise ValueError(f"matmul_fp8: {w.scaling} scaling needs w.scale of shape ({scales},), got "
                         f"{tuple(w.scale.shape)}")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"matmul_fp8: bias must have shape ({N},), got {tuple(bias.shape)}")


def check_fp8_device(device: torch.device) -> None:
    """Refuse a GPU without e4m3 tensor cores, in one line, before anything launches."""
    if INTERPRETED:
        return
    if device.type != "cuda":  # meta tensors under `wattbench selfcheck compile`: the GPU they stand for
        device = torch.device("cuda", torch.cuda.current_device())
    major, minor = targets.device_limits(device).capability
    if (major, minor) < FP8_CAPABILITY:
        raise targets.UnsupportedDevice(
            f"matmul_fp8: e4m3 tensor cores need compute capability {FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]} or newer "
            f"(Ada, Hopper); this GPU is {major}.{minor}: run bf16 or int8w/int4w here")


def matmul_fp8(x: torch.Tensor, w: Fp8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """bf16 (M, K) @ an e4m3 (K, N) weight [+ bias (N,)] -> bf16 (M, N), quantising x on the way in
    at the weight's granularity (per tensor, or per row). Any strides of x are read in place."""
    _check_fp8_inputs(x, w, bias)
    check_devices("matmul_fp8", x=x, w=w.q, scale=w.scale, bias=bias)
    check_fp8_device(x.device)
    M, K = x.shape
    N = w.shape[1]
    x_q, x_scale = quantize_fp8_activations_triton(x, w.scaling)
    c = torch.empty((M, N), device=x.device, dtype=ACTIVATION_DTYPE)
    _matmul_fp8_kernel[gemm_grid(M, N)](x_q, w.q, x_scale, w.scale, bias if bias is not None else c, c, M, N, K,
                                        x_q.stride(0), x_q.stride(1), w.q.stride(0), w.q.stride(1),
                                        c.stride(0), c.stride(1), HAS_BIAS=bias is not None,
                                        ROW_SCALES=w.scaling == "row")
    return c


def matmul_fp8_reference(x: torch.Tensor, w: Fp8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The torch path: torch's dynamic quantisation of x, then `torch._scaled_mm` with the same scales
    (cuBLASLt on sm_89/sm_90; torch's own kernel on CPU). See `fp8_reference_path` for where it runs."""
    x_q, x_scale = quantize_fp8_activations(x, w.scaling)
    if w.scaling == "row":
        x_scale, w_scale = x_scale[:, None], w.scale[None, :]
    else:
        w_scale = w.scale
    return torch._scaled_mm(x_q, w.q, scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=ACTIVATION_DTYPE)


def matmul_fp8_dequantized(x: torch.Tensor, w: Fp8Weight, bias: torch.Tensor | None = None,
                           dtype: torch.dtype = ACTIVATION_DTYPE) -> torch.Tensor:
    """Dequantise-then-matmul: x quantised as both paths do, both operands dequantised to `dtype`, a
    plain GEMM. The fallback where `torch._scaled_mm` cannot run (label: "dequantise-then-matmul"),
    and in float64 the exact answer the tests hold both paths to."""
    x_q, x_scale = quantize_fp8_activations(x, w.scaling)
    out = dequantize_fp8(x_q, x_scale, 0, dtype) @ dequantize_fp8(w.q, w.scale, 1, dtype)
    return out + bias.to(dtype) if bias is not None else out


@functools.cache
def scaled_mm_unsupported(device: torch.device, scaling: str, K: int, N: int) -> str | None:
    """Why `torch._scaled_mm` fails on `device` at this scaling and shape (its error's first line), or None
    when it runs. Found by running one on ones: support depends on the build and the GPU (row-wise scaling
    came to sm_89 later than to sm_90), and cuBLASLt takes K and N in multiples of 16 only."""
    try:
        w = quantize_fp8_weight(torch.ones(K, N, device=device, dtype=ACTIVATION_DTYPE), scaling)
        matmul_fp8_reference(torch.ones(16, K, device=device, dtype=ACTIVATION_DTYPE), w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001  whatever the build raises is the reason to fall back
        return f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
    return None


def fp8_reference_path(device: torch.device, scaling: str, K: int, N: int) -> str:
    """What the torch path runs on `device` for a (K, N) weight: "torch._scaled_mm", or the labelled
    fallback "dequantise-then-matmul"; `FP8_REFERENCES` maps each to its function."""
    return "torch._scaled_mm" if scaled_mm_unsupported(device, scaling, K, N) is None else "dequantise-then-matmul"


#: The torch path's function by `fp8_reference_path`'s label.
FP8_REFERENCES = {"torch._scaled_mm": matmul_fp8_reference, "dequantise-then-matmul": matmul_fp8_dequantized}


def matmul_fp8_flops(M: int, N: int, K: int, bias: bool = False) -> int:
    """The GEMM's useful work, as for `matmul`: quantising and scaling are overhead, not counted."""
    return matmul_flops(M, N, K, bias=bias)


def matmul_fp8_bytes(M: int, N: int, K: int, scaling: str, bias: bool = False) -> int:
    """Compulsory traffic: bf16 activations, result and bias, the e4m3 weight at one byte per element and
    its fp32 scales. The e4m3 copy of the activations (written, then read by the GEMM: 2 bytes per element
    and the activation scales) is this implementation's, not the operation's, so it is not counted."""
    return 2 * (M * K + M * N + (N if bias else 0)) + K * N + fp8_scale_bytes(N, scaling)
