"""Kernel-level suite: every registry case of the "kernels" suite, Triton vs torch, train vs infer.

The cases come from the workload registry (`wattbench.workloads`), parametrised by the
wattbench pytest plugin for the chosen preset and device.
"""

import pytest


@pytest.mark.wattbench(suite="kernels")
def test_kernel(wattbench_case, wattbench_benchmark):
    wattbench_benchmark(wattbench_case)
