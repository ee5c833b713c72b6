"""The switch between the Triton kernels and their PyTorch references, for whole models.

A model calls every operation through an `Ops`, so the same model code runs all-Triton or
all-torch, and the two can be compared on identical weights and inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from wattbench.kernels.adamw import adamw_step, adamw_step_reference
from wattbench.kernels.attention import attention, attention_reference
from wattbench.kernels.cross_entropy import cross_entropy, cross_entropy_reference
from wattbench.kernels.decode_attention import decode_attention, decode_attention_reference
from wattbench.kernels.matmul import matmul, matmul_reference
from wattbench.kernels.matmul_int8 import matmul_int8w, matmul_int8w_reference
from wattbench.kernels.norms import rms_norm, rms_norm_reference
from wattbench.kernels.swiglu import swiglu, swiglu_reference


@dataclass(frozen=True)
class Ops:
    matmul: Callable
    matmul_int8w: Callable
    rms_norm: Callable
    attention: Callable
    decode_attention: Callable
    swiglu: Callable
    cross_entropy: Callable
    adamw_step: Callable
    #: "triton" or "torch": which path a quantised layer (wattbench.models.quantized) takes.
    impl: str


TRITON = Ops(matmul, matmul_int8w, rms_norm, attention, decode_attention, swiglu, cross_entropy, adamw_step,
             "triton")
TORCH = Ops(matmul_reference, matmul_int8w_reference, rms_norm_reference, attention_reference,
            decode_attention_reference, swiglu_reference, cross_entropy_reference, adamw_step_reference, "torch")


def ops_for(impl: str) -> Ops:
    try:
        return {"triton": TRITON, "torch": TORCH}[impl]
    except KeyError:
        raise ValueError(f"unknown implementation {impl!r}: choose 'triton' or 'torch'") from None
