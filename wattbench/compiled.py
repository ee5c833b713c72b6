"""The `compiled` implementation: `torch.compile` of the torch reference path.

People weigh a hand-written Triton kernel against what the compiler makes of the same PyTorch code,
not only against eager PyTorch. `compiled` is that baseline: the torch impl's step compiled by
Inductor (Triton kernels on a GPU; C++/OpenMP kernels on a CPU, so a CPU-only run compares two real
implementations per joule). The first call compiles, when the step is built: outside the timed rounds
and the energy windows. Its wall time is the record's `compile_s`, the mode and backend its `compile`.
A compile failure fails the case with the error's first line; the other cases run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from wattbench.workloads import Context, Inputs, Step

COMPILED = "compiled"
BACKEND = "inductor"


class CompileFailure(Exception):
    """torch.compile could not compile (or run) a case's step."""


def compile_mode(context: Context) -> str:
    """max-autotune (Inductor benchmarks its candidate kernels) in the full preset on GPUs; its default
    elsewhere, where autotuning would cost minutes per case."""
    return "max-autotune-no-cudagraphs" if context.preset == "full" and context.device.type == "cuda" else "default"


def compile_fn(fn: Callable, context: Context) -> Callable:
    """`fn` compiled for static shapes (each case has one); Inductor's own CUDA graphs are left out, so a
    compiled step replays inside the harness's graph like any other step. Dynamo's caches are cleared first:
    the cases of a workload share their step's code, and past its recompile limit Dynamo would silently run
    later cases eagerly."""
    torch._dynamo.reset()
    return torch.compile(fn, backend=BACKEND, mode=compile_mode(context), dynamic=False)


def first_call(call: Callable[[], Any], context: Context) -> tuple[Any, float]:
    """Run `call` once (it compiles), synchronised: its outputs and wall seconds; a failure is a
    CompileFailure naming the error's first line."""
    start = time.perf_counter()
    try:
        outputs = call()
        context.device.synchronize()
    except Exception as exc:  # noqa: BLE001  whatever Inductor raises fails this case only
        first_line = next(iter(str(exc).strip().splitlines()), "")
        raise CompileFailure(f"torch.compile ({compile_mode(context)}) failed: {type(exc).__name__}: "
                             f"{first_line}") from None
    return outputs, time.perf_counter() - start


def compile_metrics(context: Context, seconds: float) -> dict:
    return {"compile": {"mode": compile_mode(context), "backend": BACKEND}, "compile_s": seconds}


class CompiledStep(Step):
    """A torch impl's plain-function step, compiled; the compilation done here, in its first call."""

    def __init__(self, call: Callable[[], Any], context: Context):
        self.context = context
        self.call = compile_fn(call, context)
        _, self.compile_s = first_call(self.call, context)

    def __call__(self) -> Any:
        return self.call()

    def metrics(self) -> dict:
        return compile_metrics(self.context, self.compile_s)


def compiled(torch_impl: Callable[[Inputs], Callable[[], Any]]) -> Callable[[Inputs], Step]:
    """The compiled impl of a workload whose torch impl returns a plain function."""
    return lambda inputs: CompiledStep(torch_impl(inputs), inputs["context"])
