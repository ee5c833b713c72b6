"""A linear layer's GEMM: training-style (forward + both backward GEMMs, many tokens) and
inference-style (forward only, decode-sized M). Useful work is counted in tokens (rows of M).

Inference runs one precision family: dense (fp32, bf16, fp16), FP8 ("fp8": e4m3 weights with per-column
scales, bf16 activations quantised per row in every call, bf16 out; capability 8.9 and newer), weight-only
int8 and int4 ("int8w-*", "int4w-*": groups of 128, dequantised in the kernel) and, where this torch build
supports it on the GPU (probed), a 2:4 pruned weight through PyTorch's semi-structured sparsity ("sp24-*",
torch path only). Each quantised case records its accuracy guard (wattbench.accuracy): the relative error of
its output against the dense GEMM of the unquantised weight on the same inputs (bf16 on a GPU, fp32 on a
CPU), and the torch path that ran (`reference_path`, e.g. "torch._scaled_mm" or "dequantise-then-matmul").
"""

from __future__ import annotations

import functools
from functools import partial
import torch

from wattbench.compiled import COMPILED, compiled
from wattbench.device import Device
from wattbench.kernels.matmul import matmul, matmul_bytes, matmul_flops, matmul_reference
from wattbench.kernels.accuracy import gemm_accuracy
from wattbench.kernels.matmul_fp8 import (FP8_REFERENCES, check_fp8_device, fp8_reference_path, matmul_fp8,
                                          matmul_fp8_bytes)
from wattbench.kernels.matmul_int4 import (int4_reference_path, matmul_int4w, matmul_int4w_bytes,
                                           matmul_int4w_reference, prepare_int4_reference)
from wattbench.kernels.matmul_int8 import matmul_int8w, matmul_int8w_bytes, matmul_int8w_reference, quantize_int8
from wattbench.kernels.quantize import INT4_GROUP_SIZE, quantize_fp8_weight, quantize_int4
from wattbench.kernels.targets import UnsupportedDevice
from wattbench.accuracy import guard_fields
from wattbench.precision import Precision
from wattbench.workloads import (Inputs, Params, Size, Step, Workload, element_size, m_rows,
                                 randn, register)

TRAIN_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}
INFER_PRECISIONS = {"cpu": ("fp32", "bf16", "fp8", "int8w-fp32", "int4w-fp32"),
                    "cuda": ("fp32", "bf16", "fp16", "fp8", "int8w-bf16", "int4w-bf16", "sp24-bf16")}
#: FP8's scale granularity in these workloads: per weight column and per activation row (per-tensor scales
#: are the kernels' other option; docs/kernel-performance.md measures both at the same accuracy).
FP8_SCALING = "row"


def _layer_inputs(params: Params, precision: str, device: torch.device,
                  generator: torch.Generator, train: bool) -> Inputs:
    M, K, N = params["M"], params["K"], params["N"]
    draw = partial(randn, generator, device, Precision.parse(precision).tensor_dtype)
    inputs = {"x": draw(M, K), "w": draw(K, N, scale=K ** -0.5), "bias": draw(N, scale=0.1),
              "format": weight_format(precision)}
    if inputs["format"] != "dense":  # the unquantised weight, for the accuracy guard
        inputs["w_dense"] = inputs["w"]
    if inputs["format"] == "fp8":
        inputs["w"] = quantize_fp8_weight(inputs["w"], FP8_SCALING)
    elif inputs["format"] == "int4w":
        inputs["w"] = quantize_int4(inputs["w"], INT4_GROUP_SIZE)
    elif inputs["format"] == "int8w":
        inputs["w"] = quantize_int8(inputs["w"])
    elif inputs["format"] == "sp24":
        inputs["w"] = torch.sparse.to_sparse_semi_structured(prune_2_4(inputs["w"]).t().contiguous())
    if train:
        for name in ("x", "w", "bias"):  # training is dense only
            inputs[name].requires_grad_(True)
        inputs["grad_out"] = draw(M, N)
    return inputs


def _train_step(linear):
    def build(inputs: Inputs) -> Step:
        x, w, bias, grad_out = inputs["x"], inputs["w"], inputs["bias"], inputs["grad_out"]

        def step():
            x.grad = w.grad = bias.grad = None
            out = linear(x, w, bias)
            out.backward(grad_out)
            return out, x.grad, w.grad

        return step

    return build


def prune_2_4(w: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights of every 4 consecutive along K, for each output column."""
    K, N = w.shape
    groups = w.t().reshape(N, K // 4, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return (groups * mask).reshape(N, K).t()


def _sparse_linear(x, w_sparse, bias):
    """x (M, K) @ W, where W is stored as its (N, K) transpose in 2:4 semi-structured form."""
    return torch.nn.functional.linear(x, w_sparse, bias)


INFER_LINEARS = {
    "torch": {"dense": matmul_reference, "int8w": lambda x, w, bias: matmul_int8w_reference(x, *w, bias),
              "sp24": _sparse_linear, "int4w": matmul_int4w_reference, **FP8_REFERENCES},
    "triton": {"dense": matmul, "int8w": lambda x, w, bias: matmul_int8w(x, *w, bias), "fp8": matmul_fp8,
               "int4w": matmul_int4w},
}


def weight_format(precision: str) -> str:
    """'dense', 'fp8', 'int8w', 'int4w' or 'sp24': which linear of INFER_LINEARS runs the precision."""
    return Precision.parse(precision).weight_format


def reference_path(impl: str, inputs: Inputs) -> str:
    """The label of what a quantised case's linear runs: the Triton kernel, or the torch path this device has
    (for fp8 also its key in INFER_LINEARS["torch"])."""
    if impl == "triton":
        return "triton"
    x, w, form = inputs["x"], inputs["w"], inputs["format"]
    if form == "fp8":
        return fp8_reference_path(x.device, w.scaling, *w.shape)
    if form == "int4w":
        return int4_reference_path(x.device, x.dtype, *w.shape, w.group_size)
    return {"int8w": "dequantise-then-matmul", "sp24": "torch.sparse semi-structured"}[form]


def _prepared(impl: str, inputs: Inputs):
    """The weight as the linear takes it: the torch int4 path's layout (tinygemm's where the device runs it) is
    made once, here, outside the step."""
    if impl != "triton" and inputs["format"] == "int4w":
        return prepare_int4_reference(inputs["w"], inputs["x"].dtype)
    return inputs["w"]


def _infer_step(impl):
    def build(inputs: Inputs) -> Step:
        x, bias, w = inputs["x"], inputs["bias"], _prepared(impl, inputs)
        form = inputs["format"]
        path = reference_path(impl, inputs) if form != "dense" else None
        linear = INFER_LINEARS[impl][path if impl == "torch" and form == "fp8" else form]
        if "w_dense" in inputs:
            w_dense = inputs["w_dense"]
            inputs["guard"] = lambda out: guard_fields({"accuracy": gemm_accuracy(out, x, w_dense, bias)}, path)

        def step():
            with torch.no_grad():
                return linear(x, w, bias)

        return step

    return build


def _infer_skip(impl: str, precision: str, device: Device) -> str | None:
    if weight_format(precision) == "fp8" and device.type == "cuda":
        try:
            check_fp8_device(device.torch)
        except UnsupportedDevice as exc:
            return str(exc)
        except (AssertionError, RuntimeError):  # no CUDA in this torch build (a plan or a compile check of a GPU
            pass  # run): the capability is unknown here, and the kernel refuses an unfit GPU when it launches
    if weight_format(precision) != "sp24":
        return None
    if impl == "triton":
        return "the kernel library has no Triton 2:4 sparse GEMM; the sparse case runs on the torch path only"
    if device.type != "cuda":
        return "2:4 semi-structured sparsity needs a CUDA device"
    reason = sparse_24_unsupported(device.torch)
    return None if reason is None else f"this torch build cannot run 2:4 sparse GEMMs on {device.name}: {reason}"


@functools.cache
def sparse_24_unsupported(device: torch.device) -> str | None:
    """Why a 2:4 sparse GEMM fails on `device` (the exception's first line), or None when it runs.

    Found by running one: support depends on the torch build's backend, not only on the compute
    capability (torch 2.4's default CUTLASS kernels take 8.x only, and its bundled cuSPARSELt
    refused Hopper: pytorch#132009, #132928)."""
    try:
        dense = prune_2_4(torch.randn(128, 128, device=device, dtype=torch.bfloat16)).t().contiguous()
        sparse = torch.sparse.to_sparse_semi_structured(dense)
        torch.nn.functional.linear(torch.randn(32, 128, device=device, dtype=torch.bfloat16), sparse)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001  whatever the build raises is the reason to skip
        return f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
    return None


def _infer_bytes(p, precision):
    M, N, K = p["M"], p["N"], p["K"]
    size = element_size(precision)
    if weight_format(precision) == "fp8":
        return matmul_fp8_bytes(M, N, K, FP8_SCALING, bias=True)
    if weight_format(precision) == "int4w":
        return matmul_int4w_bytes(M, N, K, size, INT4_GROUP_SIZE, bias=True)
    if weight_format(precision) == "int8w":
        return matmul_int8w_bytes(M, N, K, size, bias=True)
    if weight_format(precision) == "sp24":  # half the weights, plus 2-bit metadata per kept value
        return (M * K + M * N + N) * size + K * N // 2 * size + K * N // 8
    return matmul_bytes(M, N, K, size, bias=True)


def _train_flops(p):
    forward = matmul_flops(p["M"], p["N"], p["K"], bias=True)
    grad_x_and_w = 2 * matmul_flops(p["M"], p["N"], p["K"])
    return forward + grad_x_and_w + p["M"] * p["N"]  # + the bias gradient's reduction


def _train_bytes(p, precision):
    """Forward GEMM, dX = dY W^T and dW = X^T dY each move their operands once, plus the bias path."""
    size = element_size(precision)
    return 3 * matmul_bytes(p["M"], p["N"], p["K"], size) + 2 * p["N"] * size


register(Workload(
    name="gemm.train",
    op="gemm",
    style="train",
    unit="tokens",
    sizes=(
        Size({"M": 256, "K": 128, "N": 128}, devices=("cpu",)),
        Size({"M": 1024, "K": 256, "N": 256}, presets=("full",), devices=("cpu",)),
        Size({"M": 8192, "K": 4096, "N": 4096}, devices=("cuda",)),
        Size({"M": 16384, "K": 8192, "N": 8192}, presets=("full",), devices=("cuda",)),
    ),
    precisions=TRAIN_PRECISIONS,
    make_inputs=lambda p, precision, device, gen: _layer_inputs(p, precision, device, gen, train=True),
    impls={"torch": _train_step(matmul_reference), "triton": _train_step(matmul),
           COMPILED: compiled(_train_step(matmul_reference))},
    cpu_impls={COMPILED: ()},  # on a CPU, the compiled GEMM is the inference one's
    units_per_call=m_rows,
    flops=_train_flops,
    bytes=_train_bytes,
))

register(Workload(
    name="gemm.infer",
    op="gemm",
    style="infer",
    unit="tokens",
    sizes=(
        Size({"M": 1, "K": 512, "N": 512}, devices=("cpu",)),
        Size({"M": 16, "K": 512, "N": 512}, devices=("cpu",)),
        Size({"M": 4, "K": 1024, "N": 1024}, presets=("full",), devices=("cpu",)),
        Size({"M": 64, "K": 1024, "N": 1024}, presets=("full",), devices=("cpu",)),
        Size({"M": 1, "K": 4096, "N": 4096}, devices=("cuda",)),
        Size({"M": 16, "K": 4096, "N": 4096}, devices=("cuda",)),
        Size({"M": 64, "K": 4096, "N": 4096}, devices=("cuda",)),
        Size({"M": 4, "K": 8192, "N": 8192}, presets=("full",), devices=("cuda",)),
        Size({"M": 64, "K": 8192, "N": 8192}, presets=("full",), devices=("cuda",)),
    ),
    precisions=INFER_PRECISIONS,
    make_inputs=lambda p, precision, device, gen: _layer_inputs(p, precision, device, gen, train=False),
    impls={"torch": _infer_step("torch"), "triton": _infer_step("triton"), COMPILED: compiled(_infer_step("torch"))},
    units_per_call=m_rows,
    flops=lambda p: matmul_flops(p["M"], p["N"], p["K"], bias=True),
    bytes=_infer_bytes,
    skip=_infer_skip,
    cpu_impls={COMPILED: ("fp32-M16-K512-N512",)},
))
