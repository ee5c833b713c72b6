"""Model-level suite: a decoder-only transformer trained and served (prefill, decode, whole requests).

The cases come from the workload registry (`wattbench/workloads/llm.py`), parametrised by the
wattbench pytest plugin for the chosen preset and device.
"""

import pytest


@pytest.mark.wattbench(suite="models")
def test_model(wattbench_case, wattbench_benchmark):
    wattbench_benchmark(wattbench_case)
