"""Self-checks users can run: `wattbench selfcheck power-accuracy` and `... sampler-overhead`.

power_accuracy runs known power traces through the simulated NVML-like sensor and the same
window code the sampler uses, in simulated time; sampler_overhead runs the real sampler
thread against a source whose reads cost what an NVML call costs, and against this host's
own sensors where it has any.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np

from wattbench.gate.stats import median_ratio_interval
from wattbench.power import simulate
from wattbench.power.base import Channel
from wattbench.device import Device
from wattbench.power.monitor import (PowerConfig, close_probes, combine, probe_sources, sampled_channels,
                                     start_offsets, statuses)
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


def python_workload_s(iterations: int = 1_000_000) -> float:
    """Seconds a fixed GIL-holding Python loop takes now.

    Pure Python on purpose: a launch-bound benchmark loop holds the GIL, which the sampler's
    thread must take at every tick, so this is the workload a Python sampler disturbs most.
    """
    begin = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
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


def thread_cpu_pct(channels: list[Channel], hz: float, seconds: float, busy: bool) -> float:
    """The sampler thread's CPU over `seconds`, in % of one core, with the main thread asleep or busy."""
    with Sampler(channels, hz) as sampler:
        end = time.perf_counter() + seconds
        if not busy:
            time.sleep(seconds)
        while time.perf_counter() < end:
            python_workload_s()
    return 100 * sampler.cpu_s / seconds


def workload_times(channels: list[Channel], hz: float, trials: int) -> dict[str, list[float]]:
    """Workload times with no thread, with the sampler's bare loop (no channels), and with the sampler.

    Interleaved, so drift in the machine's load hits all three alike.
    """
    python_workload_s()
    times = {"off": [], "bare loop": [], "sampler": []}
    for _ in range(trials):
        times["off"].append(python_workload_s())
        for name, polled in (("bare loop", []), ("sampler", channels)):
            with Sampler(polled, hz):
                times[name].append(python_workload_s())
    return times


def host_sensor_cpu_pct(device: Device | None, hz: float, seconds: float) -> tuple[str, list[float]]:
    """The sampler's CPU (% of one core; idle, then busy) with the channels this host's sources
    offer for `device`, as a run would sample them; no figures, and why, where there are none."""
    if device is None:
        return "not measured (no device given)", []
    probes = probe_sources(device, PowerConfig())
    try:
        channels = sampled_channels(probes)
        if not channels:
            return "none: " + statuses(probes), []
        label = ", ".join(c.name for c in channels)
        return label, [thread_cpu_pct(channels, hz, seconds, busy) for busy in (False, True)]
    finally:
        close_probes(probes)


def sampler_overhead(seconds: float = 5.0, trials: int = 31, read_cost_s: float = 20e-6, hz: float = 100.0,
                     device: Device | None = None) -> int:
    """Print the sampler's CPU cost and how much it changes a workload's time; 0 when both are under 1%.

    Beside the figures the targets apply to, it prints two controls that tell the platform's
    part from the sampler's: the CPU of the sampler's loop with nothing to read (what one
    thread wake-up costs on this machine), and the workload's change under that bare loop.
    Where `device` has a real power source (NVML on a GPU host), the sampler's CPU with its
    channels is measured too and held to the same target.
    """
    channels = nvml_like_channels(read_cost_s)
    floor_pct = thread_cpu_pct([], hz, seconds, busy=False)
    idle_pct = thread_cpu_pct(channels, hz, seconds, busy=False)
    busy_pct = thread_cpu_pct(channels, hz, seconds, busy=True)
    host_label, host_pcts = host_sensor_cpu_pct(device, hz, seconds)
    times = workload_times(channels, hz, trials)
    vs_off = median_ratio_interval(times["off"], times["sampler"])
    vs_bare = median_ratio_interval(times["bare loop"], times["sampler"])

    def change(interval) -> str:
        return f"{100 * (interval.ratio - 1):+.2f} [{100 * (interval.low - 1):+.2f}, {100 * (interval.high - 1):+.2f}]"

    print(f"sampler-overhead: {len(channels)} channels at {hz:g} Hz, each read burning "
          f"{read_cost_s * 1e6:.0f} µs of CPU (like an NVML call); workload: a GIL-holding Python loop of "
          f"{statistics.median(times['off']) * 1000:.0f} ms, {trials} interleaved trials")
    print(f"{'measure':<58}{'value':>26}{'target':>8}")
    print(f"{'sampler thread CPU, % of one core, machine idle':<58}{idle_pct:>26.3f}{'< 1':>8}")
    print(f"{'sampler thread CPU, % of one core, workload running':<58}{busy_pct:>26.3f}{'< 1':>8}")
    print(f"{'workload time, sampling on vs off, % [95% CI]':<58}{change(vs_off):>26}{'± 1':>8}")
    print(f"this host's sensors: {host_label}")
    for condition, pct in zip(("machine idle", "workload running"), host_pcts):
        print(f"{'  sampler thread CPU with them, % of one core, ' + condition:<58}{pct:>26.3f}{'< 1':>8}")
    print("controls (no target):")
    print(f"{'  bare loop CPU (no channels: the wake-ups alone), %':<58}{floor_pct:>26.3f}")
    print(f"{'  workload time, sampling on vs bare loop, % [95% CI]':<58}{change(vs_bare):>26}")
    cpu_met = max(idle_pct, busy_pct, *host_pcts) < OVERHEAD_TARGET_PCT
    time_met = 1 - OVERHEAD_TARGET_PCT / 100 < vs_off.low and vs_off.high < 1 + OVERHEAD_TARGET_PCT / 100
    if cpu_met and time_met:
        print("result: all targets met")
        return 0
    print("result: targets missed" + ("" if cpu_met else "; the thread's CPU is over 1% of a core")
          + ("" if time_met else "; the workload's change is not shown to be within ±1%"))
    if floor_pct >= OVERHEAD_TARGET_PCT / 2:
        print(f"note: on this machine a thread waking {hz:g} times a second costs {floor_pct:.2f}% of a core "
              "with nothing to do (slow timer wake-ups, as under nested virtualisation): most of the "
              "sampler's cost here is the platform's, not the sampler's own work")
    return 1
