"""`wattbench selfcheck compile`: cuobjdump parsing, dot detection, verdicts, and the launches it enumerates."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from wattbench import cli
from wattbench.compile_check import (TARGETS, CompileResult, Launch, Variant, _enumerate_worker, _init_worker,
                                     dot_instructions, dot_label, error_line, exit_code, parse_resource_usage,
                                     summarize)

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


def test_unknown_target_is_refused_in_one_line(capsys):
    assert cli.main(["selfcheck", "compile", "--arch", "sm_75"]) == 2
    assert "unknown target sm_75" in capsys.readouterr().err
