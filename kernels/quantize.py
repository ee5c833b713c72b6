"""Quantisers for the FP8 (e4m3) and INT4 weight-only GEMMs, and what their formats cost in bytes.

FP8 e4m3 keeps 3 mantissa bits and magnitudes up to 448: a tensor is scaled so that its largest
magnitude (per tensor, or per row/column) maps to 448, then rounded to nearest even. Weights are
quantised once, outside any measured work, and checked; activations are quantised on every call
(dynamically), which is part of the measured work, so that path checks nothing it would need a
host read for: a NaN or inf in an activation makes its row's scale, and so its output row, non-finite.

INT4 weights are quantised in groups of `group_size` consecutive weights along K, per output
column, with one bf16 scale and one bf16 zero per group, in the convention of PyTorch's tinygemm
kernels (`torch._weight_int4pack_mm`): w ~= (q - 8) * scale + zero with q in 0..15. Symmetric
groups have zero 0 and q - 8 in -7..7; asymmetric groups spread their [min, max] over 0..15.
Two weights share a byte: packed[k, j] = q[k, 2j] | q[k, 2j + 1] << 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wattbench.kernels.matmul import check_tensor

#: Largest finite e4m3 magnitude (torch.float8_e4m3fn: no infinities, one NaN pattern).
FP8_MAX = 448.0
FP8_DTYPE = torch.float8_e4m3fn
#: "tensor": one scale for the whole tensor; "row": one per activation row (token) and one per weight
#: column (output channel). torch._scaled_mm takes both operands at the same granularity.
FP8_SCALINGS = ("tensor", "row")

INT4_GROUP_SIZE = 128
#: Group sizes the kernel's K steps divide and tinygemm accepts.
INT4_GROUP_SIZES = (32, 64, 128, 256)
#: q - 8 spans -8..7; symmetric groups use -7..7, so +-absmax are both representable.
INT4_SYMMETRIC_MAX = 7
INT4_LEVELS = 15

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Fp8Weight:
    """A (K, N) weight in e4m3, stored K-contiguous (the transpose of an (N, K) row-major tensor, as
    torch._scaled_mm and Hopper's FP8 wgmma want it), with fp32 scales: (1,) or (N,), by `scaling`."""

    q: torch.Tensor
    scale: torch.Tensor
    scaling: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)


@dataclass(frozen=True)
class Int4Weight:
    """A (K, N) weight as int4 pairs packed in uint8 (K, N // 2), with bf16 scales and zeros (K // group_size, N)."""

    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    group_size: int
    symmetric: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], 2 * self.packed.shape[1]


def _check_weight(op: str, w: object) -> torch.Tensor:
    """The weight as fp32, refused unless a finite 2-D floating-point tensor: a weight is quantised
    once, so the check's host read costs nothing measured."""
    check_tensor(op, "w", w, 2)
    if w.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: w must be one of {_FLOAT_DTYPES}, got {w.dtype}")
    w32 = w.detach().to(torch.float32)
    if not torch.isfinite(w32).all():
        bad = (~torch.isfinite(w32)).nonzero()[0].tolist()
        raise ValueError(f"{op}: w must be finite, got {w32[bad[0], bad[1]].item()} at {tuple(bad)} "
                         f"(it would make its scale meaningless)")
    return w32


def _check_scaling(op: str, scaling: str) -> None:
    if scaling not in FP8_SCALINGS:
        raise ValueError(f"{op}: scaling must be one of {FP8_SCALINGS}, got {scaling!r}")


def fp8_scale(absmax: torch.Tensor) -> torch.Tensor:
    """fp32 scales mapping `absmax` to FP8_MAX; 1 where absmax is 0 (an all-zero row stays all zero), and
    NaN or inf where it is (a row holding a NaN or inf gets a non-finite scale, so a non-finite output)."""
    absmax = absmax.to(torch.float32)
    return torch.where(absmax == 0, torch.ones_like(absmax), absmax / FP8_MAX)


def _to_fp8(x32: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale clamped to +-FP8_MAX, rounded to nearest even e4m3 (NaN stays NaN)."""
    return (x32 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_fp8_weight(w: torch.Tensor, scaling: str = "row") -> Fp8Weight:
    """A (K, N) weight in e4m3 with per-tensor or per-output-column (N) fp32 scales; w ~= q * scale.

    Each element's error is at most half an e4m3 step of its binade (2^-4 of its magnitude), or
    scale * 2^-10 for magnitudes in e4m3's subnormal range (below scale * 2^-6).
    """
    _check_scaling("quantize_fp8_weight", scaling)
    w32 = _check_weight("quantize_fp8_weight", w)
    absmax = w32.abs().amax(dim=0) if scaling == "row" else w32.abs().amax().reshape(1)
    scale = fp8_scale(absmax)
    q = _to_fp8(w32.t(), scale[:, None] if scaling == "row" else scale).contiguous().t()
    return Fp8Weight(q, scale, scaling)


def quantize_fp8_activations(x: torch.Tensor, scaling: str = "row") -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) activations in e4m3, row-major, with fp32 scales (1,) or (M,): the torch path's dynamic
    quantisation, run on every call (no checks that would read the device from the host)."""
    x32 = x.to(torch.float32)
    absmax = x32.abs().amax(dim=1) if scaling == "row" else x32.abs().amax().reshape(1)
    scale = fp8_scale(absmax)
    return _to_fp8(x32, scale[:, None] if scaling == "row" else scale), scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dim: int, dtype=torch.float64) -> torch.Tensor:
    """q * scale in `dtype`, the scale per index of dimension `dim` (or one for the whole tensor)."""
    shape = [1, 1]
    shape[dim] = -1
    return q.to(dtype) * scale.to(dtype).reshape(shape if scale.numel() > 1 else (1, 1))


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(K, N) values 0..15 (any integer dtype) -> uint8 (K, N // 2), the even column in the low nibble."""
    q = q.to(torch.uint8)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (K, N // 2) -> uint8 (K, N) values 0..15: the inverse of `pack_int4`."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def check_int4_group(op: str, K: int, group_size: object) -> None:
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"{op}: group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
    if K % group_size:
        raise ValueError(f"{op}: K={K} is not a multiple of group_size={group_size}: every group must be whole "
                         f"(pad K with zero rows, or choose a group size that divides it)")


def quantize_int4(w: torch.Tensor, group_size: int = INT4_GROUP_SIZE, symmetric: bool = False) -> Int4Weight:
    """A (K, N) weight in int4 groups of `group_size` along K, per column; N must be even (packing).

    The scale and zero are rounded to bf16 first and q is chosen against the rounded pair, so the
    stored weight is exactly (q - 8) * scale + zero and each element's error is at most scale / 2
    plus the bf16 rounding of the pair (2^-9 of |zero| + 8 * scale). A group whose values are all
    equal gets a scale of 2^-8 of its magnitude (1 for an all-zero group) and is recovered to bf16.
    """
    w32 = _check_weight("quantize_int4", w)
    K, N = w32.shape
    check_int4_group("quantize_int4", K, group_size)
    if N % 2:
        raise ValueError(f"quantize_int4: N={N} must be even: two int4 weights share a byte along N")
    groups = w32.to(torch.float64).reshape(K // group_size, group_size, N)
    absmax = groups.abs().amax(dim=1)
    floor = torch.where(absmax > 0, absmax * 2.0 ** -8, torch.ones_like(absmax))
    if symmetric:
        scale = torch.maximum(absmax / INT4_SYMMETRIC_MAX, floor).to(torch.bfloat16)
        zero = torch.zeros_like(scale)
    else:
        low, high = groups.amin(dim=1), groups.amax(dim=1)
        scale = torch.maximum((high - low) / INT4_LEVELS, floor).to(torch.bfloat16)
        zero = (low + 8 * scale.to(torch.float64)).to(torch.bfloat16)
    s64, z64 = scale.to(torch.float64)[:, None, :], zero.to(torch.float64)[:, None, :]
    q = (torch.round((groups - z64) / s64) + 8).clamp_(0, INT4_LEVELS).reshape(K, N)
    return Int4Weight(pack_int4(q), scale, zero, group_size, symmetric)


def dequantize_int4(weight: Int4Weight, dtype=torch.float64) -> torch.Tensor:
    """(K, N) (q - 8) * scale + zero in `dtype`."""
    K, N = weight.shape
    q = unpack_int4(weight.packed).to(dtype).reshape(K // weight.group_size, weight.group_size, N)
    w = (q - 8) * weight.scales.to(dtype)[:, None, :] + weight.zeros.to(dtype)[:, None, :]
    return w.reshape(K, N)


def int4_weight_bytes(K: int, N: int, group_size: int) -> int:
    """Bytes of an int4 weight: half a byte per weight, plus a bf16 scale and zero per group per column."""
    return K * N // 2 + 2 * 2 * (K // group_size) * N


def fp8_scale_bytes(rows: int, scaling: str) -> int:
    """Bytes of an operand's fp32 scales: one per row ("row") or one in all ("tensor")."""
    return 4 * (rows if scaling == "row" else 1)
