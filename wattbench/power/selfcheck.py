"""Self-checks users can run: `wattbench selfcheck power-accuracy` and `... sampler-overhead`.

power_accuracy runs known power traces through the simulated NVML-like sensor and the same
window code the sampler uses, in simulated time; sampler_overhead runs the real sampler
thread against a source whose reads cost what an NVML call costs.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np
import torch

from wattbench.power import simulate
from wattbench.power.base import Channel
from wattbench.power.monitor import combine, start_offsets
from wattbench.power.sampler import ChannelWindow, Sampler, Trace, measure_channel

IDLE_W = 60.0
POLL_S = 0.01
LEAD_S = 1.5  # history before the window, so the 1 s rolling average has something to average

TRACES = {
    "constant 300 W": simulate.constant(300.0),
    "square 10.5 ms": simulate.square_wave(100.0, 300.0, 0.0105),
    "square 33 ms": simulate.square_wave(100.0, 300.0, 0.033),
    "square 97 ms": simulate.square_wave(100.0, 300.0, 0.097),
    "square 103 ms": simulate.square_wave(100.0, 300.0, 0.103),
    "square 250 ms": simulate.square_wave(100.0, 300.0, 0.250),
    "square 2 s": simulate.square_wave(100.0, 300.0, 2.0),
    "bursts 20 ms every 370 ms": simulate.bursts(80.0, 500.0, 0.37, 0.02),
    "ramp 100-350 W per 1 s": simulate.ramp(100.0, 350.0, 1.0),
}

#: In step with the sensor's 100 ms updates: each window sees one phase only, so no handful of
#: offsets bounds the error of the mean; the target for these is that the uncertainty covers it.
ALIASED_TRACES = {
    "square 100 ms (aliased)": simulate.square_wave(100.0, 300.0, 0.100),
    "square 50 ms (aliased)": simulate.square_wave(100.0, 300.0, 0.050),
}

COUNTER_WINDOW_S, COUNTER_REPEATS, COUNTER_TARGET_PCT = 10.0, 3, 1.0
INSTANT_WINDOW_S, INSTANT_REPEATS, INSTANT_TARGET_PCT = 5.0, 5, 5.0
OVERHEAD_TARGET_PCT = 1.0


def simulated_windows(trace, window_s: float, repeats: int, rng: random.Random):
    """Per repeat: the sensor, 100 Hz poll times (with jitter), and the window's edges."""
    for offset in start_offsets(repeats, simulate.UPDATE_S, rng):
        # Edges on the simulation grid keep the simulated true energy exact.
        start = round((LEAD_S + offset) / simulate.GRID_S) * simulate.GRID_S
        end = start + window_s
        sensor = simulate.SimulatedSensor(simulate.workload(trace, IDLE_W, start, window_s), end + 1.0)
        polls = np.arange(rng.uniform(0, POLL_S), end + 0.5, POLL_S)
        polls += np.array([rng.uniform(0, 0.001) for _ in polls])
        yield sensor, polls, start, end


def accuracy_row(name: str, trace, rng: random.Random, aliased: bool = False) -> dict:
    """Errors (%) and reported uncertainties (%) of each method on one trace."""
    channels = simulate.simulated_channels()
    counter, naive = [], []
    for sensor, polls, start, end in simulated_windows(trace, COUNTER_WINDOW_S, COUNTER_REPEATS, rng):
        readings = sensor.counter_j(polls)
        truth = sensor.true_energy(start, end)
        counter.append((measure_channel(channels["counter"], Trace(polls, readings), start, end), truth))
        stale = np.interp([start, end], polls, readings)
        naive.append(100 * abs(stale[1] - stale[0] - truth) / truth)
    counter_summary = combine([w for w, _ in counter], [1] * len(counter))
    row = {"trace": name, "aliased": aliased,
           "counter_worst_pct": max(100 * abs(w.joules - t) / t for w, t in counter),
           "counter_unc_pct": counter_summary["uncertainty_pct"],
           "stale_interp_worst_pct": max(naive)}
    sampled: dict[str, list[ChannelWindow]] = {"instant": [], "average": []}
    truths = []
    for sensor, polls, start, end in simulated_windows(trace, INSTANT_WINDOW_S, INSTANT_REPEATS, rng):
        truths.append(sensor.true_energy(start, end))
        for method, read in (("instant", sensor.instant_w), ("average", sensor.average_w)):
            sampled[method].append(measure_channel(channels[method], Trace(polls, read(polls)), start, end))
    truth = statistics.fmean(truths)
    for method, windows in sampled.items():
        summary = combine(windows, [1] * len(windows))
        row[f"{method}_err_pct"] = 100 * (summary["joules_per_call"] - truth) / truth
        row[f"{method}_unc_pct"] = summary["uncertainty_pct"]
    return row


def meets_targets(row: dict) -> bool:
    return (row["counter_worst_pct"] < COUNTER_TARGET_PCT
            and (row["aliased"] or abs(row["instant_err_pct"]) < INSTANT_TARGET_PCT)
            and row["instant_unc_pct"] >= abs(row["instant_err_pct"]))


def accuracy_rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return ([accuracy_row(name, trace, rng) for name, trace in TRACES.items()]
            + [accuracy_row(name, trace, rng, aliased=True) for name, trace in ALIASED_TRACES.items()])


def power_accuracy(seed: int = 0) -> int:
    """Print the error and reported uncertainty per trace and method; 0 when every target is met."""
    rows = accuracy_rows(seed)
    print("power-accuracy: simulated NVML-like sensor (instant = 25 ms average every 100 ms, average = 1 s "
          "rolling, counter = mJ every 100 ms), polled at 100 Hz, idle 60 W around each window")
    print(f"targets: counter |error| < {COUNTER_TARGET_PCT:g}% in every {COUNTER_WINDOW_S:g} s window; instant "
          f"|error of the mean| < {INSTANT_TARGET_PCT:g}% over {INSTANT_REPEATS} offset windows of "
          f"{INSTANT_WINDOW_S:g} s, within its reported uncertainty")
    header = (f"{'trace':<28}{'counter err%':>13}{'unc%':>7}{'stale-interp%':>15}"
              f"{'instant err%':>14}{'unc%':>7}{'average err%':>14}{'unc%':>7}  ok")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['trace']:<28}{row['counter_worst_pct']:>13.3f}{row['counter_unc_pct']:>7.2f}"
              f"{row['stale_interp_worst_pct']:>15.3f}{row['instant_err_pct']:>+14.2f}{row['instant_unc_pct']:>7.1f}"
              f"{row['average_err_pct']:>+14.2f}{row['average_unc_pct']:>7.1f}"
              f"  {'yes' if meets_targets(row) else 'NO'}")
    print("counter err% is the worst window; stale-interp% is the same counter interpolated over its stale "
          "readings instead of its update points. The average method has no target: it is a last resort. "
          "Aliased traces (in step with the 100 ms updates) need only their uncertainty to cover the error.")
    failed = [row["trace"] for row in rows if not meets_targets(row)]
    print("result: all targets met" if not failed else f"result: targets missed on {', '.join(failed)}")
    return 0 if not failed else 1


def cpu_workload_s(matmuls: int = 40) -> float:
    """Seconds a fixed CPU workload (torch 256x256 matmuls) takes now."""
    a = torch.randn(256, 256)
    begin = time.perf_counter()
    for _ in range(matmuls):
        a @ a
    return time.perf_counter() - begin


def nvml_like_channels(read_cost_s: float, watts: float = 200.0) -> list[Channel]:
    """A counter and an instant channel like NVML's, each read costing `read_cost_s` of CPU."""
    start = time.perf_counter()

    def counter() -> float:
        simulate.busy_cpu(read_cost_s)
        return watts * (time.perf_counter() - start)

    def instant() -> float:
        simulate.busy_cpu(read_cost_s)
        return watts

    return [Channel("overhead:counter", "simulated", "counter", "simulated GPU", read=counter),
            Channel("overhead:instant", "simulated", "instant", "simulated GPU", read=instant)]


def sampler_overhead(seconds: float = 10.0, trials: int = 31, read_cost_s: float = 20e-6, hz: float = 100.0) -> int:
    """Print the sampler's CPU cost and how much it slows a CPU workload; 0 when both are under 1%."""
    channels = nvml_like_channels(read_cost_s)
    with Sampler(channels, hz) as sampler:
        time.sleep(seconds)
    cpu_pct = 100 * sampler.cpu_s / seconds

    cpu_workload_s()
    off, on = [], []
    for _ in range(trials):  # interleaved, so drift in the machine's load hits both alike
        off.append(cpu_workload_s())
        with Sampler(channels, hz):
            on.append(cpu_workload_s())
    slowdown_pct = 100 * (statistics.median(on) / statistics.median(off) - 1)

    print(f"sampler-overhead: {len(channels)} channels at {hz:g} Hz, each read burning "
          f"{read_cost_s * 1e6:.0f} µs of CPU (like an NVML call)")
    print(f"{'measure':<44}{'value':>10}{'target':>10}")
    print(f"{'sampler thread CPU, % of one core':<44}{cpu_pct:>10.3f}{'< 1':>10}")
    print(f"{'CPU workload time, sampling on vs off, %':<44}{slowdown_pct:>+10.3f}{'< 1':>10}")
    print(f"(median of {trials} interleaved runs of {statistics.median(off) * 1000:.1f} ms each; "
          f"on a shared machine the second figure carries that machine's noise)")
    met = cpu_pct < OVERHEAD_TARGET_PCT and slowdown_pct < OVERHEAD_TARGET_PCT
    print("result: all targets met" if met else "result: targets missed")
    return 0 if met else 1
