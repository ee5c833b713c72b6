"""A case whose own measurements of one call contradict each other is named, and only then."""

import pytest

from wattbench.measure import disagreements
from wattbench.results import disagreeing_benchmarks

ROUNDS = [44e-6, 45e-6, 46e-6, 47e-6, 52e-6]


def test_measurements_within_the_rounds_spread_agree():
    assert disagreements(ROUNDS, 60e-6, 40e-6, "cpu") == []
    assert disagreements(ROUNDS, 100e-6, 23e-6, "cpu") == []  # within a factor of two of the range


def test_a_planning_call_on_a_millisecond_step_of_the_scheduler_is_named():
    (found,) = disagreements(ROUNDS, 16e-3, None, "cpu")
    assert found == "planning call 16 ms vs timed rounds 44 us to 52 us"


def test_energy_windows_much_faster_than_every_round_are_named():
    (found,) = disagreements([16e-3, 16.1e-3, 24e-3], 16e-3, 44e-6, "cpu")
    assert found.startswith("energy windows (per call) 44 us vs timed rounds 16 ms to 24 ms")


@pytest.mark.parametrize("rounds, planning, window, expected", [
    ([3e-6] * 5, 40e-6, 9e-6, 0),  # a short GPU kernel: host time is launch-bound, so no comparison
    ([2e-3] * 5, 2.1e-3, 9e-3, 1),  # a long one: the windows were far slower than any round
])
def test_on_a_gpu_only_calls_long_enough_for_the_host_clock_are_compared(rounds, planning, window, expected):
    assert len(disagreements(rounds, planning, window, "cuda")) == expected


def test_the_run_names_each_disagreeing_case():
    run = {"benchmarks": [
        {"params": {"wattbench_case": "gemm.infer-torch-fp32-M1"},
         "extra_info": {"timing": {"disagreements": ["planning call 16 ms vs timed rounds 44 us to 52 us"]}}},
        {"params": {"wattbench_case": "gemm.infer-torch-bf16-M1"}, "extra_info": {"timing": {}}},
        {"name": "other", "extra_info": {}}]}
    assert disagreeing_benchmarks(run) == [("gemm.infer-torch-fp32-M1",
                                            ["planning call 16 ms vs timed rounds 44 us to 52 us"])]


class Benchmark:
    """pytest-benchmark's fixture as `measure` uses it: the timer read around each round's call."""

    def __init__(self, timer):
        self.timer, self.stats, self.extra_info, self.has_error = timer, None, {}, False

    def pedantic(self, target, setup=None, rounds=1, iterations=1):
        import types

        data = []
        self.stats = types.SimpleNamespace(stats=types.SimpleNamespace(data=data))
        for _ in range(rounds):
            start = self.timer()
            target()
            data.append(self.timer() - start)


def test_a_measured_case_whose_planning_call_was_held_up_records_the_disagreement():
    """The step stalls 20 ms in the planning call only (first call, 2 warm-up rounds, then planning)."""
    import time

    import torch

    from wattbench import timing
    from wattbench.device import Device
    from wattbench.measure import Settings, measure
    from wattbench.power import PowerConfig, PowerMonitor
    from wattbench.results import format_seconds
    from wattbench.workloads import Case, Size, Workload

    def build(inputs):
        calls = {"n": 0}

        def step():
            calls["n"] += 1
            if calls["n"] == 4:
                time.sleep(0.02)
            return inputs["x"]
        return step

    workload = Workload(name="stall.infer", op="stall", style="infer", unit="items", sizes=(Size({"N": 8}),),
                        precisions={"cpu": ("fp32",)},
                        make_inputs=lambda params, precision, device, generator: {"x": torch.zeros(8)},
                        impls={"torch": build}, units_per_call=lambda p: p["N"], flops=lambda p: p["N"],
                        bytes=lambda p, precision: 32)
    cpu = Device("cpu", None, "test CPU")
    clock = timing.clock_for(cpu)
    plan = timing.TimingPlan(min_time_s=1e-4, min_rounds=5, max_rounds=20)
    with PowerMonitor(cpu, PowerConfig(), probes=[]) as power:
        info = measure(Case(workload, "torch", "fp32", workload.sizes[0]), Settings(cpu, plan, 0), clock, power,
                       Benchmark(clock))
    assert info["timing"]["planning_call_s"] >= 0.02
    (found,) = info["timing"]["disagreements"]
    # The message names the planning call's own time (20 ms and a little more on a loaded host).
    assert found.startswith(f"planning call {format_seconds(info['timing']['planning_call_s'])} vs timed rounds")
