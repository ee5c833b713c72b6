"""Measuring one case (wattbench.measure) on the simulated CUDA device, without a pytest session."""

import gc
import types
import weakref

import pytest
import torch

from simulated_cuda import SimulatedCuda
from wattbench import timing
from wattbench.conditions import ConditionSensors
from wattbench.device import Device
from wattbench.measure import Settings, measure
from wattbench.power import PowerConfig, PowerMonitor
from wattbench.power.simulate import constant, live_probe
from wattbench.workloads import Case, Size, Workload

GPU1 = Device("cuda", 1, "Simulated H100")
WORK_S = 25e-6


class Benchmark:
    """pytest-benchmark's fixture as `measure` uses it: `pedantic` reads the timer just before
    and just after each round's call, after the round's setup (as pytest_benchmark/fixture.py)."""

    def __init__(self, timer):
        self.timer, self.stats, self.extra_info, self.has_error = timer, None, {}, False

    def pedantic(self, target, setup=None, rounds=1, iterations=1):
        data = []
        self.stats = types.SimpleNamespace(stats=types.SimpleNamespace(data=data))
        for _ in range(rounds):
            if setup is not None:
                setup()
            start = self.timer()
            target()
            data.append(self.timer() - start)


@pytest.fixture
def sim(monkeypatch):
    return SimulatedCuda(devices=2).install(monkeypatch)


def simulated_workload(sim, seen_devices, not_capturable=None, fail_in=None, held=None):
    """A workload whose step launches WORK_S of device work and notes the current device."""
    def make_inputs(params, precision, device, generator):
        inputs = {"x": torch.zeros(1024)}
        if held is not None:
            held.append(weakref.ref(inputs["x"]))
        return inputs

    def build(inputs):
        calls = {"n": 0}

        def step():
            calls["n"] += 1
            seen_devices.add(sim.current)
            if fail_in is not None and calls["n"] == fail_in:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            sim.launch("work", WORK_S)
            return inputs["x"]
        return step

    return Workload(name="sim.infer", op="sim", style="infer", unit="items", sizes=(Size({"N": 1024}),),
                    precisions={"cuda": ("fp32",)}, make_inputs=make_inputs, impls={"torch": build},
                    units_per_call=lambda p: p["N"], flops=lambda p: p["N"], bytes=lambda p, precision: 4 * p["N"],
                    not_capturable=not_capturable)


def run_case(sim, workload, plan, power=None):
    settings = Settings(device=GPU1, plan=plan, seed=0)
    clock = timing.clock_for(GPU1)
    benchmark = Benchmark(clock)
    case = Case(workload, "torch", "fp32", workload.sizes[0])
    if power is None:
        with PowerMonitor(GPU1, PowerConfig(), probes=[]) as power:
            return measure(case, settings, clock, power, benchmark), benchmark
    return measure(case, settings, clock, power, benchmark), benchmark


def fast_plan(**options):
    return timing.TimingPlan(min_time_s=1e-4, min_rounds=5, max_rounds=20, **options)


def test_every_round_is_the_work_device_time_and_cuda_1_is_current_throughout(sim):
    seen = set()
    info, benchmark = run_case(sim, simulated_workload(sim, seen), fast_plan())
    assert info["timing"]["method"] == "cuda_event"
    assert info["timing"]["samples_s"] == [pytest.approx(WORK_S, abs=1e-6)] * info["timing"]["rounds"]
    assert info["median_s"] == pytest.approx(WORK_S, abs=1e-6)
    assert seen == {1}  # build's first call, warm-up, planning, rounds
    assert {launch.device for launch in sim.launches} == {1}  # flushes and launch covers too
    assert not benchmark.has_error


def test_graph_mode_times_and_measures_energy_on_the_graph_replay(sim):
    seen = set()
    probe = live_probe(constant(300.0), duration_s=60.0)
    config = PowerConfig(min_window_s=0.05, max_window_s=0.05, repeats=2, idle_s=0.0)
    with PowerMonitor(GPU1, config, probes=[probe], conditions=ConditionSensors.unavailable("simulated")) as power:
        info, _ = run_case(sim, simulated_workload(sim, seen), fast_plan(cuda_graph=True), power)
    assert info["timing"]["method"] == "cuda_graph"
    assert info["timing"]["samples_s"] == [pytest.approx(WORK_S, abs=1e-6)] * info["timing"]["rounds"]
    energy = info["energy"]
    timed_and_windows = info["timing"]["rounds"] + info["timing"]["warmup_rounds"] + 1 + sum(
        energy["calls_per_window"]) + energy["edge_calls"]  # + the planning call, + the calls around the windows
    assert len(sim.launched("replay:work")) == timed_and_windows  # the energy windows replayed the graph too
    assert energy["window_units_per_s"] == pytest.approx(
        1024 * sum(energy["calls_per_window"]) / sum(end - start for start, end in energy["window_spans_s"]))
    assert seen == {1}


def test_graph_mode_runs_an_uncapturable_step_eagerly_and_the_record_says_why(sim):
    info, _ = run_case(sim, simulated_workload(sim, set(), not_capturable="it reads the host clock per token"),
                       fast_plan(cuda_graph=True))
    assert info["timing"]["method"] == "cuda_event"
    assert info["timing"]["graph_note"] == "CUDA graph not used: it reads the host clock per token"
    assert sim.launched("replay:work") == []


@pytest.mark.parametrize("fail_in", [1, 4, 12])  # first call, warm-up/planning, timed rounds
def test_out_of_memory_anywhere_skips_the_case_and_frees_its_inputs(sim, fail_in):
    held = []
    workload = simulated_workload(sim, set(), fail_in=fail_in, held=held)
    with pytest.raises(pytest.skip.Exception, match="does not fit in the memory of Simulated H100"):
        run_case(sim, workload, fast_plan())
    gc.collect()
    assert held and held[0]() is None  # nothing still holds the case's tensors
    assert sim.empty_cache_calls >= 1


def test_a_failing_round_leaves_no_half_timed_record(sim):
    workload = simulated_workload(sim, set(), fail_in=12)
    clock = timing.clock_for(GPU1)
    benchmark = Benchmark(clock)
    case = Case(workload, "torch", "fp32", workload.sizes[0])
    with PowerMonitor(GPU1, PowerConfig(), probes=[]) as power, pytest.raises(pytest.skip.Exception):
        measure(case, Settings(device=GPU1, plan=fast_plan(), seed=0), clock, power, benchmark)
    assert benchmark.has_error  # pytest-benchmark then leaves it out of its JSON


def test_an_fp32_record_says_what_its_dots_ran_on_by_torchs_tf32_switch(sim, monkeypatch):
    info, _ = run_case(sim, simulated_workload(sim, set()), fast_plan())
    assert info["fp32_dots"] == "ieee"  # torch's default: TF32 off, FMA loops
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    info, _ = run_case(sim, simulated_workload(sim, set()), fast_plan())
    assert info["fp32_dots"] == "tf32"
