"""A linear layer's GEMM: training-style (forward + both backward GEMMs, many tokens) and
inference-style (forward only, decode-sized M). Useful work is counted in tokens (rows of M).
"""

from __future__ import annotations

from typing import Mapping

import torch

from wattbench.kernels.matmul import matmul, matmul_bytes, matmul_flops, matmul_reference
from wattbench.workloads import Inputs, Size, Step, Workload, activation_dtype, register

PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}


def _element_size(precision: str) -> int:
    return torch.empty((), dtype=activation_dtype(precision)).element_size()


def _layer_inputs(params: Mapping[str, int], precision: str, device: torch.device,
                  generator: torch.Generator, train: bool) -> Inputs:
    M, K, N = params["M"], params["K"], params["N"]
    dtype = activation_dtype(precision)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device=device, generator=generator) * scale).to(dtype)

    inputs = {"x": randn(M, K), "w": randn(K, N, scale=K ** -0.5), "bias": randn(N, scale=0.1)}
    if train:
        for name in ("x", "w", "bias"):
            inputs[name].requires_grad_(True)
        inputs["grad_out"] = randn(M, N)
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


def _infer_step(linear):
    def build(inputs: Inputs) -> Step:
        x, w, bias = inputs["x"], inputs["w"], inputs["bias"]

        def step():
            with torch.no_grad():
                return linear(x, w, bias)

        return step

    return build


def _train_flops(p):
    forward = matmul_flops(p["M"], p["N"], p["K"], bias=True)
    grad_x_and_w = 2 * matmul_flops(p["M"], p["N"], p["K"])
    return forward + grad_x_and_w + p["M"] * p["N"]  # + the bias gradient's reduction


def _train_bytes(p, precision):
    """Forward GEMM, dX = dY W^T and dW = X^T dY each move their operands once, plus the bias path."""
    element_size = _element_size(precision)
    return 3 * matmul_bytes(p["M"], p["N"], p["K"], element_size) + 2 * p["N"] * element_size


def _tokens(p):
    return p["M"]


register(Workload(
    name="gemm.train",
    op="gemm",
    style="train",
    unit="tokens",
    sizes=(
        Size({"M": 512, "K": 256, "N": 256}, devices=("cpu",)),
        Size({"M": 2048, "K": 512, "N": 512}, presets=("full",), devices=("cpu",)),
        Size({"M": 8192, "K": 4096, "N": 4096}, devices=("cuda",)),
        Size({"M": 16384, "K": 8192, "N": 8192}, presets=("full",), devices=("cuda",)),
    ),
    precisions=PRECISIONS,
    make_inputs=lambda p, precision, device, gen: _layer_inputs(p, precision, device, gen, train=True),
    impls={"torch": _train_step(matmul_reference), "triton": _train_step(matmul)},
    units_per_call=_tokens,
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
    precisions=PRECISIONS,
    make_inputs=lambda p, precision, device, gen: _layer_inputs(p, precision, device, gen, train=False),
    impls={"torch": _infer_step(matmul_reference), "triton": _infer_step(matmul)},
    units_per_call=_tokens,
    flops=lambda p: matmul_flops(p["M"], p["N"], p["K"], bias=True),
    bytes=lambda p, precision: matmul_bytes(p["M"], p["N"], p["K"], _element_size(precision), bias=True),
))
