"""`wattbench selfcheck gate`: how often the gate cries wolf, and how often it misses a regression.

Time is measured for real, here, on a small registry workload timed as the harness times it
(rounds of one call each, `time.perf_counter_ns`, the quick preset's plan). Each pair is two
measurements of the same step, the second optionally slowed down by `with_slowdown`: a test
hook that exists only for this check and the tests, never in a benchmark run. The two sides
of a pair are measured in alternating blocks of rounds, as a same-job A/B comparison in CI
would be, so that the machine's slow drift hits both alike; back-to-back pairs (baseline run,
then current run) are measured too and printed for information, with the drift they show.

Energy drives the monitor's own window logic (`wattbench.power.monitor.run_windows`, with
the default `PowerConfig`: the adaptive windows a run makes) on the simulated NVML-like sensor
of `wattbench.power.simulate`, in simulated time (`SimulatedRun`): the same workload at
unchanged time, its power raised or not, seen through the sensor's updates at a random phase,
its noise and the sampler's polls, the GPU warming during the windows and its thermal state
differing from run to run. Each record is what the monitor would write; the gate compares them
as it compares runs.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any, Callable

import torch

from wattbench.device import detect
from wattbench.gate.compare import compare_runs, describe_method
from wattbench.gate.config import GateConfig
from wattbench.power import simulate
from wattbench.power.monitor import EDGE_RUN_UPDATES, PowerConfig
from wattbench.stats import REGRESSION
from wattbench.timing import TimingPlan
from wattbench.workloads import case_by_id

CASE_ID = "gemm.infer-torch-fp32-M16-K512-N512"
PLAN = TimingPlan(min_time_s=0.2)  # the quick preset's
BLOCK_ROUNDS = 50
TIME_SCENARIOS = {"A/A (same code)": 0.0, "10% slower": 0.10, "3% slower": 0.03, "7% slower": 0.07}
#: scenario -> (the share of pairs the gate should flag, as a bound, "<=" or ">=")
TARGETS = {"A/A (same code)": (0.05, "<="), "10% slower": (0.95, ">="), "3% slower": (0.05, "<="),
           "energy A/A (same code)": (0.05, "<="), "energy +10%": (0.95, ">=")}
ENERGY_SCENARIOS = {"energy A/A (same code)": 0.0, "energy +10%": 0.10, "energy +6%": 0.06, "energy +8%": 0.08}
#: Scenarios without a target ("7% slower", "energy +6%", "energy +8%") are printed for information:
#: where the gate's sensitivity ends.

# The simulated energy measurement: a GPU step of 10 ms whose power alternates between two
# levels every 97 ms (close to the sensor's 100 ms update, the hardest case for its edges),
# measured as the monitor measures with its default PowerConfig. The sensor noise, the warming
# and the run-to-run thermal state are assumptions of this check, not measurements.
IDLE_W, LOW_W, HIGH_W, PERIOD_S = 60.0, 150.0, 350.0, 0.097
CALL_S, UNITS_PER_CALL = 0.01, 16.0
#: Relative noise on what each 100 ms counter update adds.
SENSOR_NOISE = 0.01
#: The GPU warms during a benchmark's windows: its power rises by up to WARMING, with WARMING_TAU_S.
WARMING, WARMING_TAU_S = 0.02, 30.0
#: Two runs' GPUs are not at the same temperature: a run's power differs by this (standard deviation).
RUN_TO_RUN = 0.005


def with_slowdown(step: Callable[[], Any], fraction: float) -> Callable[[], Any]:
    """Test hook: `step` followed by a busy-wait of `fraction` of that call's own duration.

    Scaling each call by its own time makes the slowdown exactly `fraction` whatever the
    machine's load does to the call. Used only by this self-check and the tests.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0:
        return step

    def slowed():
        start = time.perf_counter_ns()
        result = step()
        until = time.perf_counter_ns() + (time.perf_counter_ns() - start) * fraction
        while time.perf_counter_ns() < until:
            pass
        return result

    return slowed


def time_rounds(step: Callable[[], Any], rounds: int) -> list[float]:
    """Seconds per call, one call per round, as the harness's pedantic loop times them on a CPU."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        step()
        samples.append((time.perf_counter_ns() - start) * 1e-9)
    return samples


def interleaved_pair(base: Callable[[], Any], cur: Callable[[], Any], rounds: int,
                     block: int = BLOCK_ROUNDS) -> tuple[list[float], list[float]]:
    """Both sides measured in alternating blocks (ABBA order), so drift hits them alike."""
    for step in (base, cur):
        time_rounds(step, PLAN.warmup_rounds)
    base_samples, cur_samples = [], []
    while len(base_samples) < rounds:
        count = min(block, rounds - len(base_samples))
        order = ((base, base_samples), (cur, cur_samples))
        for step, samples in order if len(base_samples) % (2 * block) == 0 else order[::-1]:
            samples.extend(time_rounds(step, count))
    return base_samples, cur_samples


def back_to_back_pair(base: Callable[[], Any], cur: Callable[[], Any], rounds: int) -> tuple[list[float], list[float]]:
    """A whole baseline run, then a whole current run, as two CI jobs would measure them."""
    sides = []
    for step in (base, cur):
        time_rounds(step, PLAN.warmup_rounds)
        sides.append(time_rounds(step, rounds))
    return sides[0], sides[1]


def run_file(samples: list[float], energy: dict | None = None) -> dict:
    """A minimal run file holding one benchmark: what the gate needs to compare two measurements."""
    info = {"workload": "selfcheck", "impl": "torch", "style": "infer", "precision": "fp32", "size": "pair",
            "device_name": "selfcheck", "interpreted": False, "unit": "tokens", "units_per_call": UNITS_PER_CALL,
            "timing": {"method": "perf_counter", "rounds": len(samples), "samples_s": samples},
            "energy": energy or {"method": "none", "joules_per_unit": None, "reason": "not simulated"}}
    return {"benchmarks": [{"name": "selfcheck", "extra_info": info}],
            "wattbench": {"device_name": "selfcheck"}, "machine_info": {"wattbench": {}}}


def flagged(base_run: dict, cur_run: dict, metric: str, config: GateConfig = GateConfig()) -> bool:
    """Whether the gate declares a regression in `metric` for this pair."""
    bench = compare_runs(base_run, cur_run, config).benchmarks[0]
    return any(m.metric == metric and m.verdict == REGRESSION for m in bench.metrics)


def simulated_energy(increase: float, rng: random.Random, config: PowerConfig = PowerConfig()) -> dict:
    """The energy record the power monitor would write under `config` (by default the harness's)
    for the simulated workload with its power scaled by 1 + `increase` (and this run's thermal state)."""
    scale = (1 + increase) * (1 + rng.gauss(0.0, RUN_TO_RUN))
    power = simulate.warming(simulate.square_wave(LOW_W * scale, HIGH_W * scale, PERIOD_S), WARMING, WARMING_TAU_S)
    longest = config.repeats * (max(config.max_window_s, config.min_window_s)
                                + (2 * EDGE_RUN_UPDATES + 1) * simulate.UPDATE_S + CALL_S)
    run = simulate.SimulatedRun(power, CALL_S, longest, rng, idle_w=IDLE_W, noise=SENSOR_NOISE)
    return run.measure(config, rng, UNITS_PER_CALL)


def time_figures(pairs: int, measure: Callable, step: Callable[[], Any], rounds: int,
                 scenarios: dict[str, float]) -> dict[str, dict]:
    """Per scenario: the share of pairs flagged as a time regression, and the pairs' log ratios.

    The scenarios take turns pair by pair, so that a burst of load on the machine falls on all
    of them alike instead of on whichever scenario was running.
    """
    slowed = {name: with_slowdown(step, fraction) for name, fraction in scenarios.items()}
    hits = dict.fromkeys(scenarios, 0)
    logs: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(pairs):
        for name, current in slowed.items():
            base, cur = measure(step, current, rounds)
            hits[name] += flagged(run_file(base), run_file(cur), "time")
            logs[name].append(math.log(statistics.median(cur) / statistics.median(base)))
    return {name: {"rate": hits[name] / pairs, "median_ratio": math.exp(statistics.median(logs[name])),
                   "logs": logs[name]} for name in scenarios}


def energy_figures(pairs: int, seed: int, scenarios: dict[str, float]) -> dict[str, dict]:
    """Per scenario: the share of pairs flagged as an energy regression, the median ratio, and what
    the records' windows reached: their largest uncertainty, mean seconds of windows and windows."""
    rng = random.Random(seed)
    samples = [CALL_S] * PLAN.min_rounds  # unchanged time on both sides
    figures = {}
    for name, increase in scenarios.items():
        hits, ratios, records = 0, [], []
        for _ in range(pairs):
            base, cur = simulated_energy(0.0, rng), simulated_energy(increase, rng)
            hits += flagged(run_file(samples, base), run_file(samples, cur), "energy")
            ratios.append(cur["joules_per_unit"] / base["joules_per_unit"])
            records += [base, cur]
        figures[name] = {"rate": hits / pairs, "median_ratio": statistics.median(ratios),
                         "uncertainty_pct": max(r["uncertainty_pct"] for r in records),
                         "window_s": statistics.fmean(sum(r["adaptive"]["lengths_s"]) for r in records),
                         "windows": statistics.fmean(r["windows"] for r in records),
                         "reached": sum(r["adaptive"]["stopped"] == "target reached" for r in records) / len(records)}
    return figures


def robust_spread(values: list[float]) -> float:
    """A standard deviation that one disturbed pair cannot inflate: 1.4826 x the median absolute deviation."""
    center = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - center) for v in values)


def meets(name: str, rate: float) -> bool:
    bound, direction = TARGETS[name]
    return rate <= bound if direction == "<=" else rate >= bound


def gate_error_rates(pairs: int = 40, seed: int = 0) -> int:
    """Measure and print the gate's error rates; 0 when every target is met."""
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 20:
        raise ValueError(f"pairs must be an integer >= 20 (the issue's minimum), got {pairs!r}")
    device = detect("cpu")
    step = case_by_id(CASE_ID).build(device, seed)
    threads = torch.get_num_threads()
    # One thread: on two busy cores a two-thread matmul waits for whichever thread was preempted.
    torch.set_num_threads(1)
    try:
        time_rounds(step, 20)
        rounds = PLAN.rounds_for(statistics.median(time_rounds(step, 21)))
        config = GateConfig()
        print(f"gate selfcheck: {CASE_ID} on {device.name}, 1 torch thread, {rounds} rounds per side "
              f"(the quick preset's plan), {pairs} pairs per scenario; thresholds: "
              f"time {config.thresholds['time']:.0%}, energy {config.thresholds['energy']:.0%}")
        print("method: " + "\n        ".join(describe_method(config)))
        started = time.perf_counter()
        interleaved = time_figures(pairs, interleaved_pair, step, rounds, TIME_SCENARIOS)
        back_to_back = time_figures(pairs, back_to_back_pair, step, rounds,
                                    {"A/A (same code)": 0.0, "10% slower": 0.10})
    finally:
        torch.set_num_threads(threads)
    energy = energy_figures(pairs, seed, ENERGY_SCENARIOS)
    elapsed = time.perf_counter() - started
    ok = _section(f"time, sides interleaved in blocks of {BLOCK_ROUNDS} rounds (a same-job A/B comparison):",
                  interleaved, pairs, judged=True)
    power = PowerConfig()
    ok &= _section(f"energy, the monitor's default windows (target ±{power.target_pct:g}%, at most {power.repeats} "
                   f"windows of at most {power.max_window_s:g} s) on a simulated NVML-like counter (mJ every "
                   f"{simulate.UPDATE_S * 1000:g} ms, {SENSOR_NOISE:.0%} noise per update, polled at 100 Hz), a "
                   f"{CALL_S * 1000:g} ms step whose power alternates {LOW_W:g}/{HIGH_W:g} W every "
                   f"{PERIOD_S * 1000:g} ms, warming by up to {WARMING:.0%}, runs {RUN_TO_RUN:.1%} apart; "
                   "time unchanged:", energy, pairs, judged=True)
    windows = [figure for figure in energy.values()]
    print(f"the records' windows: {statistics.fmean(f['window_s'] for f in windows):.1f} s in "
          f"{statistics.fmean(f['windows'] for f in windows):.1f} windows per benchmark on average (besides "
          f"{2 * EDGE_RUN_UPDATES:g} update periods and a random offset around each window); target reached in "
          f"{statistics.fmean(f['reached'] for f in windows):.0%} of records")
    _section("for information, not a target: back-to-back runs (a whole baseline run, then a whole current run):",
             back_to_back, pairs, judged=False)
    drift = robust_spread(back_to_back["A/A (same code)"]["logs"])
    print(f"run-to-run drift between back-to-back runs here: {drift:.1%} (spread of the log ratio, 1.4826 x MAD). "
          f"To gate runs from separate jobs here, set `drift = \"{drift:.1%}\"` in [tool.wattbench.gate] "
          "(docs/ci.md).")
    print(f"took {elapsed:.0f} s")
    print("result: all targets met" if ok else "result: targets missed")
    return 0 if ok else 1


def _section(title: str, figures: dict[str, dict], pairs: int, judged: bool) -> bool:
    """Print one table of figures; whether its targets are met (scenarios without a target, and
    all of a section not `judged`, are printed for information)."""
    print(f"\n{title}")
    print(f"{'scenario':<28}{'pairs':>6}{'flagged':>9}{'target':>9}{'median ratio':>14}" + ("  met" if judged else ""))
    ok = True
    for name, figure in figures.items():
        met = meets(name, figure["rate"]) if judged and name in TARGETS else None
        ok &= met is not False
        spread = figure.get("uncertainty_pct")
        print(_row(name, pairs, figure, met, judged) + (f"   (records' uncertainty up to ±{spread:.2g}%)"
                                                          if spread else ""))
    return ok


def _row(name: str, pairs: int, figure: dict, met: bool | None, judged: bool) -> str:
    bound, direction = TARGETS.get(name, (None, ""))
    target = "-" if bound is None else direction + format(bound, ".0%")
    row = f"{name:<28}{pairs:>6}{figure['rate']:>9.0%}{target:>9}{figure['median_ratio']:>14.3f}"
    if not judged:
        return row
    return row + ("  (info)" if met is None else f"  {'yes' if met else 'NO'}")
