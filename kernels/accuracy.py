"""The accuracy guard's measure for a GEMM: how far a quantised product lands from the dense one.

A quantised case's output is compared with the dense GEMM of the same (unquantised) inputs, computed
in the suite's reference dtype: bf16 on a GPU, fp32 on a CPU. The distance is the relative Frobenius
error ||out - ref|| / ||ref||, in float64, so one number covers every shape; an output with a NaN or
inf is infinitely far. Typical figures on Gaussian inputs, K = 4096 (tests/test_kernel_fp8.py and
test_kernel_int4.py pin looser bounds): e4m3 per-row or per-tensor about 4%; int4 groups of 128
about 10% (asymmetric) to 12% (symmetric), most of it the weight's rounding.
"""

from __future__ import annotations

import torch


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64; inf if `actual` is not all finite; the absolute
    error ||actual|| when `expected` is all zeros."""
    if actual.shape != expected.shape:
        raise ValueError(f"relative_error: shapes differ: {tuple(actual.shape)} and {tuple(expected.shape)}")
    actual64, expected64 = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.isfinite(actual64).all():
        return float("inf")
    diff = (actual64 - expected64).norm().item()
    scale = expected64.norm().item()
    return diff / scale if scale > 0 else diff


def reference_dtype(device: torch.device) -> torch.dtype:
    """The dense reference's dtype: bf16 on a GPU (what the quantised precisions replace), fp32 on a CPU."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def dense_gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) @ w (K, N) [+ bias] in the reference dtype of x's device: what a quantised GEMM is held to."""
    dtype = reference_dtype(x.device)
    x, w = x.to(dtype), w.to(dtype)
    return torch.addmm(bias.to(dtype), x, w) if bias is not None else x @ w


def gemm_accuracy(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> float:
    """The relative error of a quantised GEMM's `out` against `dense_gemm(x, w, bias)` on the same inputs."""
    return relative_error(out, dense_gemm(x, w, bias))
