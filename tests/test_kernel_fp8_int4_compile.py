"""The FP8 and INT4 GEMMs compile ahead of time for their GPU targets, on this CPU, with Triton's compiler.

One config per kernel per target, as a GPU would try it (the kernels' own pruning for the target):
FP8's GEMM and activation quantiser for sm_89 and sm_90, INT4's GEMM for sm_80, sm_89 and sm_90. Each
compiles, fits the target's shared memory, does not spill, and its dots use the instructions meant:
e4m3 MMAs (wgmma on sm_90, mma.sync on sm_89) for FP8, tensor cores for INT4. Every config, at decode
and prefill sizes, is for `wattbench selfcheck compile` (which drives the registry's cases and the API
probes); this test pins the instruction choice, which that check's summary does not break down by type.
"""

from __future__ import annotations

import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from wattbench.selfcheck.compilation import TARGETS, _init_worker

K = N = 4096


def _launch(kernel: str, M: int):
    """Call an entry point on meta tensors (as `wattbench selfcheck compile` does): its launches get recorded."""
    import torch

    from wattbench.kernels.matmul_fp8 import matmul_fp8
    from wattbench.kernels.matmul_int4 import matmul_int4w
    from wattbench.kernels.quantize import Fp8Weight, Int4Weight

    def meta(*shape, dtype):
        return torch.empty(shape, device="meta", dtype=dtype)

    x, bias = meta(M, K, dtype=torch.bfloat16), meta(N, dtype=torch.bfloat16)
    if kernel == "fp8":
        matmul_fp8(x, Fp8Weight(meta(N, K, dtype=torch.float8_e4m3fn).t(), meta(N, dtype=torch.float32), "row"), bias)
    else:
        groups = meta(K // 128, N, dtype=torch.bfloat16)
        matmul_int4w(x, Int4Weight(meta(K, N // 2, dtype=torch.uint8), groups, groups, 128, False), bias)


def compile_first_configs(arch: str, kernel: str, M: int) -> list[dict]:
    """In a worker with the interpreter off: each launch's first config compiled for `arch` as the check compiles
    it, with its shared memory, spills (cuobjdump) and the PTX's MMA instructions."""
    from wattbench.selfcheck.compilation import LaunchRecorder, compile_kernel, fake_gpu, resource_usage

    target = TARGETS[arch]
    recorder = LaunchRecorder(target)
    with fake_gpu(target, recorder):
        _launch(kernel, M)
    results = []
    for launch in recorder.launches:
        variant = launch.variants[0]
        compiled = compile_kernel(variant)
        usage = resource_usage(compiled)
        mma = sorted(set(re.findall(r"\b(wgmma\.mma_async\S*|mma\.sync\S*)", compiled.asm["ptx"])))
        results.append({"kernel": variant.name, "config": variant.describe(), "shared": compiled.metadata.shared,
                        "spills": usage.get("STACK", 0) + usage.get("LOCAL", 0), "mma": mma})
    return results


#: (target, kernel, M): prefill-sized FP8 (wgmma's 64-row tiles on sm_90), decode-sized INT4 (M = 1).
CASES = [("sm_89", "fp8", 4096), ("sm_90", "fp8", 4096), ("sm_80", "int4", 1), ("sm_89", "int4", 1),
         ("sm_90", "int4", 1)]


@pytest.fixture(scope="module")
def compiled():
    with tempfile.TemporaryDirectory(prefix="wattbench-triton-cache-") as cache, \
            ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=get_context("spawn"),
                                initializer=_init_worker, initargs=(cache,)) as pool:
        futures = {case: pool.submit(compile_first_configs, *case) for case in CASES}
        yield {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[1]}-{case[0]}-M{case[2]}")
def test_compiles_fits_and_does_not_spill(compiled, case):
    arch, kernel, _ = case
    results = compiled[case]
    expected = {"fp8": {"matmul_fp8._fp8_quantize_kernel", "matmul_fp8._matmul_fp8_kernel"},
                "int4": {"matmul_int4._matmul_int4w_kernel"}}[kernel]
    assert {r["kernel"] for r in results} == expected
    for r in results:
        assert r["shared"] <= TARGETS[arch].shared_limit and r["spills"] == 0, r


def _gemm(results):
    return next(r for r in results if "_matmul_" in r["kernel"])


def test_hopper_fp8_runs_on_e4m3_wgmma(compiled):
    mma = _gemm(compiled[("sm_90", "fp8", 4096)])["mma"]
    assert mma and all(m.startswith("wgmma.mma_async") and ".e4m3.e4m3" in m for m in mma), mma


def test_ada_fp8_runs_on_e4m3_mma_sync(compiled):
    mma = _gemm(compiled[("sm_89", "fp8", 4096)])["mma"]
    assert mma and all(m.startswith("mma.sync") and ".e4m3.e4m3" in m for m in mma), mma


@pytest.mark.parametrize("arch", ["sm_80", "sm_89", "sm_90"])
def test_int4_decode_runs_on_bf16_tensor_cores(compiled, arch):
    """A 16-row decode tile: mma.sync everywhere (wgmma needs 64 rows), on bf16 operands."""
    mma = _gemm(compiled[(arch, "int4", 1)])["mma"]
    assert mma and all(m.startswith("mma.sync") and ".bf16.bf16" in m for m in mma), mma
