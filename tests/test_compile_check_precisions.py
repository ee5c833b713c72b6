"""`wattbench selfcheck compile` and the precision family: the FP8 and INT4 API probes are enumerated per target,
and FP8's refusal of sm_80 is reported as not on that target, not as a failure."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from wattbench.selfcheck.compilation import (TARGETS, CompileCheck, DriveError, _enumerate_worker, _init_worker,
                                             api_probes, exit_code, summarize)


def test_the_probes_cover_both_scalings_every_int4_dtype_and_group():
    labels = {label for label, _ in api_probes()}
    fp8 = {label for label in labels if label.startswith("api matmul_fp8 ")}
    int4 = {label for label in labels if label.startswith("api matmul_int4w ")}
    assert len(fp8) == 2 * 3 * 2 and "api matmul_fp8 tensor M4096 bias=False" in fp8
    assert len(int4) == 3 * 2 * 3 * 2 and "api matmul_int4w fp16 group32 M1 bias=True" in int4


def test_a_refused_target_is_not_a_failure():
    refused = DriveError("api matmul_fp8 row M1 bias=False", "matmul_fp8: e4m3 tensor cores need 8.9", unsupported=True)
    report = summarize(TARGETS["sm_80"], [], [refused], {})
    assert exit_code([report]) == 0
    text = CompileCheck([report], "full", 1.0, 1.0, 1).text()
    assert "not on this target: api matmul_fp8 row M1 bias=False" in text
    assert "0 drive errors" in text and "DRIVE ERROR" not in text
    broken = summarize(TARGETS["sm_80"], [], [refused, DriveError("case", "KeyError: 'x'")], {})
    assert exit_code([broken]) == 1


@pytest.fixture(scope="module")
def compile_worker():
    """A spawned worker like the check's: kernels imported with the interpreter off."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=("/nonexistent-cache",)) as pool:
        yield pool


@pytest.mark.parametrize("arch, refused", [("sm_80", True), ("sm_89", False), ("sm_90", False)])
def test_fp8_probes_launch_on_sm89_and_newer_only(compile_worker, arch, refused):
    launches, errors = compile_worker.submit(_enumerate_worker, arch, "quick",
                                             "^api matmul_fp8 row M16 bias=True$").result()
    if refused:
        assert launches == [] and len(errors) == 1 and errors[0].unsupported and "8.9" in errors[0].message
    else:
        assert errors == []
        kernels = {launch.variants[0].name for launch in launches}
        assert kernels == {"matmul_fp8._fp8_quantize_kernel", "matmul_fp8._matmul_fp8_kernel"}


def test_int4_probes_launch_on_sm80(compile_worker):
    launches, errors = compile_worker.submit(_enumerate_worker, "sm_80", "quick",
                                             "^api matmul_int4w fp32 group32 M1 bias=True$").result()
    assert errors == []
    (launch,) = launches
    assert launch.variants[0].name == "matmul_int4._matmul_int4w_kernel"
    assert {dict(v.constexprs)["GROUP_SIZE"] for v in launch.variants} == {32}
