"""Shared checks for kernel correctness tests: seeded inputs, float64 references.

Every kernel test compares against its PyTorch reference evaluated in float64, by relative
norm error ||actual - expected|| / ||expected||, with a tolerance per dtype. NaN or inf in
the actual result never passes.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

from wattbench.kernels import INTERPRETED

#: Relative-norm tolerances for results computed in each dtype (interpreter and GPU alike).
REL_TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}

#: For gradients rounded to the dtype twice (a saved tensor, then the gradient itself), which
#: Triton's interpreter does toward zero for fp32 -> bf16, not to nearest.
GRAD_TOL = {dtype: 2 * tol for dtype, tol in REL_TOL.items()}

BF16_DOT_SKIP_REASON = (
    "Triton's interpreter computes tl.dot on bfloat16 operands wrongly (it multiplies the raw "
    "bit patterns; triton-lang/triton#11584): bf16 dot paths are tested on a GPU only"
)

DEVICE = torch.device("cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda")


def skip_if_bf16_dot_interpreted(dtype: torch.dtype) -> None:
    if INTERPRETED and dtype == torch.bfloat16:
        pytest.skip(BF16_DOT_SKIP_REASON)


def seed_for(name: str) -> int:
    """A fresh seed per run (printed, so a failure can be replayed with WATTBENCH_TEST_SEED)."""
    base = int(os.environ.get("WATTBENCH_TEST_SEED", str(int.from_bytes(os.urandom(4), "little"))))
    seed = (base + zlib.crc32(name.encode())) % 2**31
    print(f"seed for {name}: WATTBENCH_TEST_SEED={base} -> {seed}")
    return seed


def generator_for(name: str) -> torch.Generator:
    """A CPU generator seeded with `seed_for(name)`."""
    return torch.Generator().manual_seed(seed_for(name))


def randn(*shape, dtype=torch.float32, generator=None, scale=1.0) -> torch.Tensor:
    """Random normal values on the test device (never zeros)."""
    return (torch.randn(*shape, generator=generator, dtype=torch.float32) * scale).to(DEVICE, dtype)


def float64_leaf(t: torch.Tensor) -> torch.Tensor:
    """A float64 copy of `t` that requires grad, detached from `t`'s graph, to run the reference on."""
    return t.detach().to(torch.float64).requires_grad_()


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual64 = actual.detach().to(torch.float64)
    expected64 = expected.detach().to(torch.float64)
    if not torch.isfinite(actual64).all():
        return float("inf")
    denom = expected64.norm().item()
    diff = (actual64 - expected64).norm().item()
    return diff / denom if denom > 0 else diff


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, name: str = "output",
                     tol: float | None = None) -> None:
    """Fail unless `actual` is finite and within the dtype's relative-norm tolerance of `expected`."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    limit = REL_TOL[dtype] if tol is None else tol
    err = rel_error(actual, expected)
    bad = (~torch.isfinite(actual.detach())).sum().item()
    assert err <= limit, f"{name}: relative error {err:.3g} > {limit:.1g} ({bad} non-finite elements)"
