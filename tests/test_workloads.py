"""One workload declaration: every case builds a Step whose hooks need no `hasattr`; ops are a factory of Workloads."""

import torch

from wattbench.device import detect
from wattbench.workloads import FunctionStep, Size, Step, Workload, case_by_id, workloads
from wattbench.workloads.ops import op_workloads

CPU = detect("cpu")


def test_a_plain_function_impl_becomes_a_step_with_no_op_hooks():
    step = case_by_id("gemm.infer-torch-fp32-M1-K512-N512").build(CPU, 0)
    assert isinstance(step, FunctionStep)
    assert step().shape == (1, 512)
    step.reset()
    assert step.metrics() == {} and step.energy_metrics({"joules_per_unit": 1.0}) == {}


def test_a_step_that_records_keeps_its_own_hooks():
    step = case_by_id("llm.generate-torch-fp32-tiny-B2-P32-T4").build(CPU, 0)
    assert isinstance(step, Step) and not isinstance(step, FunctionStep)
    step()
    assert step.metrics()["requests"] == 2
    step.reset()
    assert step.metrics()["requests"] == 0


def test_an_op_makes_a_training_and_an_inference_workload_of_the_same_declaration():
    sizes = (Size({"M": 8, "N": 16}, devices=("cpu",)),)
    train, infer = op_workloads("rms_norm", "tokens",
                                lambda p, dtype, device, gen, train: (torch.ones(p["M"], p["N"], requires_grad=train),
                                                                      torch.ones(p["N"], requires_grad=train)),
                                lambda p: p["M"], flops=lambda p, train: 3 if train else 1,
                                bytes=lambda p, train, element: element * (2 if train else 1),
                                train_sizes=sizes, infer_sizes=sizes)
    assert isinstance(train, Workload) and (train.name, infer.name) == ("rms_norm.train", "rms_norm.infer")
    assert (train.flops(sizes[0].params), infer.flops(sizes[0].params)) == (3, 1)
    assert (train.bytes(sizes[0].params, "fp32"), infer.bytes(sizes[0].params, "bf16")) == (8, 2)
    assert {"torch", "triton"} <= set(train.impls)  # the kernel against its torch reference


def test_every_registered_op_workload_is_a_plain_workload():
    names = {w.name for w in workloads()}
    assert {"rms_norm.train", "rms_norm.infer", "decode_attention.infer", "adamw_step.train"} <= names
    assert "decode_attention.train" not in names  # an op without training sizes has no training workload
