"""llm.decode's inter-token latency: every decode step of the timed rounds timed (CUDA events between graph replays
on the simulated GPU, whose step times are known; the host clock on a CPU), summarised in the record, shown in the
run's table and drawn beside the batch curve."""

from pathlib import Path

import pytest
import torch

from simulated_cuda import SimulatedCuda
from test_llm_serving import GPU0, ON_CPU
from test_measure import Benchmark
from test_model_decode import StandIn
from wattbench import timing
from wattbench.measure import Settings, measure
from wattbench.models.decode import StaticDecoder, StepTimes
from wattbench.models.ops import TORCH
from wattbench.power import PowerConfig, PowerMonitor
from wattbench.report import plots
from wattbench.report.load import load_runs
from wattbench.results import format_table, write_json_atomic
from wattbench.workloads import Context, case_by_id
from wattbench.workloads.llm import DecodeStep

FIXTURES = Path(__file__).parent / "data" / "report"
DEVICE_S = 20e-6  # StandIn's decode step on the simulated GPU


@pytest.fixture
def sim(monkeypatch):
    return SimulatedCuda(devices=1, replay_ops=True).install(monkeypatch)


def test_each_graph_replay_is_timed_by_events_on_the_device_without_a_host_sync(sim):
    decoder = StaticDecoder(StandIn(sim), TORCH, GPU0, batch_sizes=(2,), mode="cuda_graph")
    times = StepTimes(GPU0)
    with GPU0.current():
        for _ in range(3):
            decoder.start(torch.tensor([1, 2]), position=0)
            host_before = sim.host_s
            decoder.decode(4, times)
            assert sim.host_s - host_before < 4 * DEVICE_S  # the host ran ahead of the device: nothing waited
    steps = times.seconds()
    # The first call found the device idle: its first token also waited for the replay's launch. After that the
    # host kept ahead of the device, the next calls' starts included, so every other step is the device's own time.
    first = sim.launch_s + DEVICE_S
    assert times.method == "cuda_event"
    assert steps == [pytest.approx(s, abs=1e-6) for s in [first] + [DEVICE_S] * 11]


def test_the_decode_record_carries_the_itl_of_the_timed_rounds_only_on_the_simulated_gpu(sim):
    steps = 4
    inputs = {"context": Context(GPU0), "model": StandIn(sim), "prompt": torch.tensor([[3, 4, 5], [1, 2, 3]]),
              "new_tokens": steps}
    step = DecodeStep(inputs, "torch")
    clock = timing.clock_for(GPU0)
    with GPU0.current():
        step()  # a warm-up call, before reset: no step of it is timed
        step.reset()
        benchmark = Benchmark(clock)
        benchmark.pedantic(step, rounds=3)
        metrics = step.metrics()
        step()  # after metrics (the energy windows): not timed either
    assert step.metrics() == metrics
    assert metrics["decode"] == "cuda_graph" and metrics["itl_method"] == "cuda_event"
    assert metrics["itl_steps"] == 3 * steps
    # The round's clock keeps the device busy while the host launches (wattbench.cuda.cover_launch_gap), then
    # the replays run back to back: every step is the device's own time, every round the call's steps.
    assert metrics["itl_ms"] == {q: pytest.approx(DEVICE_S * 1e3, abs=1e-6) for q in ("p50", "p90", "p99", "mean")}
    assert benchmark.stats.stats.data == [pytest.approx(steps * DEVICE_S, abs=1e-6)] * 3


def test_a_cpu_decode_record_carries_itl_consistent_with_its_timed_rounds():
    case = case_by_id("llm.decode-torch-fp32-tiny-B1-P32-T4")
    plan = timing.TimingPlan(min_time_s=1e-3, min_rounds=4, max_rounds=4, warmup_rounds=1)
    clock = timing.clock_for(ON_CPU)
    with PowerMonitor(ON_CPU, PowerConfig(), probes=[]) as power:
        info = measure(case, Settings(device=ON_CPU, plan=plan, seed=0), clock, power, Benchmark(clock))
    samples, steps = info["timing"]["samples_s"], case.size.params["T"]
    itl = info["itl_ms"]
    assert info["itl_method"] == "perf_counter" and info["itl_steps"] == len(samples) * steps == 4 * steps
    assert 0 < itl["p50"] <= itl["p90"] <= itl["p99"] <= max(samples) * 1e3
    # The steps are timed inside the rounds: together no longer than the rounds, and nearly all of them (each
    # round adds only its restart's device copies).
    steps_total_s = itl["mean"] * 1e-3 * info["itl_steps"]
    assert 0.5 * sum(samples) < steps_total_s <= sum(samples) * (1 + 1e-9)
    assert info["formulas"]["itl_ms"].startswith("every gap between consecutive tokens")


def decode_run(itl_by_batch: dict[int, dict]) -> dict:
    """A run file of llm.decode records at several batch sizes, each with its ITL."""
    benchmarks = []
    for batch, itl in itl_by_batch.items():
        size = f"tiny-B{batch}-P32-T4"
        benchmarks.append({"name": f"test_decode[{size}]", "extra_info": {
            "workload": "llm.decode", "op": "transformer", "style": "infer", "impl": "torch", "precision": "fp32",
            "size": size, "shape": {"model": "tiny", "B": batch, "P": 32, "T": 4}, "device": "cpu",
            "device_name": "cpu", "interpreted": False, "unit": "tokens", "units_per_call": 4 * batch,
            "flops": 1e6, "bytes": 1e6, "median_s": 4 * itl["mean"] * 1e-3, "units_per_s": batch / itl["mean"] * 1e3,
            "decode": "eager", "itl_ms": itl, "itl_steps": 16, "itl_method": "perf_counter",
            "energy": {"source": "none", "method": "none", "reason": "no power source"}}})
    return {"benchmarks": benchmarks, "wattbench": {"device": "cpu", "preset": "quick"}}


ITL = {1: {"p50": 1.25, "p90": 1.5, "p99": 2.5, "mean": 1.3}, 4: {"p50": 1.75, "p90": 2.0, "p99": 3.25, "mean": 1.8}}


def test_the_table_shows_each_decode_records_itl_p50_and_p99():
    lines = format_table(decode_run(ITL)).splitlines()
    assert "ITL p50 / p99" in lines[0]
    assert "1.25 ms / 2.5 ms" in lines[2] and "1.75 ms / 3.25 ms" in lines[3]
    assert any(line.startswith("ITL p50 / p99: time between a sequence's consecutive tokens") for line in lines)
    without = decode_run(ITL)
    for bench in without["benchmarks"]:
        del bench["extra_info"]["itl_ms"]
    assert "ITL" not in format_table(without)


def test_the_batch_curve_draws_decodes_itl_beside_it(tmp_path):
    write_json_atomic(tmp_path / "run.json", decode_run(ITL))
    frame = load_runs([tmp_path / "run.json"]).frame
    assert list(frame.sort_values("batch_size")["itl_p50_ms"]) == [1.25, 1.75]
    assert list(frame.sort_values("batch_size")["itl_p99_ms"]) == [2.5, 3.25]
    plot = plots.batch_curve(frame)
    panel = next(ax for ax in plot.figure.axes if "inter-token latency" in ax.get_title())
    (line,) = panel.get_lines()
    assert list(line.get_xdata()) == [1, 4] and list(line.get_ydata()) == [1.25, 1.75]
    (band,) = panel.collections  # p50 up to p99
    assert band.get_paths()[0].vertices[:, 1].max() == pytest.approx(3.25)
    assert "inter-token latency" in plot.caption


def test_no_itl_panel_for_records_without_itl():
    frame = load_runs([FIXTURES / "fixture_llm_h100.json"]).frame
    assert frame["itl_p50_ms"].isna().all()
    plot = plots.batch_curve(frame)
    assert not any("inter-token latency" in ax.get_title() for ax in plot.figure.axes)
    assert "inter-token latency" not in plot.caption
