"""Self-checks users can run: `wattbench selfcheck power-accuracy` and `... sampler-overhead`.

power_accuracy runs known power traces through the simulated NVML-like sensor and the same
window code the sampler uses, in simulated time, with reads that cost 20 µs (the main table)
and, in a sweep, up to several ms: at the poll rates the sampler would plan for that cost,
each reading stamped at its read's midpoint. Then whole benchmarks, measured by the monitor's
own window rules (`run_windows` through `simulate.SimulatedRun`) on sensors that update every
100 or 20 ms with noise: the error against the window length, and the adaptive windows' error
against the uncertainty they report. sampler_overhead runs the real sampler thread
against sources whose reads cost that much (burning CPU, or blocked in the driver), and
against this host's own sensors where it has any.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np

from wattbench.device import Device
from wattbench.power import simulate
from wattbench.power.base import Channel
from wattbench.power.monitor import (EDGE_RUN_UPDATES, PowerConfig, close_probes, combine, probe_sources,
                                     sampled_channels, start_offsets, statuses)
from wattbench.power.sampler import (CPU_BUDGET, REPLAN_S, ChannelWindow, Plan, Sampler, measure_channel, plan_rates,
                                     read_load)
from wattbench.power.simulate import ReadCost
from wattbench.stats import median_ratio_interval

IDLE_W = 60.0
LEAD_S = 1.5  # history before the window, so the 1 s rolling average has something to average
#: The sampler loop's own CPU per wake-up on a host without costly timers: an assumption for the
#: simulated sweep only (the real thread measures its own).
TICK_CPU_S = 20e-6

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

#: Read costs the self-checks exercise: a cheap NVML call, and calls of milliseconds (one public
#: report, not verified here: 2.4 ms median, 6.6 ms worst for the energy counter), spent burning
#: CPU or blocked in the driver.
NOMINAL_COST = ReadCost(cpu_s=20e-6)
READ_COSTS = (NOMINAL_COST, ReadCost(cpu_s=1e-3), ReadCost(cpu_s=2.4e-3), ReadCost(cpu_s=6.6e-3),
              ReadCost(cpu_s=20e-6, blocked_s=2.4e-3), ReadCost(cpu_s=20e-6, blocked_s=6.6e-3))
SWEEP_TRACES = ("constant 300 W", "square 33 ms", "bursts 20 ms every 370 ms", "ramp 100-350 W per 1 s")

#: How long the overhead checks let the sampler run before measuring: its first plans are made
#: from the costs of its first polls and of its first second.
SETTLE_S = 1.5 * REPLAN_S

COUNTER_WINDOW_S, COUNTER_REPEATS, COUNTER_TARGET_PCT = 10.0, 3, 1.0
INSTANT_WINDOW_S, INSTANT_REPEATS, INSTANT_TARGET_PCT = 5.0, 5, 5.0
OVERHEAD_TARGET_PCT = 1.0

#: Whole benchmarks in simulated time: a step of `call_s` run back to back with this power.
BENCHMARKS = {
    "constant 300 W, 1 ms calls": (simulate.constant(300.0), 1e-3),
    "150/350 W every 97 ms, 10 ms calls": (simulate.square_wave(150.0, 350.0, 0.097), 0.01),
    "300 W warming by 3%, 1 ms calls": (simulate.warming(simulate.constant(300.0), 0.03, 30.0), 1e-3),
    "80/500 W bursts, 370 ms calls": (simulate.bursts(80.0, 500.0, 0.37, 0.02), 0.37),
}
#: Counter update periods seen on NVIDIA GPUs (100 ms on A100/H100; 20 ms on some newer GPUs and
#: drivers), and the noise on what each update adds: an assumption, not a measurement.
UPDATE_PERIODS_S = (0.1, 0.02)
SENSOR_NOISE = 0.01
#: Fixed window lengths the error is shown against (no target: 3 windows of each).
WINDOW_LENGTHS_S = (1.0, 2.0, 5.0, 10.0, 20.0)
ADAPTIVE_COSTS = (NOMINAL_COST, ReadCost(cpu_s=20e-6, blocked_s=2.4e-3), ReadCost(cpu_s=1e-3))
#: Share of adaptive records whose reported uncertainty must cover their error.
COVERAGE_TARGET = 0.95


def planned(cost: ReadCost, hz: float = 100.0) -> Plan:
    """The plan the sampler makes for an NVML-like source (counter primary, instant secondary)
    whose reads each cost `cost`, on a host whose loop costs TICK_CPU_S per wake-up."""
    load = read_load(cost.cpu_s, cost.duration_s)
    return plan_rates(hz, read_load(TICK_CPU_S, 0.0), load, load)


def simulated_windows(trace, window_s: float, repeats: int, rng: random.Random, tail_s: float):
    """Per repeat: the sensor, the window's edges, and how long after the end readings go on."""
    for offset in start_offsets(repeats, simulate.UPDATE_S, rng):
        # Edges on the simulation grid keep the simulated true energy exact.
        start = round((LEAD_S + offset) / simulate.GRID_S) * simulate.GRID_S
        end = start + window_s
        sensor = simulate.SimulatedSensor(simulate.workload(trace, IDLE_W, start, window_s), end + tail_s + 1.0)
        yield sensor, start, end


def accuracy_row(name: str, trace, rng: random.Random, aliased: bool = False,
                 cost: ReadCost = NOMINAL_COST) -> dict:
    """Errors (%) and reported uncertainties (%) of each method on one trace, polled as the
    sampler would with reads costing `cost` (counter primary, instant and average secondary)."""
    channels = simulate.simulated_channels()
    plan = planned(cost)
    counter, naive = [], []
    tail = 0.5 + 2 / plan.hz
    for sensor, start, end in simulated_windows(trace, COUNTER_WINDOW_S, COUNTER_REPEATS, rng, tail):
        polled = simulate.polled_trace(sensor.counter_j, plan.hz, end + tail, cost, rng)
        truth = sensor.true_energy(start, end)
        counter.append((measure_channel(channels["counter"], polled, start, end), truth))
        stale = np.interp([start, end], polled.timestamps, polled.values)
        naive.append(100 * abs(stale[1] - stale[0] - truth) / truth)
    counter_summary = combine([w for w, _ in counter], [1] * len(counter))
    row = {"trace": name, "aliased": aliased, "cost": cost.describe(), "hz": plan.hz,
           "secondary_hz": plan.secondary_hz,
           "counter_worst_pct": max(100 * abs(w.joules - t) / t for w, t in counter),
           "counter_unc_pct": counter_summary["uncertainty_pct"],
           "stale_interp_worst_pct": max(naive)}
    sampled: dict[str, list[ChannelWindow]] = {"instant": [], "average": []}
    truths = []
    tail = 0.5 + 2 / plan.secondary_hz
    for sensor, start, end in simulated_windows(trace, INSTANT_WINDOW_S, INSTANT_REPEATS, rng, tail):
        truths.append(sensor.true_energy(start, end))
        for method, read in (("instant", sensor.instant_w), ("average", sensor.average_w)):
            polled = simulate.polled_trace(read, plan.secondary_hz, end + tail, cost, rng)
            sampled[method].append(measure_channel(channels[method], polled, start, end))
    truth = statistics.fmean(truths)
    for method, windows in sampled.items():
        summary = combine(windows, [1] * len(windows))
        valid = summary["joules_per_call"] is not None
        row[f"{method}_err_pct"] = 100 * (summary["joules_per_call"] - truth) / truth if valid else None
        row[f"{method}_unc_pct"] = summary["uncertainty_pct"]
    return row


def meets_targets(row: dict) -> bool:
    """The main table's targets (reads of 20 µs, polled at 100 Hz)."""
    return (row["counter_worst_pct"] < COUNTER_TARGET_PCT
            and (row["aliased"] or abs(row["instant_err_pct"]) < INSTANT_TARGET_PCT)
            and row["instant_unc_pct"] >= abs(row["instant_err_pct"]))


def covered(row: dict) -> bool:
    """The sweep's target: at every read cost, each method's reported uncertainty covers its
    error (the counter's in its worst window; a method left without a valid window says so)."""
    return (row["counter_unc_pct"] >= row["counter_worst_pct"]
            and (row["instant_err_pct"] is None or row["instant_unc_pct"] >= abs(row["instant_err_pct"])))


def accuracy_rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return ([accuracy_row(name, trace, rng) for name, trace in TRACES.items()]
            + [accuracy_row(name, trace, rng, aliased=True) for name, trace in ALIASED_TRACES.items()])


def sweep_rows(seed: int = 0, costs=READ_COSTS[1:], traces=SWEEP_TRACES) -> list[dict]:
    rng = random.Random(seed)
    return [accuracy_row(name, TRACES[name], rng, cost=cost) for cost in costs for name in traces]


def _pct(value: float | None, width: int, signed: bool = False, digits: int = 2) -> str:
    """A percentage cell; `invalid` where a method had no valid window."""
    if value is None:
        return f"{'invalid':>{width}}"
    return f"{value:>+{width}.{digits}f}" if signed else f"{value:>{width}.{digits}f}"


def power_accuracy(seed: int = 0, sweep_costs=READ_COSTS[1:], trials: int = 20, window_costs=ADAPTIVE_COSTS) -> int:
    """Print the error and reported uncertainty per trace and method, with cheap reads and then
    with costly ones, then whole benchmarks' windows (`trials` per row); 0 when every target is met."""
    rows = accuracy_rows(seed)
    print("power-accuracy: simulated NVML-like sensor (instant = 25 ms average every 100 ms, average = 1 s "
          "rolling, counter = mJ every 100 ms), reads of 20 µs polled at 100 Hz, idle 60 W around each window")
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
    swept = sweep_rows(seed, sweep_costs)
    print()
    print(f"read-cost sweep: each read costs what the first column says; polled at the rates the sampler plans "
          f"for it (CPU budget {100 * CPU_BUDGET:g}% of a core, loop {TICK_CPU_S * 1e6:g} µs per wake-up "
          "assumed), each reading stamped at its read's midpoint")
    print("target: every reported uncertainty covers its error (counter: worst window)")
    header = (f"{'read cost':<30}{'poll Hz':>8}{'2nd Hz':>8}  {'trace':<27}{'counter err%':>13}{'unc%':>7}"
              f"{'instant err%':>14}{'unc%':>8}  ok")
    print(header)
    print("-" * len(header))
    for row in swept:
        print(f"{row['cost']:<30}{row['hz']:>8.1f}{row['secondary_hz']:>8.2f}  {row['trace']:<27}"
              f"{row['counter_worst_pct']:>13.3f}{row['counter_unc_pct']:>7.2f}"
              f"{_pct(row['instant_err_pct'], 14, signed=True)}{_pct(row['instant_unc_pct'], 8, digits=1)}"
              f"  {'yes' if covered(row) else 'NO'}")
    failed = [row["trace"] for row in rows if not meets_targets(row)]
    failed += [f"{row['trace']} at {row['cost']}" for row in swept if not covered(row)]
    if not print_window_checks(trials, seed, window_costs):
        failed.append("the adaptive windows' coverage")
    print("result: all targets met" if not failed else f"result: targets missed on {', '.join(failed)}")
    return 0 if not failed else 1


def benchmark_records(name: str, config: PowerConfig, trials: int, rng: random.Random, update_s: float,
                      cost: ReadCost = NOMINAL_COST) -> list[tuple[dict, float]]:
    """`trials` energy records of one of BENCHMARKS as the monitor would write them under `config`,
    each with its error against the truth (%)."""
    power, call_s = BENCHMARKS[name]
    longest = config.repeats * (max(config.max_window_s, config.min_window_s) + 3.5 * update_s + call_s) + 1.0
    records = []
    for _ in range(trials):
        run = simulate.SimulatedRun(power, call_s, longest, rng, idle_w=IDLE_W, update_s=update_s,
                                    noise=SENSOR_NOISE, hz=planned(cost).hz, cost=cost)
        record = run.measure(config, rng)
        truth = run.true_joules_per_call(record["calls_per_window"])
        records.append((record, 100 * abs(record["joules_per_call"] - truth) / truth))
    return records


def length_rows(trials: int, seed: int = 0) -> list[dict]:
    """The error against the window length: per update period, benchmark and length, fixed windows."""
    rng = random.Random(seed)
    rows = []
    for update_s in UPDATE_PERIODS_S:
        for name in list(BENCHMARKS)[:2]:
            for length in WINDOW_LENGTHS_S:
                config = PowerConfig(target_pct=None, min_window_s=length, max_window_s=length)
                found = benchmark_records(name, config, trials, rng, update_s)
                rows.append({"update_s": update_s, "benchmark": name, "length_s": length,
                             "worst_pct": max(e for _, e in found),
                             "unc_pct": statistics.median(r["uncertainty_pct"] for r, _ in found),
                             "covered": sum(e <= r["uncertainty_pct"] for r, e in found) / trials})
    return rows


def adaptive_rows(trials: int, seed: int = 0, costs=ADAPTIVE_COSTS) -> list[dict]:
    """The default adaptive windows per update period, read cost and benchmark: how long they ran,
    what they reached, and how often the reported uncertainty covers the error."""
    rng = random.Random(seed)
    rows = []
    for update_s in UPDATE_PERIODS_S:
        for cost in costs:
            for name in BENCHMARKS:
                found = benchmark_records(name, PowerConfig(), trials, rng, update_s, cost)
                rows.append({"update_s": update_s, "cost": cost.describe(), "hz": planned(cost).hz, "benchmark": name,
                             "seconds": statistics.fmean(sum(r["adaptive"]["lengths_s"]) for r, _ in found),
                             "windows": statistics.fmean(r["windows"] for r, _ in found),
                             "reached": sum(r["adaptive"]["stopped"] == "target reached" for r, _ in found) / trials,
                             "unc_low": min(r["uncertainty_pct"] for r, _ in found),
                             "unc_high": max(r["uncertainty_pct"] for r, _ in found),
                             "worst_pct": max(e for _, e in found), "covered": [e <= r["uncertainty_pct"]
                                                                               for r, e in found]})
    return rows


def print_window_checks(trials: int, seed: int = 0, costs=ADAPTIVE_COSTS) -> bool:
    """Print the error against the window length and the adaptive windows' figures; whether the
    reported uncertainty covers the error in COVERAGE_TARGET of the adaptive records."""
    config = PowerConfig()
    print(f"\nwhole benchmarks, measured by the monitor's window rules in simulated time: the step runs back to back "
          f"through its windows; counter updates every 100 or 20 ms at a random phase, {SENSOR_NOISE:.0%} noise on "
          f"each update, polled as the sampler plans for the read cost; {trials} benchmarks per row")
    print("error against the window length (no target: 3 windows of the given length, reads of 20 µs):")
    header = f"{'update':>7}  {'benchmark':<36}" + "".join(f"{f'{length:g} s':>16}" for length in WINDOW_LENGTHS_S)
    print(header)
    print(f"{'':>7}  {'':<36}" + f"{'worst% (unc%)':>16}" * len(WINDOW_LENGTHS_S))
    print("-" * len(header))
    rows = length_rows(trials, seed)
    for update_s in UPDATE_PERIODS_S:
        for name in list(BENCHMARKS)[:2]:
            cells = [r for r in rows if r["update_s"] == update_s and r["benchmark"] == name]
            print(f"{update_s * 1000:>5g}ms  {name:<36}"
                  + "".join(f"{r['worst_pct']:.2f} ({r['unc_pct']:.2f})".rjust(16) for r in cells))
    print(f"adaptive windows at the defaults (target ±{config.target_pct:g}%, floor: edges under a third of it, "
          f"ceiling {config.max_window_s:g} s, at most {config.repeats} windows); target: the reported uncertainty "
          f"covers the error in at least {COVERAGE_TARGET:.0%} of records")
    header = (f"{'update':>7}  {'read cost':<28}{'poll Hz':>8}  {'benchmark':<36}{'seconds':>8}{'windows':>8}"
              f"{'reached':>8}{'unc%':>12}{'worst err%':>11}{'covered':>8}")
    print(header)
    print("-" * len(header))
    adaptive = adaptive_rows(trials, seed, costs)
    for row in adaptive:
        uncertainties = f"{row['unc_low']:.2f}-{row['unc_high']:.2f}"
        print(f"{row['update_s'] * 1000:>5g}ms  {row['cost']:<28}{row['hz']:>8.1f}  {row['benchmark']:<36}"
              f"{row['seconds']:>8.1f}{row['windows']:>8.1f}{row['reached']:>8.0%}{uncertainties:>12}"
              f"{row['worst_pct']:>11.3f}{sum(row['covered']) / len(row['covered']):>8.0%}")
    covered = [c for row in adaptive for c in row["covered"]]
    share = sum(covered) / len(covered)
    print(f"seconds: the windows' total per benchmark (each also runs {2 * EDGE_RUN_UPDATES:g} update periods and a "
          f"random offset around it); reached: the share that stopped at the target (the others stopped after "
          f"{config.repeats} windows and say so); the reported uncertainty covers the error in {share:.1%} of "
          f"{len(covered)} records")
    return share >= COVERAGE_TARGET


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


def nvml_like_channels(cost: ReadCost, watts: float = 200.0) -> list[Channel]:
    """A counter (primary) and an instant channel like NVML's, each read costing `cost`."""
    start = time.perf_counter()

    def counter() -> float:
        cost.spend(1.0)
        return watts * (time.perf_counter() - start)

    def instant() -> float:
        cost.spend(1.0)
        return watts

    return [Channel("overhead:counter", "simulated", "counter", "simulated GPU", read=counter, sensor="overhead"),
            Channel("overhead:instant", "simulated", "instant", "simulated GPU", read=instant, sensor="overhead")]


def sampler_for(channels: list[Channel], hz: float) -> Sampler:
    """A sampler as a run makes it: the first channel primary, the others secondary."""
    return Sampler(channels, hz, primary=[c.name for c in channels[:1]])


def _keep_busy(seconds: float, busy: bool) -> None:
    end = time.perf_counter() + seconds
    if not busy:
        time.sleep(seconds)
    while time.perf_counter() < end:
        python_workload_s()


def thread_cpu(channels: list[Channel], hz: float, seconds: float, busy: bool) -> tuple[float, dict]:
    """The sampler thread's CPU in % of one core over `seconds` after SETTLE_S, with the main
    thread asleep or busy; and the thread's stats."""
    with sampler_for(channels, hz) as sampler:
        _keep_busy(SETTLE_S, busy)
        settled = sampler.stats()
        _keep_busy(seconds, busy)
    stats = sampler.stats()
    polled = stats["cpu_polled_s"] - settled["cpu_polled_s"]
    return 100 * (stats["cpu_s"] - settled["cpu_s"]) / polled, stats


def thread_cpu_pct(channels: list[Channel], hz: float, seconds: float, busy: bool) -> float:
    return thread_cpu(channels, hz, seconds, busy)[0]


def workload_times(channels: list[Channel], hz: float, trials: int) -> dict[str, list[float]]:
    """Workload times with no thread, with the sampler's bare loop (no channels), and with the sampler.

    Both samplers keep running, paused between their trials, so each trial sees a sampler in
    its steady-state plan; interleaved, so drift in the machine's load hits all three alike.
    """
    samplers = {"bare loop": sampler_for([], hz), "sampler": sampler_for(channels, hz)}
    for sampler in samplers.values():
        sampler.start()
    time.sleep(SETTLE_S)
    for sampler in samplers.values():
        sampler.pause()
    python_workload_s()
    times = {"off": [], **{name: [] for name in samplers}}
    try:
        for _ in range(trials):
            times["off"].append(python_workload_s())
            for name, sampler in samplers.items():
                sampler.resume(wait=False)
                times[name].append(python_workload_s())
                sampler.pause()
    finally:
        for sampler in samplers.values():
            sampler.stop()
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


def _change(interval) -> str:
    return f"{100 * (interval.ratio - 1):+.2f} [{100 * (interval.low - 1):+.2f}, {100 * (interval.high - 1):+.2f}]"


def _within_target(interval) -> bool:
    return 1 - OVERHEAD_TARGET_PCT / 100 < interval.low and interval.high < 1 + OVERHEAD_TARGET_PCT / 100


def sampler_overhead(seconds: float = 5.0, trials: int = 31, hz: float = 100.0, device: Device | None = None,
                     sweep_costs=READ_COSTS[1:]) -> int:
    """Print the sampler's CPU cost and how much it changes a workload's time, with reads of 20 µs
    and then with each of `sweep_costs`; 0 when all are under 1%.

    Beside the figures the targets apply to, it prints two controls that tell the platform's
    part from the sampler's: the CPU of the sampler's loop with nothing to read (what one
    thread wake-up costs on this machine), and the workload's change under that bare loop.
    Where `device` has a real power source (NVML on a GPU host), the sampler's CPU with its
    channels is measured too and held to the same target.
    """
    channels = nvml_like_channels(NOMINAL_COST)
    floor_pct, floor_stats = thread_cpu([], hz, seconds, busy=False)
    idle_pct, idle_stats = thread_cpu(channels, hz, seconds, busy=False)
    busy_pct = thread_cpu_pct(channels, hz, seconds, busy=True)
    host_label, host_pcts = host_sensor_cpu_pct(device, hz, seconds)
    times = workload_times(channels, hz, trials)
    vs_off = median_ratio_interval(times["off"], times["sampler"])
    vs_bare = median_ratio_interval(times["bare loop"], times["sampler"])

    print(f"sampler-overhead: {len(channels)} channels asked for at {hz:g} Hz, each read burning "
          f"{NOMINAL_COST.cpu_s * 1e6:.0f} µs of CPU (like a cheap NVML call), polled at "
          f"{idle_stats['plan_hz']:.1f} Hz within the thread's budget of {100 * CPU_BUDGET:g}% of a core; workload: "
          f"a GIL-holding Python loop of {statistics.median(times['off']) * 1000:.0f} ms, {trials} interleaved trials; "
          f"CPU over {seconds:g} s after the first {SETTLE_S:g} s")
    print(f"{'measure':<58}{'value':>26}{'target':>8}")
    print(f"{'sampler thread CPU, % of one core, machine idle':<58}{idle_pct:>26.3f}{'< 1':>8}")
    print(f"{'sampler thread CPU, % of one core, workload running':<58}{busy_pct:>26.3f}{'< 1':>8}")
    print(f"{'workload time, sampling on vs off, % [95% CI]':<58}{_change(vs_off):>26}{'± 1':>8}")
    print(f"this host's sensors: {host_label}")
    for condition, pct in zip(("machine idle", "workload running"), host_pcts):
        print(f"{'  sampler thread CPU with them, % of one core, ' + condition:<58}{pct:>26.3f}{'< 1':>8}")
    print("controls (no target):")
    print(f"{'  bare loop CPU (no channels: the wake-ups alone), %':<58}{floor_pct:>26.3f}")
    print(f"{'  workload time, sampling on vs bare loop, % [95% CI]':<58}{_change(vs_bare):>26}")
    cpu_met = max(idle_pct, busy_pct, *host_pcts) < OVERHEAD_TARGET_PCT
    time_met = _within_target(vs_off)

    print()
    print("read-cost sweep: the same two channels, each read costing what the first column says; the thread "
          "plans its rates from the costs it measures")
    header = (f"{'read cost':<30}{'poll Hz':>8}{'2nd Hz':>8}{'read ms':>9}{'CPU %':>8}"
              f"{'workload on vs off, % [95% CI]':>34}  ok")
    print(header)
    print("-" * len(header))
    for cost in sweep_costs:
        costly = nvml_like_channels(cost)
        pct, stats = thread_cpu(costly, hz, seconds, busy=False)
        costly_times = workload_times(costly, hz, trials)
        change = median_ratio_interval(costly_times["off"], costly_times["sampler"])
        read_ms = 1e3 * stats["channels"]["overhead:counter"]["read_s_mean"]
        met = pct < OVERHEAD_TARGET_PCT and _within_target(change)
        cpu_met, time_met = cpu_met and pct < OVERHEAD_TARGET_PCT, time_met and _within_target(change)
        secondary_hz = stats["channels"]["overhead:instant"]["plan_hz"]
        print(f"{cost.describe():<30}{stats['plan_hz']:>8.1f}{secondary_hz:>8.2f}{read_ms:>9.2f}"
              f"{pct:>8.3f}{_change(change):>34}  {'yes' if met else 'NO'}")
    if cpu_met and time_met:
        print("result: all targets met")
        return 0
    print("result: targets missed" + ("" if cpu_met else "; the thread's CPU is over 1% of a core")
          + ("" if time_met else "; the workload's change is not shown to be within ±1%"))
    if floor_pct >= OVERHEAD_TARGET_PCT / 2:
        print(f"note: on this machine a thread waking {floor_stats['plan_hz']:.0f} times a second costs "
              f"{floor_pct:.2f}% of a core with nothing to do (slow timer wake-ups, as under nested "
              "virtualisation): most of the sampler's cost here is the platform's, and it lowers the rates "
              "the budget allows")
    return 1
