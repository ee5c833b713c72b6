"""The `compiled` impl: torch.compile (Inductor's C++ backend on this CPU) of the torch path, compiled when the
step is built, its settings and wall time recorded; a failure names the error's first line."""

import pytest
import torch

from wattbench.compiled import CompileFailure, compile_mode, compiled
from wattbench.device import Device
from wattbench.workloads import Context, case_by_id, cases, workloads

ON_CPU = Device("cpu", None, "cpu")
GPU = Device("cuda", 0, "Simulated H100")


def test_a_compiled_gemm_runs_for_real_on_the_cpu_and_matches_the_torch_path():
    compiled_step = case_by_id("gemm.infer-compiled-fp32-M16-K512-N512").build(ON_CPU, 0)
    reference = case_by_id("gemm.infer-torch-fp32-M16-K512-N512").build(ON_CPU, 0)
    torch.testing.assert_close(compiled_step(), reference())
    metrics = compiled_step.metrics()
    assert metrics["compile"] == {"mode": "default", "backend": "inductor"}
    assert metrics["compile_s"] > 0


def test_a_failure_fails_the_case_with_the_errors_first_line():
    def torch_impl(inputs):
        def step():
            raise ValueError("shapes do not match\nthe rest of a long message")
        return step

    with pytest.raises(CompileFailure, match=r"^torch.compile \(default\) failed: ValueError: shapes do not match$"):
        compiled(torch_impl)({"context": Context(ON_CPU)})


def test_max_autotune_in_the_full_preset_on_gpus_only():
    assert compile_mode(Context(GPU, preset="full")) == "max-autotune-no-cudagraphs"
    assert compile_mode(Context(GPU, preset="quick")) == "default"
    assert compile_mode(Context(ON_CPU, preset="full")) == "default"


def test_a_cpu_compiles_only_a_few_cases_a_gpus_full_preset_one_per_op_and_two_model_points():
    on_cpu = {case.id for case in cases("quick", ON_CPU) if case.impl == "compiled"}
    assert on_cpu == {"gemm.infer-compiled-fp32-M16-K512-N512", "rms_norm.infer-compiled-fp32-M64-N512",
                      "llm.decode-compiled-fp32-tiny-B4-P32-T4"}
    on_gpu = cases("full", GPU)  # the GPU quick preset is a subset without it (wattbench.workloads.presets)
    torch_cases = {case.id.replace("-torch-", "-") for case in on_gpu if case.impl == "torch"}
    compiled = [case for case in on_gpu if case.impl == "compiled"]
    assert {case.id.replace("-compiled-", "-") for case in compiled} <= torch_cases
    compiled_workloads = {w.name for w in workloads() if "compiled" in w.impls}
    assert {case.workload.name for case in compiled} == compiled_workloads
    assert {"gemm.infer", "gemm.train", "rms_norm.train", "attention.infer", "llm.decode"} <= compiled_workloads
    assert {case.precision for case in compiled} == {"bf16"}  # the dense precision only (presets.py)
    for name in compiled_workloads - {"llm.decode"}:
        ours = [case for case in compiled if case.workload.name == name]
        largest = max((c for c in on_gpu if c.workload.name == name), key=lambda c: c.workload.flops(c.size.params))
        assert [case.size.name for case in ours] == [largest.size.name], name
    assert {case.size.params["B"] for case in compiled if case.workload.name == "llm.decode"} == {1, 64}


def test_every_case_compiles_afresh_past_dynamos_recompile_limit(monkeypatch):
    """More cases of one workload than Dynamo's recompile limit: the last still runs compiled code."""
    monkeypatch.setattr(torch._dynamo.config, "cache_size_limit", 2)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2, raising=False)
    calls = []

    def torch_impl(inputs):
        x = inputs["x"]

        def step():
            calls.append(torch.compiler.is_compiling())  # True while Dynamo traces: the step is compiled
            return x * 2
        return step

    for n in range(1, 5):
        calls.clear()
        compiled(torch_impl)({"context": Context(ON_CPU), "x": torch.ones(n)})
        assert calls == [True]
