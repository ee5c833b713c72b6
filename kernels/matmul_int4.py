"""Weight-only INT4 GEMM, group-wise: activations stay fp16/bf16 (fp32 for CPU testing), the weight
is int4 in groups of `group_size` along K with a bf16 scale and zero per group and column.

At decode sizes (M = 1..64 tokens) a GEMM is bound by reading its weight, and int4 reads a quarter
of bf16's bytes, plus a bf16 scale and zero per group (for groups of 128: 6% more than the packed
weights). The kernel dequantises in the loop: each K step loads a (BLOCK_K, BLOCK_N / 2) tile of
packed bytes, splits the nibbles, applies the step's one scale and zero row, (q - 8) * scale + zero
in fp32, rounds to the activations' dtype and feeds the tensor cores (a K step never straddles a
group: BLOCK_K divides the group size). Prefill sizes take the larger tiles. Inference only: no autograd.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from wattbench.kernels import targets
from wattbench.kernels.matmul import (DECODE_ROWS, autotune_configs, check_devices, check_tensor, dot_precision,
                                      dot_rows, gemm_grid, grouped_tile, interpreter_upcast, matmul_flops, store_tile,
                                      tile_configs)
from wattbench.kernels.quantize import (Int4Weight, check_int4_group, dequantize_int4, int4_weight_bytes, quantize_int4,
                                        unpack_int4)

_ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps), by what the dot runs on; each target tries those
#: that fit its shared memory, and every call those whose K step divides its group size (each list has
#: K steps of 32 for groups of 32). Decode tiles (16 and 32 rows, tried for M <= 64 only) stream the
#: weight in wide K steps over narrow N tiles, so M = 1 still makes enough programs; the 64- and 128-row
#: tiles are for prefill. 16-bit activations, and fp32 with TF32 allowed: tensor cores.
TENSOR_CORES = [
    (16, 32, 128, 4, 4), (16, 64, 128, 4, 4), (16, 128, 32, 4, 4), (32, 64, 128, 4, 8), (32, 128, 64, 4, 8),
    (64, 64, 128, 3, 4), (64, 128, 64, 3, 4), (64, 128, 32, 4, 4), (128, 128, 64, 3, 8), (128, 128, 32, 4, 8),
]
#: 16-bit activations on Hopper only: wgmma holds this tile's accumulators; mma.sync (sm_80/sm_89) spills them.
HOPPER = [(128, 256, 64, 3, 8)]
#: fp32 with TF32 off: FMA loops holding every operand fragment in registers, so short K steps and at
#: most 16 accumulators per thread (a 128x64 tile on 8 warps spills some 350 B per thread).
FP32 = [
    (16, 32, 32, 4, 4), (16, 64, 32, 3, 4), (16, 128, 32, 3, 4), (32, 64, 32, 3, 4), (64, 64, 32, 3, 8),
]


def _choose(args, capability):
    rows_16bit = TENSOR_CORES + (HOPPER if capability >= (9, 0) else [])
    rows = dot_rows(args["a_ptr"].dtype, args["PRECISION"], rows_16bit, TENSOR_CORES, FP32)
    if args["M"] > DECODE_ROWS:
        rows = [row for row in rows if row[0] > 32]
    return tile_configs([row for row in rows if row[2] <= args["GROUP_SIZE"]])


def _shared_memory(config, args, capability):
    """Per pipeline buffer an activation tile, a packed weight tile (half a byte per weight) and a scale and
    zero row; plus the dequantised tile, which the nibble interleave sends through shared memory on every
    target. Fitted to Triton 3.9: exact on sm_80/sm_89, from above on sm_90."""
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    a_bytes = args["a_ptr"].element_size()
    stage = m * k * a_bytes + k * n // 2 + 2 * 2 * n
    return targets.pipeline_buffers(capability, config.num_stages) * stage + k * n * a_bytes


@triton.autotune(configs=autotune_configs(TENSOR_CORES, HOPPER, FP32, interpreted=triton.Config(
                     {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1})),
                 key=["M", "N", "K", "PRECISION", "GROUP_SIZE"],
                 prune_configs_by={"early_config_prune": targets.shared_memory_pruner("matmul_int4w", _choose,
                                                                                      _shared_memory)})
@triton.jit
def _matmul_int4w_kernel(a_ptr, q_ptr, scales_ptr, zeros_ptr, bias_ptr, c_ptr, M, N, K,
                         stride_am, stride_ak, stride_qk, stride_qn, stride_sg, stride_sn, stride_cm, stride_cn,
                         GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                         UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr):
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # Byte j of a row holds columns 2j (low nibble) and 2j + 1. Edge rows/columns read a valid
    # (wrapped) row/column and are never stored; K needs no mask: groups are whole and BLOCK_K divides them.
    packed_n = (pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)) % (N // 2)
    a_ptrs = a_ptr + (rm % M)[:, None] * stride_am + rk[None, :] * stride_ak
    q_ptrs = q_ptr + rk[:, None] * stride_qk + packed_n[None, :] * stride_qn
    group_ptrs = (rn % N) * stride_sn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs)
        packed = tl.load(q_ptrs)
        q = tl.join(packed & 0xF, packed >> 4).reshape(BLOCK_K, BLOCK_N)
        group = (k0 // GROUP_SIZE) * stride_sg
        scale = tl.load(scales_ptr + group + group_ptrs).to(tl.float32)
        zero = tl.load(zeros_ptr + group + group_ptrs).to(tl.float32)
        w = ((q.to(tl.float32) - 8.0) * scale[None, :] + zero[None, :]).to(a.dtype)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        q_ptrs += BLOCK_K * stride_qk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn % N).to(tl.float32)[None, :]
    store_tile(c_ptr, acc, rm, rn, M, N, stride_cm, stride_cn)


def _check_int4w_inputs(x, w, bias) -> None:
    check_tensor("matmul_int4w", "x", x, 2)
    if not isinstance(w, Int4Weight):
        raise TypeError(f"matmul_int4w: w must be an Int4Weight (see quantize_int4), got {type(w).__name__}")
    if bias is not None:
        check_tensor("matmul_int4w", "bias", bias, 1)
    if x.dtype not in _ACTIVATION_DTYPES:
        raise TypeError(f"matmul_int4w: x must be one of {_ACTIVATION_DTYPES}, got {x.dtype}")
    if bias is not None and bias.dtype != x.dtype:
        raise TypeError(f"matmul_int4w: bias must have x's dtype {x.dtype}, got {bias.dtype}")
    if w.packed.dtype != torch.uint8 or w.scales.dtype != torch.bfloat16 or w.zeros.dtype != torch.bfloat16:
        raise TypeError(f"matmul_int4w: w must hold uint8 pairs and bfloat16 scales and zeros, got {w.packed.dtype}, "
                        f"{w.scales.dtype} and {w.zeros.dtype}")
    K, N = w.shape
    check_int4_group("matmul_int4w", K, w.group_size)
    if x.shape[1] != K:
        raise ValueError(f"matmul_int4w: inner dimensions differ: x{tuple(x.shape)} @ w{(K, N)}")
    groups = (K // w.group_size, N)
    if tuple(w.scales.shape) != groups or tuple(w.zeros.shape) != groups:
        raise ValueError(f"matmul_int4w: scales and zeros must have shape {groups}, got {tuple(w.scales.shape)} and "
                         f"{tuple(w.zeros.shape)}")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"matmul_int4w: bias must have shape ({N},), got {tuple(bias.shape)}")


def matmul_int4w(x: torch.Tensor, w: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(M, K) @ dequant(w) [+ bias (N,)] in x's dtype, accumulating in fp32. Any strides are read in place
    (scales and zeros share strides, as `quantize_int4` makes them)."""
    _check_int4w_inputs(x, w, bias)
    check_devices("matmul_int4w", x=x, packed=w.packed, scales=w.scales, zeros=w.zeros, bias=bias)
    if w.scales.stride() != w.zeros.stride():
        raise ValueError(f"matmul_int4w: scales and zeros must share strides, got {w.scales.stride()} and "
                         f"{w.zeros.stride()}")
    M, K = x.shape
    N = w.shape[1]
    c = torch.empty((M, N), device=x.device, dtype=x.dtype)
    _matmul_int4w_kernel[gemm_grid(M, N)](
        x, w.packed, w.scales, w.zeros, bias if bias is not None else c, c, M, N, K,
        x.stride(0), x.stride(1), w.packed.stride(0), w.packed.stride(1), w.scales.stride(0), w.scales.stride(1),
        c.stride(0), c.stride(1), GROUP_SIZE=w.group_size, HAS_BIAS=bias is not None,
        PRECISION=dot_precision(x.dtype), UPCAST=interpreter_upcast(x.dtype))
    return c


# The torch path -----------------------------------------------------------------------------------

class TinygemmWeight:
    """An Int4Weight in the layout of torch's tinygemm kernels (`torch._weight_int4pack_mm`, and
    `_weight_int4pack_mm_for_cpu` on CPU), for activations of one dtype: prepared once, like the weight."""

    def __init__(self, weight: Int4Weight, dtype: torch.dtype):
        K, N = weight.shape
        q = unpack_int4(weight.packed).t().contiguous()  # (N, K), values 0..15
        self.device = weight.packed.device
        if self.device.type == "cpu":
            self.packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
        else:
            self.packed = torch._convert_weight_to_int4pack((q[:, 0::2] << 4 | q[:, 1::2]).contiguous(),
                                                            _inner_k_tiles(K))
        # (K // group, N, 2) in the activations' dtype on CPU, bf16 on CUDA (tinygemm's own).
        pair_dtype = dtype if self.device.type == "cpu" else torch.bfloat16
        self.scales_and_zeros = torch.stack((weight.scales, weight.zeros), dim=-1).to(pair_dtype).contiguous()
        self.group_size = weight.group_size
        self.shape = (K, N)


def _inner_k_tiles(K: int) -> int:
    """tinygemm's K tiling on CUDA: the most 16-wide tiles (8, 4 or 2) that divide K."""
    return next(tiles for tiles in (8, 4, 2) if K % (16 * tiles) == 0)


def matmul_int4w_reference(x: torch.Tensor, w: TinygemmWeight | Int4Weight,
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """The torch path: tinygemm's int4 GEMM on a `TinygemmWeight`, or dequantise-then-matmul (in x's dtype)
    on an `Int4Weight` where the device has no tinygemm kernel (see `int4_reference_path`). Accepts float64
    activations with an Int4Weight, which is how the tests get an exact answer."""
    if isinstance(w, TinygemmWeight):
        mm = torch._weight_int4pack_mm_for_cpu if w.device.type == "cpu" else torch._weight_int4pack_mm
        out = mm(x, w.packed, w.group_size, w.scales_and_zeros)
    else:
        out = x @ dequantize_int4(w, x.dtype)
    return out + bias if bias is not None else out


def prepare_int4_reference(weight: Int4Weight, dtype: torch.dtype) -> TinygemmWeight | Int4Weight:
    """The weight the torch path takes on this device for activations of `dtype`: tinygemm's layout where
    `int4_reference_path` says tinygemm runs, else the Int4Weight itself (dequantised on every call)."""
    K, N = weight.shape
    if tinygemm_unsupported(weight.packed.device, dtype, K, N, weight.group_size) is None:
        return TinygemmWeight(weight, dtype)
    return weight


def int4_reference_path(device: torch.device, dtype: torch.dtype, K: int, N: int, group_size: int) -> str:
    """"torch._weight_int4pack_mm" where tinygemm runs for these activations and shape, else the
    labelled fallback "dequantise-then-matmul"."""
    return "torch._weight_int4pack_mm" if tinygemm_unsupported(device, dtype, K, N, group_size) is None else \
        "dequantise-then-matmul"


@functools.cache
def tinygemm_unsupported(device: torch.device, dtype: torch.dtype, K: int, N: int, group_size: int) -> str | None:
    """Why tinygemm fails for this device, dtype and shape (its error's first line), or None when it runs.

    Found by running one on zeros: support depends on the build and the GPU (CUDA's kernel needs sm_80 and
    bf16, the CPU's N a multiple of 16; both take K in whole groups)."""
    try:
        weight = TinygemmWeight(quantize_int4(torch.zeros(K, N, device=device), group_size), dtype)
        matmul_int4w_reference(torch.zeros(1, K, device=device, dtype=dtype), weight)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001  whatever the build raises is the reason to fall back
        return f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
    return None


# Accounting ---------------------------------------------------------------------------------------

def matmul_int4w_flops(M: int, N: int, K: int, bias: bool = False) -> int:
    """The GEMM's useful work, as for `matmul`; dequantising is overhead, not counted."""
    return matmul_flops(M, N, K, bias=bias)


def matmul_int4w_bytes(M: int, N: int, K: int, element_size: int, group_size: int, bias: bool = False) -> int:
    """Compulsory traffic: activations, result and bias at `element_size`; the weight at half a byte per
    element plus a bf16 scale and zero per group per column."""
    return (M * K + M * N + (N if bias else 0)) * element_size + int4_weight_bytes(K, N, group_size)

