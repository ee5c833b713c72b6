"""SwiGLU activation, SiLU(gate) * up, fused into one elementwise pass each way.

Unfused, PyTorch writes SiLU(gate) to memory and reads it back for the product; here each
element of gate and up is read once and the result written once. The backward pass
recomputes the sigmoid from the saved inputs instead of saving it, trading a few FLOPs for
a full tensor of memory traffic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# 2-D tiles over (rows, last dimension): wide tiles for long rows, taller ones for short rows.
_TILE_CONFIGS = ([triton.Config({"BLOCK_M": 16, "BLOCK_N": 256}, num_warps=1)] if INTERPRETED
                 else [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w)
                       for m, n, w in ((1, 1024, 4), (1, 2048, 8), (4, 512, 4), (4, 1024, 8),
                                       (8, 256, 4), (16, 128, 4), (32, 64, 4))])


@triton.autotune(configs=_TILE_CONFIGS, key=["M", "N"])
@triton.jit
def _swiglu_forward_kernel(gate_ptr, up_ptr, out_ptr, M, N, stride_gm, stride_gn, stride_um, stride_un, stride_om,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]
    cols = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]
    mask = (rows < M) & (cols < N)
    gate = tl.load(gate_ptr + rows * stride_gm + cols * stride_gn, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + rows * stride_um + cols * stride_un, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + rows * stride_om + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_TILE_CONFIGS, key=["M", "N"])
@triton.jit
def _swiglu_backward_kernel(dout_ptr, gate_ptr, up_ptr, dgate_ptr, dup_ptr, M, N,
                            stride_dm, stride_dn, stride_gm, stride_gn, stride_um, stride_un, stride_grad_m,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]
    cols = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]
    mask = (rows < M) & (cols < N)
    dout = tl.load(dout_ptr + rows * stride_dm + cols * stride_dn, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + rows * stride_gm + cols * stride_gn, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + rows * stride_um + cols * stride_un, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    # d silu / d gate = sig + gate * sig * (1 - sig) = sig * (1 + gate * (1 - sig))
    dgate = dout * up * sig * (1.0 + gate * (1.0 - sig))
    tl.store(dgate_ptr + rows * stride_grad_m + cols, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)
    tl.store(dup_ptr + rows * stride_grad_m + cols, (dout * silu).to(dup_ptr.dtype.element_ty), mask=mask)


def _tile_grid(meta, M: int, N: int):
    return triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"])


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(rows, last dim) view of `t`; a copy only when its strides cannot merge the leading dimensions."""
    return t.reshape(-1, t.shape[-1])


class _SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        g, u = _as_rows(gate), _as_rows(up)
        M, N = g.shape
        out = torch.empty((M, N), device=gate.device, dtype=gate.dtype)
        _swiglu_forward_kernel[lambda meta: _tile_grid(meta, M, N)](
            g, u, out, M, N, g.stride(0), g.stride(1), u.stride(0), u.stride(1), out.stride(0))
        ctx.save_for_backward(g, u)
        return out.view(gate.shape)

    @staticmethod
    def backward(ctx, grad_out):
        g, u = ctx.saved_tensors
        M, N = g.shape
        dout = grad_out.reshape(M, N)
        dgate = torch.empty((M, N), device=g.device, dtype=g.dtype)
        dup = torch.empty_like(dgate)
        _swiglu_backward_kernel[lambda meta: _tile_grid(meta, M, N)](
            dout, g, u, dgate, dup, M, N, dout.stride(0), dout.stride(1), g.stride(0), g.stride(1),
            u.stride(0), u.stride(1), dgate.stride(0))
        return dgate.view(grad_out.shape), dup.view(grad_out.shape)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up elementwise (same shapes, fp32/fp16/bf16), computed in fp32."""
    for name, tensor in (("gate", gate), ("up", up)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"swiglu: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate{tuple(gate.shape)} and up{tuple(up.shape)} must have one shape")
    if gate.dim() < 1 or gate.numel() == 0:
        raise ValueError(f"swiglu: inputs must have at least one dimension and no zero-sized ones, "
                         f"got {tuple(gate.shape)}")
    if gate.dtype not in _DTYPES or up.dtype != gate.dtype:
        raise TypeError(f"swiglu: gate and up must share one dtype of {_DTYPES}, got {gate.dtype} and {up.dtype}")
    if gate.device != up.device:
        raise ValueError(f"swiglu: gate is on {gate.device} but up is on {up.device}")
    return _SwiGLUFunction.apply(gate, up)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The PyTorch path with the same signature and semantics (two kernels: SiLU, then the product)."""
    return torch.nn.functional.silu(gate) * up


def swiglu_flops(numel: int, backward: bool = False) -> int:
    """Per element, forward: sigmoid as negate, exp, add, divide, then gate * sig and * up (6).
    Backward: the sigmoid (4), silu (1), dout * silu (1), 1 - sig, gate * that, 1 + that, and three
    products for dgate (6)."""
    return (12 if backward else 6) * numel


def swiglu_bytes(numel: int, element_size: int, backward: bool = False) -> int:
    """Compulsory traffic. Forward: read gate and up, write the output. Backward: read the output
    gradient, gate and up, write both input gradients."""
    return (5 if backward else 3) * numel * element_size
