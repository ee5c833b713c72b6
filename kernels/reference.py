"""The PyTorch path of every kernel, under the kernel's own name and with the same signature.

`wattbench.kernels.reference.rms_norm` is what benchmarks run as impl "torch" against the
Triton `wattbench.kernels.rms_norm`. Each is defined beside its kernel; this module gathers them.
"""

from wattbench.kernels.adamw import adamw_step_reference as adamw_step
from wattbench.kernels.attention import attention_reference as attention
from wattbench.kernels.cross_entropy import cross_entropy_reference as cross_entropy
from wattbench.kernels.decode_attention import decode_attention_reference as decode_attention
from wattbench.kernels.matmul import matmul_reference as matmul
from wattbench.kernels.matmul_int8 import matmul_int8w_reference as matmul_int8w
from wattbench.kernels.matmul_int8 import quantize_int8
from wattbench.kernels.norms import layer_norm_reference as layer_norm
from wattbench.kernels.norms import rms_norm_reference as rms_norm
from wattbench.kernels.softmax import softmax_reference as softmax
from wattbench.kernels.swiglu import swiglu_reference as swiglu

__all__ = ["adamw_step", "attention", "cross_entropy", "decode_attention", "layer_norm", "matmul", "matmul_int8w",
           "quantize_int8", "rms_norm", "softmax", "swiglu"]
