"""`wattbench selfcheck compile`: cuobjdump parsing, dot detection, verdicts, and the launches it enumerates."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from wattbench import cli
from wattbench.selfcheck.compilation import (DRIVER_FOR_CUDA, TARGETS, CompileResult, Launch, Variant, _enumerate_worker,
                                     _init_worker, dot_instructions, dot_label, driver_note, driver_requirement,
                                     error_line, exit_code, parse_resource_usage, run_check, summarize)

RESOURCE_USAGE = """
Resource usage:
 Common:
  GLOBAL:0
 Function _matmul_kernel:
  REG:255 STACK:392 SHARED:1024 LOCAL:0 CONSTANT[0]:608 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _helper:
  REG:32 STACK:0 SHARED:0 LOCAL:16 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_resource_usage_is_read_per_function():
    usage = parse_resource_usage(RESOURCE_USAGE)
    assert usage["_matmul_kernel"]["REG"] == 255 and usage["_matmul_kernel"]["STACK"] == 392
    assert usage["_helper"] == {"REG": 32, "STACK": 0, "SHARED": 0, "LOCAL": 16, "CONSTANT[0]": 400, "TEXTURE": 0,
                                "SURFACE": 0, "SAMPLER": 0}
    assert "Common" not in usage


@pytest.mark.parametrize("ptx, has_dot, expected", [
    ("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {...}", True, "wgmma"),
    ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {...}", True, "mma"),
    ("fma.rn.f32 %f1, %f2, %f3, %f4;", True, "FMA"),
    ("ld.global.v4.b32 {...}", False, None),
])
def test_dot_instructions_are_named_from_the_ptx(ptx, has_dot, expected):
    assert dot_instructions(ptx, has_dot) == expected


def test_error_line_is_the_message_not_the_source_location():
    class CompilationError(Exception):
        error_message = "\n  Unsupported conversion from 'f8E4M3FN' to 'f16'\n more detail"

    assert error_line(CompilationError("at 12:4:\n    x = tl.load(...)")) == \
        "CompilationError: Unsupported conversion from 'f8E4M3FN' to 'f16'"
    assert error_line(ValueError("\nfirst\nsecond")) == "ValueError: first"


def _variant(name, block, precision="tf32"):
    return Variant(kernel=f"wattbench.kernels.matmul:{name}", arch="sm_89",
                   signature=(("a_ptr", "*fp32"), ("M", "i32"), ("BLOCK_M", "constexpr")),
                   constexprs=(("PRECISION", precision), ("BLOCK_M", block)), aligned=("a_ptr",),
                   options=(("num_warps", 4), ("num_stages", 3)), call=(("PRECISION", precision),),
                   config=(("BLOCK_M", block),))


def test_verdicts_per_kernel_and_launch():
    small, large, broken, lonely = (_variant("k", 32, "ieee"), _variant("k", 128), _variant("k", 256),
                                    _variant("other", 64))
    limit = TARGETS["sm_89"].shared_limit
    results = {small: CompileResult(shared=1000, registers=40, spill_bytes=0, dot="FMA"),
               large: CompileResult(shared=limit + 1, registers=255, spill_bytes=96, dot="mma"),
               broken: CompileResult(error="CompilationError: no"),
               lonely: CompileResult(shared=limit + 5, registers=10, spill_bytes=0, dot=None)}
    launches = [Launch("case a", (small, large, broken), 3), Launch("case b", (lonely,), 1)]
    report = summarize(TARGETS["sm_89"], launches, [], results)
    kernel = report.kernels["matmul.k"]
    assert (kernel.variants, kernel.max_shared, kernel.max_registers) == (3, limit + 1, 255)
    assert kernel.failures == [(broken, "CompilationError: no")]
    assert kernel.spilling == [(large, 96)] and kernel.over_limit == [(large, limit + 1)]
    assert kernel.dots == {"FMA (fp32, TF32 off)": 1, "mma": 1}
    assert [launch.origin for launch in report.unfit] == ["case b"]  # case a has a config that fits
    assert exit_code([report]) == 1


def test_a_clean_target_exits_0_and_spills_alone_do_not_fail():
    spilling = _variant("k", 64)
    results = {spilling: CompileResult(shared=1000, registers=255, spill_bytes=64, dot="mma")}
    report = summarize(TARGETS["sm_90"], [Launch("case", (spilling,), 1)], [], results)
    assert exit_code([report]) == 0 and report.kernels["matmul.k"].spilling


def test_fma_is_explained_only_for_fp32_with_tf32_off():
    assert dot_label(_variant("k", 64, "ieee"), CompileResult(dot="FMA")) == "FMA (fp32, TF32 off)"
    assert dot_label(_variant("k", 64), CompileResult(dot="FMA")) == "FMA"
    assert dot_label(_variant("k", 64), CompileResult(dot="wgmma")) == "wgmma"


def test_variant_description_names_dtype_call_and_config():
    assert _variant("k", 64).describe() == "fp32 PRECISION=tf32 | BLOCK_M=64 w4 s3"


@pytest.fixture(scope="module")
def compile_worker():
    """A spawned worker like the check's: kernels imported with the interpreter off."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=("/nonexistent-cache",)) as pool:
        yield pool


def test_launches_are_enumerated_as_triton_would_specialise_them(compile_worker):
    probes = "^api (adamw_step fp16|matmul_int8w fp16 bias=False M1|matmul fp32 None bias=False infer)$"
    launches, errors = compile_worker.submit(_enumerate_worker, "sm_89", "quick", probes).result()
    assert errors == []
    by_kernel = {launch.variants[0].name: launch for launch in launches}
    assert set(by_kernel) == {"adamw._adamw_kernel", "matmul_int8._matmul_int8w_kernel", "matmul._matmul_kernel"}

    (adamw,) = by_kernel["adamw._adamw_kernel"].variants  # not autotuned: one variant, Triton's default options
    assert str(dict(adamw.call)["DTYPE"]) == "fp16" and dict(adamw.options)["num_warps"] == 4

    int8w = by_kernel["matmul_int8._matmul_int8w_kernel"]
    constants = dict(int8w.variants[0].constexprs)
    assert constants["M"] == 1 and constants["stride_ak"] == 1  # integers equal to 1 become constants
    assert "K" in int8w.variants[0].aligned and "a_ptr" in int8w.variants[0].aligned  # multiples of 16
    assert dict(int8w.variants[0].signature)["q_ptr"] == "*i8"

    matmul = by_kernel["matmul._matmul_kernel"]
    assert all(dict(v.call) == {"HAS_BIAS": False, "ACTIVATION": "none", "STORE_PREACT": False,
                                "PRECISION": "ieee", "UPCAST": False} for v in matmul.variants)
    configs = {(v.config, v.options) for v in matmul.variants}
    assert len(configs) == len(matmul.variants) <= matmul.configs_listed  # one variant per config tried


@pytest.mark.parametrize("capability", [80, 89, 90])
def test_a_driver_too_old_for_tritons_ptxas_is_named(capability):
    cuda, needed = driver_requirement(capability)
    assert needed == DRIVER_FOR_CUDA[int(cuda.split(".")[0])]
    assert "TOO OLD" in driver_note(f"{needed - 1}.86.10", capability)
    assert driver_note(f"{needed}.65.06", capability).endswith(": ok")
    assert f"sm_{capability} cubins with ptxas {cuda}" in driver_note(None, capability)
    assert "unknown" in driver_note(None, capability)


def test_devices_says_when_the_hosts_driver_is_too_old_for_an_h100(monkeypatch):
    """`wattbench devices`: Triton 3.9 assembles sm_90 with a CUDA 13 ptxas, whose cubins need driver 580."""
    import torch

    from wattbench import environment

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    monkeypatch.setattr(environment, "nvidia_driver_version", lambda: "575.57.08")
    cuda, needed = driver_requirement(90)
    note = cli._driver_note(0)
    assert f"sm_90 cubins with ptxas {cuda}" in note
    assert ("driver 575.57.08 is TOO OLD" in note) == (needed > 575)
    monkeypatch.setattr(environment, "nvidia_driver_version", lambda: {"unknown": "no NVIDIA kernel driver"})
    assert cli._driver_note(0).endswith("the host's driver version is unknown")


def test_unknown_target_is_refused_in_one_line(capsys):
    assert cli.main(["selfcheck", "compile", "--arch", "sm_75"]) == 2
    assert "unknown target sm_75" in capsys.readouterr().err


#: What CI compiles for real, end to end (some 90 variants, about a minute on 2 cores): the cases issue 20
#: found, each on the target it was found on. `wattbench selfcheck compile` compiles every variant of every
#: registry GPU case and API probe for all three targets (docs/kernel-performance.md).
PINNED = {
    "sm_80": r"^api attention bf16 D128 causal=True train$",
    "sm_89": r"^api (attention fp32 D128 causal=False train|matmul fp32 None bias=True train)$",
    "sm_90": r"^api (attention bf16 D128 causal=True train|(rms|layer)_norm bf16 N65536 train"
             r"|decode_attention bf16 D128 group8 B1 S32768)$",
}


@pytest.fixture(scope="module")
def pinned():
    """{arch: (exit code, report, printed report)} of one `run_check` of every target's pinned probes."""
    check = run_check(PINNED, "quick", PINNED, workers=2)
    printed = check.text()
    return {arch: (exit_code([report]), report, printed) for arch, report in zip(PINNED, check.reports)}


@pytest.mark.parametrize("arch", PINNED)
def test_pinned_launches_compile_fit_and_do_not_spill(pinned, arch):
    code, report, printed = pinned[arch]
    assert code == 0 and report.failures == 0 and report.unfit == [] and report.drive_errors == [], printed
    over_limit = [v.describe() for k in report.kernels.values() for v, _ in k.over_limit]
    spilling = [v.describe() for k in report.kernels.values() for v, _ in k.spilling]
    assert over_limit == [] and spilling == [], printed
    assert f"{arch}: {report.variants} variants of {len(report.kernels)} kernels, 0 failed, 0 spill" in printed


def _kernel(pinned, arch, name):
    return pinned[arch][1].kernels[name]


def test_fp32_attention_backward_at_d128_fits_an_l4(pinned):
    """Issue 20 case 1: the fp32 (TF32 off) backward at D=128 once needed 104 KB; an L4 has 99 KB per block."""
    for name in ("attention._attention_bwd_dkdv_kernel", "attention._attention_bwd_dq_kernel"):
        kernel = _kernel(pinned, "sm_89", name)
        assert kernel.variants > 0 and set(kernel.dots) == {"FMA (fp32, TF32 off)"}
        assert kernel.max_shared <= TARGETS["sm_89"].shared_limit


def test_fp32_gemm_tries_only_small_fma_tiles_that_fit_an_l4(pinned):
    """Cases 2 and 3: fp32 with TF32 off runs FMA loops; the 16-bit tiles spilled and needed 192 KB there."""
    matmul = _kernel(pinned, "sm_89", "matmul._matmul_kernel")
    assert set(matmul.dots) == {"FMA (fp32, TF32 off)"}
    assert matmul.max_shared <= TARGETS["sm_89"].shared_limit and matmul.spilling == []


def test_16bit_attention_at_d128_gets_wide_8_warp_tiles_without_spills(pinned):
    """Case 7: 128x128 forward tiles on 8 warps (sm_80 and Hopper) and 128-wide key blocks, none spilling;
    on Hopper the dots are wgmma."""
    for arch in ("sm_80", "sm_90"):
        forward = pinned[arch][1].launches_of("attention._attention_fwd_kernel")
        tiles = {(dict(v.config)["BLOCK_M"], dict(v.config)["BLOCK_N"], dict(v.options)["num_warps"])
                 for launch in forward for v in launch.variants}
        assert {(128, 128, 8), (64, 128, 8)} <= tiles, arch
    assert _kernel(pinned, "sm_90", "attention._attention_fwd_kernel").dots.keys() == {"wgmma"}


def test_norms_at_their_widest_hidden_size_do_not_spill(pinned):
    """Case 4: at N=65536 every norm config spilled; the rows are now processed in MAX_BLOCK-wide blocks."""
    from wattbench.kernels.norms import MAX_BLOCK

    kernels = {name: k for name, k in pinned["sm_90"][1].kernels.items() if name.startswith("norms.")}
    assert set(kernels) == {"norms._norm_forward_kernel", "norms._norm_row_sums_kernel", "norms._norm_backward_kernel"}
    assert all(k.spilling == [] for k in kernels.values())
    blocks = {dict(v.call)["BLOCK_N"] for launch in pinned["sm_90"][1].launches_of(*kernels) for v in launch.variants}
    assert blocks == {MAX_BLOCK}


def test_decode_merges_the_most_splits_a_block_at_a_time_without_spills(pinned):
    """Case 5: one 32K sequence on one cache head splits 256 ways on an H100; the merge once held them all.
    Case 6: decode-sized dots run mma.sync on Hopper too (no wgmma at 16 rows; docs/kernel-performance.md)."""
    merge = _kernel(pinned, "sm_90", "decode_attention._decode_merge_kernel")
    assert merge.spilling == [] and merge.max_registers < 128
    (launch,) = pinned["sm_90"][1].launches_of("decode_attention._decode_merge_kernel")
    assert dict(launch.variants[0].call)["BLOCK_SPLITS"] == 32
    assert set(_kernel(pinned, "sm_90", "decode_attention._decode_split_kernel").dots) == {"mma"}
