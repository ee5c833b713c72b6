"""Triton kernels, each beside its PyTorch reference (`wattbench.kernels.reference`).

Imported as `wattbench.kernels`. Triton's interpreter must be chosen before triton is first
imported (its own @triton.jit helpers, tl.cdiv among them, are made then), so that happens
here, ahead of every kernel module, for whatever has not chosen it yet (a run chooses it in
RunConfig.set_up_triton). Each op's module also holds its FLOP and compulsory-byte counts
(`<op>_flops`, `<op>_bytes`).
"""

from wattbench.device import enable_triton_interpreter_without_gpu, triton_interpreted

enable_triton_interpreter_without_gpu()

#: True when these kernels run through Triton's interpreter (no GPU): correct, but untimed.
INTERPRETED = triton_interpreted()

from wattbench.kernels.adamw import adamw_step  # noqa: E402
from wattbench.kernels.attention import attention  # noqa: E402
from wattbench.kernels.cross_entropy import cross_entropy  # noqa: E402
from wattbench.kernels.decode_attention import decode_attention  # noqa: E402
from wattbench.kernels.matmul import dot_precision, matmul  # noqa: E402
from wattbench.kernels.matmul_fp8 import matmul_fp8  # noqa: E402
from wattbench.kernels.matmul_int4 import matmul_int4w  # noqa: E402
from wattbench.kernels.matmul_int8 import matmul_int8w, quantize_int8  # noqa: E402
from wattbench.kernels.norms import layer_norm, rms_norm  # noqa: E402
from wattbench.kernels.quantize import quantize_fp8_weight, quantize_int4  # noqa: E402
from wattbench.kernels.softmax import softmax  # noqa: E402
from wattbench.kernels.swiglu import swiglu  # noqa: E402

__all__ = ["INTERPRETED", "adamw_step", "attention", "cross_entropy", "decode_attention", "dot_precision", "layer_norm",
           "matmul", "matmul_fp8", "matmul_int4w", "matmul_int8w", "quantize_fp8_weight", "quantize_int4",
           "quantize_int8", "rms_norm", "softmax", "swiglu"]
