"""Triton kernels, each beside its PyTorch reference (`wattbench.kernels.reference`).

Imported as `wattbench.kernels`. Triton's interpreter must be chosen before the first
kernel is defined, so that happens here, ahead of every kernel module.
"""

from wattbench.device import enable_triton_interpreter_without_gpu, triton_interpreted

enable_triton_interpreter_without_gpu()

#: True when these kernels run through Triton's interpreter (no GPU): correct, but untimed.
INTERPRETED = triton_interpreted()

from wattbench.kernels.matmul import matmul  # noqa: E402

__all__ = ["INTERPRETED", "matmul"]
