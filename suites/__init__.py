"""Benchmark suites, run by `wattbench run` or directly with `pytest suites/` (importable as `wattbench.suites`)."""
