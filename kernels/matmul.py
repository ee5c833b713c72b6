"""Tiled matmul with a fused bias + activation epilogue, differentiable through the same kernel.

The backward pass runs both products (dA = dZ @ B^T, dB = A^T @ dZ) through the Triton
kernel too, by passing transposed strides: no copies, so a training step measures Triton
end to end. With an activation, the forward pass also keeps the pre-activation Z, and a
small Triton kernel turns the incoming gradient into dZ = dC * act'(Z) before the products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED
from wattbench.kernels import targets

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Epilogue activations; the keys are what `matmul(..., activation=)` accepts.
ACTIVATIONS = {
    None: torch.nn.Identity(),
    "relu": torch.nn.functional.relu,
    "gelu": torch.nn.functional.gelu,  # exact (erf) form, torch's default
    "silu": torch.nn.functional.silu,
}


#: GEMM tiles, (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps), by what the dot runs on. Each
#: target tries those that fit its shared memory (`gemm_pruner`), 16-row tiles only for decode-sized M
#: and, under an erf or sigmoid epilogue, only tiles of at most 64 accumulators per thread.
#: 16-bit operands on tensor cores (mma.sync on sm_80/sm_89, wgmma on sm_90).
GEMM_16BIT = [
    (128, 256, 64, 3, 8), (256, 128, 64, 3, 8), (128, 128, 64, 4, 4), (128, 128, 32, 4, 4),
    (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 32, 32, 4, 2), (32, 64, 32, 4, 4), (16, 64, 128, 4, 4),
]
#: fp32 with TF32 allowed, on tensor cores: the 16-bit tiles at half the K step (each stage holds as
#: many bytes), and 8 warps for the 128x128 tile, whose 4-warp form runs out of registers.
GEMM_TF32 = [
    (128, 256, 32, 3, 8), (256, 128, 32, 3, 8), (128, 128, 32, 3, 8), (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4), (64, 64, 32, 4, 4), (64, 32, 32, 5, 2), (32, 64, 32, 5, 2),
    (16, 64, 64, 4, 4), (16, 128, 32, 4, 4),
]
#: fp32 with TF32 off (torch's default): FMA loops, whose accumulators and operand fragments all sit
#: in registers, so at most 64 accumulators per thread and short K steps.
GEMM_FP32 = [
    (128, 128, 32, 3, 8), (128, 128, 16, 3, 8), (128, 64, 16, 3, 8), (64, 128, 16, 3, 8),
    (64, 64, 32, 3, 8), (32, 64, 32, 3, 4), (16, 64, 64, 3, 4), (16, 128, 16, 3, 4),
]
#: Hopper's wgmma needs a warpgroup of 4 warps: a 2-warp 16-bit tile falls back to mma.sync there, and
#: the 64x32x32 one spills (8 B per thread), so Hopper tries 16-bit tiles of 4 warps or more only.
WARPGROUP = 4
#: Largest M that 16-row (decode) tiles are tried for; larger products never pick them.
DECODE_ROWS = 64
#: Accumulators per thread that an erf (gelu) or sigmoid (silu) epilogue leaves room for.
_ACTIVATION_ACCUMULATORS = 64


def tile_configs(shapes: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    """GEMM configs from (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps) rows, all with GROUP_M 8."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for m, n, k, s, w in shapes]


def autotune_configs(*row_lists, interpreted: triton.Config) -> list[triton.Config]:
    """Every config of the row lists, once; one small tile under the interpreter, which would
    otherwise run (slowly) every config to pick a winner."""
    if INTERPRETED:
        return [interpreted]
    return list(dict.fromkeys(config for rows in row_lists for config in tile_configs(rows)))


def dot_rows(dtype: torch.dtype, precision: str, rows_16bit, rows_tf32, rows_fp32):
    """The tile list for a dot's operand dtype and precision ("ieee" or "tf32")."""
    if dtype != torch.float32:
        return rows_16bit
    return rows_tf32 if precision == "tf32" else rows_fp32


def gemm_pruner(kernel: str, rows_16bit, rows_tf32, rows_fp32, b_name: str, b_converted: bool = False):
    """`early_config_prune` for a GEMM kernel: the list for its operands (`a_ptr`'s dtype, PRECISION),
    less the tiles whose pipeline buffers exceed the GPU's shared memory. Each buffer holds one A and
    one B tile (B as stored: int8 for a quantised weight); with `b_converted`, wgmma and FMA loops
    also read B converted to A's dtype from shared memory."""
    def choose(args, capability):
        rows = dot_rows(args["a_ptr"].dtype, args["PRECISION"], rows_16bit, rows_tf32, rows_fp32)
        if capability >= (9, 0) and rows is rows_16bit:
            rows = [row for row in rows if row[4] >= WARPGROUP]
        if args["M"] > DECODE_ROWS:
            rows = [row for row in rows if row[0] > 16]
        if args.get("ACTIVATION") in ("gelu", "silu"):
            rows = [row for row in rows if row[0] * row[1] <= _ACTIVATION_ACCUMULATORS * 32 * row[4]]
        return tile_configs(rows)

    def needs(config, args, capability):
        m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
        a_bytes, b_bytes = args["a_ptr"].element_size(), args[b_name].element_size()
        stage = m * k * a_bytes + k * n * b_bytes
        converted_read = capability >= (9, 0) or args["PRECISION"] == "ieee"  # by wgmma, or by FMA loops
        converted = k * n * a_bytes if b_converted and converted_read else 0
        return targets.pipeline_buffers(capability, config.num_stages) * stage + converted

    return targets.shared_memory_pruner(kernel, choose, needs)


def gemm_grid(M: int, N: int):
    """Launch grid for an (M, N) output: one program per tile, whatever tile the autotuner picks."""
    return lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


def dot_precision(dtype: torch.dtype) -> str:
    """Follow torch's TF32 switch for fp32 operands, so both impls compute the same thing
    (fp16/bf16 ignore it: "tf32" is Triton's default). For fp32, what ran: "ieee" is FMA loops
    (torch's default), "tf32" tensor cores; a benchmark record of fp32 dots should say which."""
    return "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"


def interpreter_upcast(dtype: torch.dtype) -> bool:
    """Whether kernels must upcast tl.dot operands to fp32: the interpreter gets bf16 dots wrong (triton#11584)."""
    return INTERPRETED and dtype == torch.bfloat16


@triton.jit
def grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's (row tile, column tile), walking GROUP_M row tiles per column sweep so
    neighbouring programs share A and B tiles in L2."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    programs_per_group = GROUP_M * tiles_n
    first_m = (pid // programs_per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % programs_per_group) % group_rows
    pid_n = (pid % programs_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _activate(x, ACTIVATION: tl.constexpr):
    if ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "gelu":
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACTIVATION == "silu":
        x = x * tl.sigmoid(x)
    return x


@triton.jit
def _activation_slope(z, ACTIVATION: tl.constexpr):
    """d act(z) / dz."""
    if ACTIVATION == "relu":
        slope = tl.where(z > 0.0, 1.0, 0.0)
    elif ACTIVATION == "gelu":
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
        slope = cdf + z * pdf
    else:  # silu
        s = tl.sigmoid(z)
        slope = s * (1.0 + z * (1.0 - s))
    return slope


@triton.jit
def tile_pointers(a_ptr, b_ptr, M, N, stride_am, stride_ak, stride_bk, stride_bn,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's rows, columns and K offsets, and the pointers of its first A (BLOCK_M x BLOCK_K)
    and B (BLOCK_K x BLOCK_N) tiles. Rows/columns past the edge read a valid row/column instead
    (wrapped) and are never stored, so only the K edge needs a load mask (`load_k_step`)."""
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (rm % M)[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_ptr + rk[:, None] * stride_bk + (rn % N)[None, :] * stride_bn
    return rm, rn, rk, a_ptrs, b_ptrs


@triton.jit
def load_k_step(a_ptrs, b_ptrs, k0, rk, K):
    """The A and B tiles of the K step at k0, zero past K (where they add nothing to the dot)."""
    a = tl.load(a_ptrs, mask=(k0 + rk)[None, :] < K, other=0.0)
    b = tl.load(b_ptrs, mask=(k0 + rk)[:, None] < K, other=0.0)
    return a, b


@triton.jit
def store_tile(c_ptr, acc, rm, rn, M, N, stride_cm, stride_cn):
    """The fp32 tile `acc` into C's in-bounds rows and columns, in C's dtype."""
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.autotune(configs=autotune_configs(GEMM_16BIT, GEMM_TF32, GEMM_FP32, interpreted=triton.Config(
                     {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2})),
                 key=["M", "N", "K", "PRECISION"],
                 prune_configs_by={"early_config_prune": gemm_pruner("matmul", GEMM_16BIT, GEMM_TF32, GEMM_FP32,
                                                                     "b_ptr")})
@triton.jit
def _matmul_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, preact_ptr, M, N, K,
                   stride_am, stride_ak, stride_bk, stride_bn, stride_bias, stride_cm, stride_cn,
                   HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACT: tl.constexpr,
                   PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    rm, rn, rk, a_ptrs, b_ptrs = tile_pointers(a_ptr, b_ptr, M, N, stride_am, stride_ak, stride_bk, stride_bn,
                                               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a, b = load_k_step(a_ptrs, b_ptrs, k0, rk, K)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + (rn % N) * stride_bias).to(tl.float32)[None, :]
    if STORE_PREACT:
        store_tile(preact_ptr, acc, rm, rn, M, N, stride_cm, stride_cn)
    store_tile(c_ptr, _activate(acc, ACTIVATION), rm, rn, M, N, stride_cm, stride_cn)


@triton.jit
def _activation_grad_kernel(grad_out_ptr, preact_ptr, grad_preact_ptr, N, numel, stride_gm, stride_gn,
                            ACTIVATION: tl.constexpr, BLOCK: tl.constexpr):
    """dZ = dC * act'(Z). Z and dZ are contiguous (we allocate them); dC may have any strides
    (a gradient of `.sum()` arrives as an expanded, stride-0 tensor)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    grad_out = tl.load(grad_out_ptr + (offsets // N) * stride_gm + (offsets % N) * stride_gn, mask=mask)
    z = tl.load(preact_ptr + offsets, mask=mask).to(tl.float32)
    grad = grad_out.to(tl.float32) * _activation_slope(z, ACTIVATION)
    tl.store(grad_preact_ptr + offsets, grad.to(grad_preact_ptr.dtype.element_ty), mask=mask)


def _launch(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, activation: str | None = None,
            keep_preact: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """C = act(A @ B + bias) for validated inputs; also returns Z = A @ B + bias when asked."""
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    preact = torch.empty_like(c) if keep_preact else None
    grid = gemm_grid(M, N)
    _matmul_kernel[grid](a, b, bias if bias is not None else c, c, preact if keep_preact else c, M, N, K,
                         a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                         bias.stride(0) if bias is not None else 0, c.stride(0), c.stride(1),
                         HAS_BIAS=bias is not None, ACTIVATION=activation or "none", STORE_PREACT=keep_preact,
                         PRECISION=dot_precision(a.dtype), UPCAST=interpreter_upcast(a.dtype))
    return c, preact


def _activation_grad(grad_out: torch.Tensor, preact: torch.Tensor, activation: str) -> torch.Tensor:
    grad_preact = torch.empty_like(preact)
    numel = preact.numel()
    block = 1024
    _activation_grad_kernel[(triton.cdiv(numel, block),)](
        grad_out, preact, grad_preact, preact.shape[1], numel, grad_out.stride(0), grad_out.stride(1),
        ACTIVATION=activation, BLOCK=block)
    return grad_preact


class _MatmulFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, bias, activation):
        c, preact = _launch(a, b, bias, activation, keep_preact=activation is not None)
        ctx.save_for_backward(a, b, preact)
        ctx.has_bias = bias is not None
        ctx.activation = activation
        return c

    @staticmethod
    def backward(ctx, grad_c):
        a, b, preact = ctx.saved_tensors
        grad_preact = grad_c if ctx.activation is None else _activation_grad(grad_c, preact, ctx.activation)
        grad_a = _launch(grad_preact, b.t())[0] if ctx.needs_input_grad[0] else None
        grad_b = _launch(a.t(), grad_preact)[0] if ctx.needs_input_grad[1] else None
        grad_bias = grad_preact.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_a, grad_b, grad_bias, None


def check_devices(op: str, **tensors: torch.Tensor | None) -> None:
    """All tensors on one device, and one the kernels can run on (the interpreter runs on any)."""
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        found = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {found}")
    device = devices.pop()
    if not INTERPRETED and device.type not in targets.LAUNCH_DEVICE_TYPES:
        raise ValueError(f"{op}: compiled Triton kernels need CUDA tensors, got {device}")


def check_tensor(op: str, name: str, value: object, ndim: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(value.shape)}")


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None) -> torch.Tensor:
    """act((M, K) @ (K, N) [+ bias (N,)]) in fp32/fp16/bf16, accumulating in fp32.

    Any strides (transposed or sliced views) are read in place. `activation` is one of
    None, "relu", "gelu" (exact erf form) or "silu", applied in the epilogue.
    """
    check_tensor("matmul", "a", a, 2)
    check_tensor("matmul", "b", b, 2)
    if bias is not None:
        check_tensor("matmul", "bias", bias, 1)
    if a.dtype not in _DTYPES or b.dtype != a.dtype or (bias is not None and bias.dtype != a.dtype):
        raise TypeError(f"matmul: a, b and bias must share one dtype of {_DTYPES}, got a {a.dtype}, b {b.dtype}"
                        + (f", bias {bias.dtype}" if bias is not None else ""))
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: inner dimensions differ: a{tuple(a.shape)} @ b{tuple(b.shape)}")
    if bias is not None and bias.shape[0] != b.shape[1]:
        raise ValueError(f"matmul: bias must have shape ({b.shape[1]},), got {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"matmul: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    check_devices("matmul", a=a, b=b, bias=bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, b, bias)):
        return _MatmulFunction.apply(a, b, bias, activation)
    return _launch(a, b, bias, activation)[0]


def matmul_reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
                     activation: str | None = None) -> torch.Tensor:
    """The PyTorch path (cuBLAS on GPU, then an eager activation) with the same signature and semantics."""
    out = torch.addmm(bias, a, b) if bias is not None else a @ b
    return ACTIVATIONS[activation](out)


def matmul_flops(M: int, N: int, K: int, bias: bool = False) -> int:
    """Multiply-adds of the product (2MNK) plus the bias adds; the activation's few elementwise
    operations are not counted, as in torch's FlopCounterMode."""
    return 2 * M * N * K + (M * N if bias else 0)


def matmul_bytes(M: int, N: int, K: int, element_size: int, bias: bool = False) -> int:
    """Compulsory traffic: each operand read once, the result written once."""
    return (M * K + K * N + M * N + (N if bias else 0)) * element_size
