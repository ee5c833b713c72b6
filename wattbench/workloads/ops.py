"""Kernel-level workloads for every op of the kernel library, each in training and inference style.

Training style runs forward + backward (where the op has a backward) at training shapes
(batch × sequence rows); inference style runs forward only, at prefill shapes and at decode
shapes (M from 1 to 64). `op_workloads` is the factory that turns one op of the kernel library into
those workloads: counted once per op (`train` says whether the backward is included), declared as
ordinary `Workload`s.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from wattbench import kernels
from wattbench.compiled import COMPILED, compiled
from wattbench.kernels import reference
from wattbench.kernels.adamw import adamw_step_bytes, adamw_step_flops
from wattbench.kernels.attention import attention_bytes, attention_flops
from wattbench.kernels.cross_entropy import cross_entropy_bytes, cross_entropy_flops
from wattbench.kernels.decode_attention import decode_attention_bytes, decode_attention_flops
from wattbench.kernels.norms import layer_norm_bytes, layer_norm_flops, rms_norm_bytes, rms_norm_flops
from wattbench.kernels.softmax import softmax_bytes, softmax_flops
from wattbench.kernels.swiglu import swiglu_bytes, swiglu_flops
from wattbench.workloads import (Inputs, Params, Size, Step, Workload, activation_dtype, device_sizes, element_size,
                                 m_rows, randn, register)

#: bf16 is what GPU training and inference run in; fp32 on the CPU, where the interpreter checks the kernels.
PRECISIONS = {"cpu": ("fp32",), "cuda": ("bf16",)}


def _train_build(fn: Callable) -> Callable[[Inputs], Step]:
    def build(inputs: Inputs) -> Step:
        args, grad_out = inputs["args"], inputs["grad_out"]
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

        def step():
            for leaf in leaves:
                leaf.grad = None
            out = fn(*args)
            out.backward(grad_out)
            return (out.detach(), *(leaf.grad for leaf in leaves))

        return step

    return build


def _infer_build(fn: Callable) -> Callable[[Inputs], Step]:
    def build(inputs: Inputs) -> Step:
        args = inputs["args"]

        def step():
            with torch.no_grad():
                return fn(*args)

        return step

    return build


def _inputs(args_of: Callable, reference_fn: Callable, train: bool):
    def make(params, precision, device, generator) -> Inputs:
        args = args_of(params, activation_dtype(precision), device, generator, train)
        if not train:
            return {"args": args}
        with torch.no_grad():
            shape = reference_fn(*args).shape
        grad_out = randn(generator, device, activation_dtype(precision), *shape) if shape else None
        return {"args": args, "grad_out": grad_out}

    return make


def op_workloads(op: str, unit: str, args: Callable[[Params, torch.dtype, torch.device, torch.Generator, bool], tuple],
                 units: Callable[[Params], float], flops: Callable[[Params, bool], float],
                 bytes: Callable[[Params, bool, int], float], train_sizes: tuple[Size, ...] = (),
                 infer_sizes: tuple[Size, ...] = (),
                 precisions: Mapping[str, tuple[str, ...]] = PRECISIONS,
                 cpu_compiled: Mapping[str, tuple[str, ...]] = {}) -> list[Workload]:
    """The workloads of kernel-library op `op` ("OP.train" where it has training sizes, "OP.infer" where it
    has inference sizes), its Triton kernel `kernels.OP` against its torch reference `reference.OP`.

    `args(params, dtype, device, generator, train)` returns the op's positional arguments; tensors that need
    gradients in training style are created with requires_grad. `flops(params, train)` and
    `bytes(params, train, element_size)` count forward + backward when `train`, else forward only.
    `cpu_compiled` (style -> "PRECISION-SIZE" names): the few cases that run the compiled impl on a CPU."""
    reference_fn, triton_fn = getattr(reference, op), getattr(kernels, op)
    made = []
    for style, sizes, train in (("train", train_sizes, True), ("infer", infer_sizes, False)):
        if not sizes:
            continue
        build = _train_build if train else _infer_build
        made.append(Workload(
            name=f"{op}.{style}", op=op, style=style, unit=unit, sizes=sizes,
            precisions=precisions, make_inputs=_inputs(args, reference_fn, train),
            impls={"torch": build(reference_fn), "triton": build(triton_fn), COMPILED: compiled(build(reference_fn))},
            cpu_impls={COMPILED: cpu_compiled.get(style, ())},
            units_per_call=units,
            flops=lambda p, train=train: flops(p, train),
            bytes=lambda p, precision, train=train: bytes(p, train, element_size(precision)),
        ))
    return made


def register_op(*declaration, **named) -> None:
    """Register the workloads `op_workloads` makes of one op."""
    for workload in op_workloads(*declaration, **named):
        register(workload)


def _fwd_bwd(count: Callable[..., int]) -> Callable[[Params, bool], int]:
    """Forward count, plus the backward count in training style."""
    def total(p, train, *extra):
        return count(p, False, *extra) + (count(p, True, *extra) if train else 0)
    return total


def _sizes(cpu_train, cpu_infer, cuda_train, cuda_infer, cuda_full_train=(), cuda_full_infer=()):
    """Training and inference sizes: CPU ones small enough for Triton's interpreter."""
    return (device_sizes(cpu_train, cuda_train, cuda_full_train), device_sizes(cpu_infer, cuda_infer, cuda_full_infer))


def _rows_and_hidden(n_cpu, n_gpu):
    """Rows of a hidden dimension: training (batch × sequence), prefill, and decode (M from 1 to 64)."""
    return _sizes(
        cpu_train=[{"M": 256, "N": n_cpu}], cpu_infer=[{"M": 1, "N": n_cpu}, {"M": 64, "N": n_cpu}],
        cuda_train=[{"M": 16384, "N": n_gpu}], cuda_infer=[{"M": 1, "N": n_gpu}, {"M": 64, "N": n_gpu},
                                                           {"M": 4096, "N": n_gpu}],
        cuda_full_train=[{"M": 65536, "N": n_gpu}], cuda_full_infer=[{"M": 16, "N": n_gpu}])


def _norm_args(with_bias):
    def args(p, dtype, device, gen, train):
        x = randn(gen, device, dtype, p["M"], p["N"], grad=train)
        weight = randn(gen, device, dtype, p["N"], scale=0.1, grad=train)
        with torch.no_grad():
            weight += 1
        bias = (randn(gen, device, dtype, p["N"], scale=0.1, grad=train),) if with_bias else ()
        return (x, weight, *bias)
    return args


_NORM_SIZES = _rows_and_hidden(512, 4096)
register_op(
    "rms_norm", "tokens", _norm_args(False), m_rows,
    flops=_fwd_bwd(lambda p, bwd: rms_norm_flops(p["M"], p["N"], backward=bwd)),
    bytes=_fwd_bwd(lambda p, bwd, es: rms_norm_bytes(p["M"], p["N"], es, backward=bwd)),
    train_sizes=_NORM_SIZES[0], infer_sizes=_NORM_SIZES[1], cpu_compiled={"infer": ("fp32-M64-N512",)})
register_op(
    "layer_norm", "tokens", _norm_args(True), m_rows,
    flops=_fwd_bwd(lambda p, bwd: layer_norm_flops(p["M"], p["N"], backward=bwd)),
    bytes=_fwd_bwd(lambda p, bwd, es: layer_norm_bytes(p["M"], p["N"], es, backward=bwd)),
    train_sizes=_NORM_SIZES[0], infer_sizes=_NORM_SIZES[1])

_SOFTMAX_SIZES = _rows_and_hidden(1000, 32768)
register_op(
    "softmax", "rows", lambda p, dtype, device, gen, train: (randn(gen, device, dtype, p["M"], p["N"], grad=train),),
    m_rows,
    flops=_fwd_bwd(lambda p, bwd: softmax_flops(p["M"], p["N"], backward=bwd)),
    bytes=_fwd_bwd(lambda p, bwd, es: softmax_bytes(p["M"], p["N"], es, backward=bwd)),
    train_sizes=_SOFTMAX_SIZES[0], infer_sizes=_SOFTMAX_SIZES[1])


def _cross_entropy_args(p, dtype, device, gen, train):
    logits = randn(gen, device, dtype, p["M"], p["V"], grad=train)
    target = torch.randint(0, p["V"], (p["M"],), generator=gen, device=device)
    return logits, target


_CE_SIZES = _sizes(cpu_train=[{"M": 128, "V": 1000}], cpu_infer=[{"M": 1, "V": 1000}, {"M": 64, "V": 1000}],
                   cuda_train=[{"M": 8192, "V": 50304}], cuda_infer=[{"M": 1, "V": 50304}, {"M": 64, "V": 50304}],
                   cuda_full_train=[{"M": 16384, "V": 128256}])
register_op(
    "cross_entropy", "tokens", _cross_entropy_args, m_rows,
    flops=_fwd_bwd(lambda p, bwd: cross_entropy_flops(p["M"], p["V"], backward=bwd)),
    bytes=_fwd_bwd(lambda p, bwd, es: cross_entropy_bytes(p["M"], p["V"], es, backward=bwd)),
    train_sizes=_CE_SIZES[0], infer_sizes=_CE_SIZES[1])


def _swiglu_args(p, dtype, device, gen, train):
    return tuple(randn(gen, device, dtype, p["M"], p["N"], grad=train) for _ in range(2))


_SWIGLU_SIZES = _rows_and_hidden(688, 11008)
register_op(
    "swiglu", "tokens", _swiglu_args, m_rows,
    flops=_fwd_bwd(lambda p, bwd: swiglu_flops(p["M"] * p["N"], backward=bwd)),
    bytes=_fwd_bwd(lambda p, bwd, es: swiglu_bytes(p["M"] * p["N"], es, backward=bwd)),
    train_sizes=_SWIGLU_SIZES[0], infer_sizes=_SWIGLU_SIZES[1])


def _attention_args(p, dtype, device, gen, train):
    shape = (p["B"], p["H"], p["S"], p["D"])
    return (*(randn(gen, device, dtype, *shape, grad=train) for _ in range(3)), True)  # causal


def _attention_count(count):
    def total(p, train, *extra):
        mode = "fwd_bwd" if train else "fwd"
        return count(p["B"], p["H"], p["S"], p["S"], p["D"], *extra, mode=mode)
    return total


register_op(
    "attention", "tokens", _attention_args, lambda p: p["B"] * p["S"],
    flops=_attention_count(lambda *shape, mode: attention_flops(*shape, causal=True, mode=mode)),
    bytes=_attention_count(lambda *shape, mode: attention_bytes(*shape, mode=mode)),
    train_sizes=(Size({"B": 1, "H": 2, "S": 64, "D": 32}, devices=("cpu",)),
                 Size({"B": 4, "H": 16, "S": 2048, "D": 128}, devices=("cuda",)),
                 Size({"B": 2, "H": 32, "S": 8192, "D": 128}, presets=("full",), devices=("cuda",))),
    infer_sizes=(Size({"B": 1, "H": 2, "S": 64, "D": 32}, devices=("cpu",)),
                 Size({"B": 1, "H": 32, "S": 2048, "D": 128}, devices=("cuda",)),
                 Size({"B": 8, "H": 32, "S": 4096, "D": 128}, presets=("full",), devices=("cuda",))))


def _decode_args(p, dtype, device, gen, train):
    q = randn(gen, device, dtype, p["B"], p["H"], p["D"])
    k_cache = randn(gen, device, dtype, p["B"], p["Hkv"], p["S"], p["D"])
    v_cache = randn(gen, device, dtype, p["B"], p["Hkv"], p["S"], p["D"])
    seq_lens = torch.randint(p["S"] // 2, p["S"] + 1, (p["B"],), generator=gen, device=device, dtype=torch.int32)
    seq_lens[0] = p["S"]  # at least one sequence uses the whole cache
    return q, k_cache, v_cache, seq_lens


register_op(
    "decode_attention", "tokens", _decode_args, lambda p: p["B"],
    # Counted at full cache length: the lengths are random in [S/2, S], so this is an upper bound.
    flops=lambda p, train: decode_attention_flops(p["B"], p["H"], p["S"], p["D"]),
    bytes=lambda p, train, es: decode_attention_bytes(p["B"], p["H"], p["Hkv"], p["S"], p["D"], es),
    infer_sizes=(Size({"B": 1, "H": 4, "Hkv": 2, "S": 256, "D": 32}, devices=("cpu",)),
                 Size({"B": 4, "H": 4, "Hkv": 2, "S": 256, "D": 32}, devices=("cpu",)),
                 Size({"B": 1, "H": 32, "Hkv": 8, "S": 4096, "D": 128}, devices=("cuda",)),
                 Size({"B": 16, "H": 32, "Hkv": 8, "S": 4096, "D": 128}, devices=("cuda",)),
                 Size({"B": 64, "H": 32, "Hkv": 8, "S": 4096, "D": 128}, devices=("cuda",)),
                 Size({"B": 4, "H": 32, "Hkv": 8, "S": 32768, "D": 128}, presets=("full",), devices=("cuda",))))


def _adamw_inputs(p, precision, device, gen) -> Inputs:
    """P parameters split over T tensors of near-equal size (a model's layers), with grads and moments."""
    dtype = activation_dtype(precision)
    sizes = [p["P"] // p["T"] + (1 if i < p["P"] % p["T"] else 0) for i in range(p["T"])]
    params = [randn(gen, device, dtype, n) for n in sizes]
    grads = [randn(gen, device, dtype, n, scale=0.01) for n in sizes]
    exp_avg = [randn(gen, device, dtype, n, scale=0.001) for n in sizes]
    exp_avg_sq = [randn(gen, device, dtype, n, scale=0.001).abs() for n in sizes]
    return {"tensors": (params, grads, exp_avg, exp_avg_sq)}


def _adamw_build(fn):
    def build(inputs: Inputs) -> Step:
        params, grads, exp_avg, exp_avg_sq = inputs["tensors"]
        state = {"step": 0}

        def step():
            state["step"] += 1
            fn(params, grads, exp_avg, exp_avg_sq, state["step"], 1e-3, 0.9, 0.999, 1e-8, 0.01)
            return params

        return step

    return build


register(Workload(
    name="adamw_step.train", op="adamw_step", style="train", unit="parameters",
    sizes=(Size({"P": 100_000, "T": 7}, devices=("cpu",)),
           Size({"P": 124_000_000, "T": 150}, devices=("cuda",)),
           Size({"P": 1_300_000_000, "T": 290}, presets=("full",), devices=("cuda",))),
    precisions={"cpu": ("fp32",), "cuda": ("fp32", "bf16")}, make_inputs=_adamw_inputs,
    impls={"torch": _adamw_build(reference.adamw_step), "triton": _adamw_build(kernels.adamw_step)},
    units_per_call=lambda p: p["P"], flops=lambda p: adamw_step_flops(p["P"]),
    not_capturable="its step counter (the bias corrections) is Python state that a graph would freeze, and the "
                   "Triton step looks its block tables up by tensor address, a host-side cache a graph cannot replay",
    bytes=lambda p, precision: adamw_step_bytes(p["P"], element_size(precision)),
))
