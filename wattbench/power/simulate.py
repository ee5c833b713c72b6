"""A simulated NVML-like sensor over a known power trace, for tests and the self-checks.

It models what NVML shows on A100/H100 (Yang, Adámek, Armour, SC24): every 100 ms the
instantaneous reading becomes the average of the last 25 ms, the rolling reading the
average of the last 1 s, and the energy counter the integral so far, in whole mJ. Between
updates every reading repeats. The update period can be set (newer GPUs and drivers update
every 20 to 100 ms), and so can noise on what each counter update adds. Time is simulated
(seconds from 0), so nothing sleeps.

Reads cost what a `ReadCost` says: from tens of µs to several ms, burning CPU (a driver
spinning) or blocked in the driver (no CPU), the sensor read at an unknown point inside the
call. `poll_readings` gives, in simulated time, what the sampler records; `live_probe` is a
source whose reads really take that long, for the real sampler thread. `SimulatedRun` runs a
benchmark's energy windows (`wattbench.power.monitor.run_windows`, the monitor's own rules) in
simulated time, for the self-checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from typing import Callable

import numpy as np

from wattbench.power import monitor
from wattbench.power.base import Channel, Probe, SensorFault, SourceStatus
from wattbench.power.nvml import AVERAGE_SETTLE_S, INSTANT_SETTLE_S
from wattbench.power.sampler import LOOKBACK_S, ChannelWindow, Trace, measure_channel, update_period_s

PowerFn = Callable[[np.ndarray], np.ndarray]

UPDATE_S = 0.1
INSTANT_WINDOW_S = 0.025
AVERAGE_WINDOW_S = 1.0
COUNTER_STEP_J = 0.001
POWER_STEP_W = 0.001
GRID_S = 1e-4


def constant(watts: float) -> PowerFn:
    return lambda t: np.full_like(t, watts, dtype=np.float64)


def square_wave(low_w: float, high_w: float, period_s: float, duty: float = 0.5) -> PowerFn:
    return lambda t: np.where(np.mod(t, period_s) < duty * period_s, high_w, low_w)


def bursts(base_w: float, burst_w: float, every_s: float, width_s: float) -> PowerFn:
    return square_wave(base_w, burst_w, every_s, duty=width_s / every_s)


def ramp(start_w: float, end_w: float, over_s: float) -> PowerFn:
    """Linear from start_w to end_w over `over_s`, then repeating (a sawtooth)."""
    return lambda t: start_w + (end_w - start_w) * np.mod(t, over_s) / over_s


def warming(trace: PowerFn, rise: float, tau_s: float) -> PowerFn:
    """`trace` scaled up by a GPU warming from idle: by `rise` (a fraction) at most, approached with
    time constant `tau_s` (leakage power grows with temperature)."""
    return lambda t: trace(t) * (1 + rise * (1 - np.exp(-np.maximum(t, 0.0) / tau_s)))


def workload(trace: PowerFn, idle_w: float, start_s: float, duration_s: float) -> PowerFn:
    """`trace` (timed from its own start) during [start_s, start_s + duration_s], idle around it."""
    def power(t: np.ndarray) -> np.ndarray:
        running = (t >= start_s) & (t < start_s + duration_s)
        return np.where(running, trace(t - start_s), idle_w)
    return power


class SimulatedSensor:
    """The readings an NVML-like sensor would give for `power` over [0, duration_s].

    The true energy is integrated on a fine grid (`grid_s`); `phase_s` places the sensor's
    update grid, of period `update_s`. With `noise`, what each update adds to the counter is off
    by that relative standard deviation (independent between updates, from `seed`).
    """

    def __init__(self, power: PowerFn, duration_s: float, phase_s: float = 0.0, grid_s: float = GRID_S,
                 update_s: float = UPDATE_S, noise: float = 0.0, seed: int = 0):
        self.phase_s = phase_s
        self.update_s = update_s
        self.grid = np.arange(0.0, duration_s + grid_s, grid_s)
        # Midpoint rule per cell: exact for piecewise-constant power with edges on the grid.
        cell_power = power(self.grid[:-1] + grid_s / 2)
        self.cumulative_j = np.concatenate(([0.0], np.cumsum(cell_power) * grid_s))
        self.noisy_j = None
        if noise > 0:
            updates = self.last_update(self.grid[-1]) - update_s * np.arange(int(duration_s / update_s) + 2)[::-1]
            added = np.diff(self.energy_at(updates), prepend=0.0)
            self.noisy_j = np.cumsum(added * (1 + noise * np.random.default_rng(seed).standard_normal(len(added))))
            self._first_update = updates[0]

    def energy_at(self, t) -> np.ndarray:
        return np.interp(t, self.grid, self.cumulative_j)

    def true_energy(self, start_s: float, end_s: float) -> float:
        return float(self.energy_at(end_s) - self.energy_at(start_s))

    def last_update(self, t) -> np.ndarray:
        return self.phase_s + np.floor((np.asarray(t) - self.phase_s) / self.update_s) * self.update_s

    def _average(self, t, window_s: float) -> np.ndarray:
        update = self.last_update(t)
        begin = np.maximum(update - window_s, 0.0)
        return (self.energy_at(update) - self.energy_at(begin)) / np.maximum(update - begin, 1e-12)

    def instant_w(self, t) -> np.ndarray:
        return np.round(self._average(t, INSTANT_WINDOW_S) / POWER_STEP_W) * POWER_STEP_W

    def average_w(self, t) -> np.ndarray:
        return np.round(self._average(t, AVERAGE_WINDOW_S) / POWER_STEP_W) * POWER_STEP_W

    def counter_j(self, t) -> np.ndarray:
        if self.noisy_j is None:
            energy = self.energy_at(self.last_update(t))
        else:
            index = np.round((self.last_update(t) - self._first_update) / self.update_s).astype(int)
            energy = self.noisy_j[np.clip(index, 0, len(self.noisy_j) - 1)]
        return np.floor(energy / COUNTER_STEP_J) * COUNTER_STEP_J


@dataclasses.dataclass(frozen=True)
class ReadCost:
    """What one read costs: CPU burnt in the call, and time blocked in it without CPU."""

    cpu_s: float = 0.0
    blocked_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.cpu_s + self.blocked_s

    def spend(self, fraction: float) -> None:
        """Spend `fraction` of the cost now, for real."""
        busy_cpu(fraction * self.cpu_s)
        if self.blocked_s > 0:
            time.sleep(fraction * self.blocked_s)

    def describe(self) -> str:
        parts = [f"{value * 1e3:g} ms {kind}" for value, kind in ((self.cpu_s, "CPU"), (self.blocked_s, "blocked"))
                 if value > 0]
        return " + ".join(parts) or "free"


def poll_readings(read: Callable[[np.ndarray], np.ndarray], starts_s: np.ndarray, cost: ReadCost,
                  rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the sampler records from reads of `read` (a sensor's reading at given times) begun at
    `starts_s`, each taking cost.duration_s: the read's midpoint, the reading the sensor gave at a
    random point inside it, and the read's duration."""
    duration = cost.duration_s
    inside = np.array([rng.random() for _ in starts_s]) * duration
    return starts_s + duration / 2, read(starts_s + inside), np.full(len(starts_s), duration)


def poll_starts(hz: float, until_s: float, rng: random.Random) -> np.ndarray:
    """When reads begin at `hz`, from a random phase, each up to 1 ms late (the thread's wake-up)."""
    period = 1.0 / hz
    starts = np.arange(rng.uniform(0, period), until_s, period)
    return starts + np.array([rng.uniform(0, min(0.001, period / 2)) for _ in starts])


def polled_trace(read, hz: float, until_s: float, cost: ReadCost, rng: random.Random) -> Trace:
    """What the sampler would record from polling `read` at `hz` until `until_s`."""
    stamps, values, durations = poll_readings(read, poll_starts(hz, until_s, rng), cost, rng)
    return Trace(stamps, values, durations=durations)


def simulated_channels(prefix: str = "sim") -> dict[str, Channel]:
    """Descriptions of NVML-shaped channels (same methods and settle times) for simulated readings."""
    return {
        "counter": Channel(f"{prefix}:counter", "simulated", "counter", "simulated GPU", resolution=COUNTER_STEP_J,
                           sensor=prefix),
        "instant": Channel(f"{prefix}:instant", "simulated", "instant", "simulated GPU", settle_s=INSTANT_SETTLE_S,
                           resolution=POWER_STEP_W, sensor=prefix),
        "average": Channel(f"{prefix}:average", "simulated", "average", "simulated GPU", settle_s=AVERAGE_SETTLE_S,
                           resolution=POWER_STEP_W, sensor=prefix),
    }


def busy_cpu(seconds: float) -> None:
    """Spend about `seconds` of CPU with the GIL released, as an NVML call through ctypes does."""
    if seconds <= 0:
        return
    chunk = b"\0" * 4096  # above 2047 bytes hashlib releases the GIL
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(chunk).digest()


def live_probe(power: PowerFn, duration_s: float, cost: ReadCost = ReadCost(), methods=("counter", "instant"),
               clock: Callable[[], float] = time.perf_counter, seed: int = 0) -> Probe:
    """A source whose polled channels read a SimulatedSensor at the real time since creation.

    Each read really costs `cost`, the sensor read at a random point inside it. Reading past
    `duration_s` raises a SensorFault, as a device lost mid-run would.
    """
    # The sensor starts AVERAGE_WINDOW_S early, so the first readings already have a full history.
    sensor = SimulatedSensor(power, duration_s + AVERAGE_WINDOW_S, grid_s=1e-3)
    start = clock() - AVERAGE_WINDOW_S
    readers = {"counter": sensor.counter_j, "instant": sensor.instant_w, "average": sensor.average_w}
    rng = random.Random(seed)

    def reader(method: str):
        def read() -> float:
            inside = rng.random()
            cost.spend(inside)
            elapsed = clock() - start
            cost.spend(1 - inside)
            if elapsed > duration_s + AVERAGE_WINDOW_S:
                raise SensorFault("simulated sensor: trace ended (device lost)", permanent=True)
            return float(readers[method](elapsed))
        return read

    templates = simulated_channels()
    channels = [dataclasses.replace(templates[m], read=reader(m)) for m in methods]
    status = SourceStatus("simulated", True, f"simulated NVML-like sensor: {', '.join(methods)}")
    return Probe(status, channels, channels[:1], {"device_name": "simulated GPU", "power_limit_w": None,
                                                   "scope": "simulated GPU"})


#: Simulated seconds of an idle GPU before a SimulatedRun's benchmark starts: the readings the
#: monitor measures the update period from, as it does in its idle baseline.
IDLE_LEAD_S = 1.5


class SimulatedRun:
    """`wattbench.power.monitor.run_windows`' runner in simulated time.

    A GPU idles at `idle_w` for IDLE_LEAD_S, then runs a step of `call_s` back to back (the
    energy windows never stop it) with power `power` (timed from the first call); its energy
    counter (update period `update_s`, a random phase, `noise` per update) is polled at `hz`
    with reads costing `cost`, as the sampler would poll it. `true_joules` holds each window's
    true energy. The simulated GPU never idles between calls: the synchronisations and the
    monitor's own work between windows take no time here.
    """

    def __init__(self, power: PowerFn, call_s: float, seconds: float, rng: random.Random, *, idle_w: float = 60.0,
                 update_s: float = UPDATE_S, noise: float = 0.0, hz: float = 100.0, cost: ReadCost = ReadCost()):
        self.call_s = call_s
        end = IDLE_LEAD_S + seconds
        self.sensor = SimulatedSensor(workload(power, idle_w, IDLE_LEAD_S, seconds), end + 2.0,
                                      phase_s=rng.uniform(0, update_s), update_s=update_s, noise=noise,
                                      seed=rng.randrange(2 ** 32))
        self.trace = polled_trace(self.sensor.counter_j, hz, end + 1.0, cost, rng)
        self.channel = simulated_channels()["counter"]
        self.now = IDLE_LEAD_S
        self.true_joules: list[float] = []

    def measured_update_s(self) -> float | None:
        """The update period as the monitor measures it: from the readings before the first call."""
        idle = self.trace.timestamps < IDLE_LEAD_S
        return update_period_s(Trace(self.trace.timestamps[idle], self.trace.values[idle]), is_counter=True)

    def clock(self) -> float:
        return self.now

    def run(self, seconds: float) -> int:
        calls = max(1, math.ceil(round(seconds / self.call_s, 9)))
        self.now += calls * self.call_s
        return calls

    def window(self, seconds: float) -> tuple[float, float, int]:
        start = self.now
        calls = self.run(seconds)
        return start, self.now, calls

    def evaluate(self, start_s: float, end_s: float, call_s: float) -> ChannelWindow:
        """The window's counter energy from the readings the sampler would hold once the counter has
        updated after `end_s`."""
        self.true_joules.append(self.sensor.true_energy(start_s, end_s))
        times = self.trace.timestamps
        keep = (times >= start_s - LOOKBACK_S) & (times <= end_s + 1.0)
        trace = Trace(times[keep], self.trace.values[keep], durations=self.trace.durations[keep])
        return measure_channel(self.channel, trace, start_s, end_s, call_s)

    def true_joules_per_call(self, calls: list[int]) -> float:
        """What a record of these windows should say: their true joules over their calls."""
        return sum(self.true_joules) / sum(calls)

    def measure(self, config: monitor.PowerConfig, rng: random.Random, units_per_call: float = 1.0) -> dict:
        """The energy record the monitor would write for this benchmark under `config`: its windows
        follow `run_windows` with the rule the monitor would make (the update period measured
        from the idle readings, the poll interval and read time of this polling)."""
        measured = self.measured_update_s()
        read_s = float(self.trace.durations.max(initial=0.0))
        poll_s = float(np.median(np.diff(self.trace.timestamps)))
        rule = monitor.WindowRule.from_config(config, measured or config.offset_period_s, poll_s, read_s)
        windows, calls, stopped = monitor.run_windows(self, rule, rng)
        summary = monitor.combine(windows, calls)
        joules = summary["joules_per_call"]
        return {"source": "simulated", "method": "counter", "valid": joules is not None,
                "reason": None if joules is not None else f"energy invalid: {summary['reasons'][0]}",
                "joules_per_call": joules, "joules_per_unit": None if joules is None else joules / units_per_call,
                "units_per_joule": None if not joules else units_per_call / joules,
                "avg_power_w": summary["avg_power_w"], "uncertainty_pct": summary["uncertainty_pct"],
                "window_s": summary["window_s"], "windows": len(windows), "valid_windows": summary["valid_windows"],
                "calls_per_window": calls, "window_joules_per_call": summary["window_joules_per_call"],
                "adaptive": monitor.adaptive_block(rule, stopped, windows, summary, measured is not None)}
