"""A simulated NVML-like sensor over a known power trace, for tests and the self-checks.

It models what NVML shows on A100/H100 (Yang, Adámek, Armour, SC24): every 100 ms the
instantaneous reading becomes the average of the last 25 ms, the rolling reading the
average of the last 1 s, and the energy counter the integral so far, in whole mJ. Between
updates every reading repeats. Time is simulated (seconds from 0), so nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Callable

import numpy as np

from wattbench.power.base import Channel, Probe, SensorFault, SourceStatus
from wattbench.power.nvml import AVERAGE_SETTLE_S, INSTANT_SETTLE_S

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


def workload(trace: PowerFn, idle_w: float, start_s: float, duration_s: float) -> PowerFn:
    """`trace` (timed from its own start) during [start_s, start_s + duration_s], idle around it."""
    def power(t: np.ndarray) -> np.ndarray:
        running = (t >= start_s) & (t < start_s + duration_s)
        return np.where(running, trace(t - start_s), idle_w)
    return power


class SimulatedSensor:
    """The readings an NVML-like sensor would give for `power` over [0, duration_s].

    The true energy is integrated on a fine grid (`grid_s`); `phase_s` places the sensor's
    100 ms update grid.
    """

    def __init__(self, power: PowerFn, duration_s: float, phase_s: float = 0.0, grid_s: float = GRID_S):
        self.phase_s = phase_s
        self.grid = np.arange(0.0, duration_s + grid_s, grid_s)
        # Midpoint rule per cell: exact for piecewise-constant power with edges on the grid.
        cell_power = power(self.grid[:-1] + grid_s / 2)
        self.cumulative_j = np.concatenate(([0.0], np.cumsum(cell_power) * grid_s))

    def energy_at(self, t) -> np.ndarray:
        return np.interp(t, self.grid, self.cumulative_j)

    def true_energy(self, start_s: float, end_s: float) -> float:
        return float(self.energy_at(end_s) - self.energy_at(start_s))

    def last_update(self, t) -> np.ndarray:
        return self.phase_s + np.floor((np.asarray(t) - self.phase_s) / UPDATE_S) * UPDATE_S

    def _average(self, t, window_s: float) -> np.ndarray:
        update = self.last_update(t)
        begin = np.maximum(update - window_s, 0.0)
        return (self.energy_at(update) - self.energy_at(begin)) / np.maximum(update - begin, 1e-12)

    def instant_w(self, t) -> np.ndarray:
        return np.round(self._average(t, INSTANT_WINDOW_S) / POWER_STEP_W) * POWER_STEP_W

    def average_w(self, t) -> np.ndarray:
        return np.round(self._average(t, AVERAGE_WINDOW_S) / POWER_STEP_W) * POWER_STEP_W

    def counter_j(self, t) -> np.ndarray:
        return np.floor(self.energy_at(self.last_update(t)) / COUNTER_STEP_J) * COUNTER_STEP_J


def simulated_channels(prefix: str = "sim") -> dict[str, Channel]:
    """Descriptions of NVML-shaped channels (same methods and settle times) for simulated readings."""
    return {
        "counter": Channel(f"{prefix}:counter", "simulated", "counter", "simulated GPU", resolution=COUNTER_STEP_J),
        "instant": Channel(f"{prefix}:instant", "simulated", "instant", "simulated GPU", settle_s=INSTANT_SETTLE_S,
                           resolution=POWER_STEP_W),
        "average": Channel(f"{prefix}:average", "simulated", "average", "simulated GPU", settle_s=AVERAGE_SETTLE_S,
                           resolution=POWER_STEP_W),
    }


def busy_cpu(seconds: float) -> None:
    """Spend about `seconds` of CPU with the GIL released, as an NVML call through ctypes does."""
    if seconds <= 0:
        return
    chunk = b"\0" * 4096  # above 2047 bytes hashlib releases the GIL
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(chunk).digest()


def live_probe(power: PowerFn, duration_s: float, read_cost_s: float = 0.0, methods=("counter", "instant"),
               clock: Callable[[], float] = time.perf_counter) -> Probe:
    """A source whose polled channels read a SimulatedSensor at the real time since creation.

    `read_cost_s` is CPU burnt per read (an NVML call costs tens of µs). Reading past
    `duration_s` raises a SensorFault, as a device lost mid-run would.
    """
    # The sensor starts AVERAGE_WINDOW_S early, so the first readings already have a full history.
    sensor = SimulatedSensor(power, duration_s + AVERAGE_WINDOW_S, grid_s=1e-3)
    start = clock() - AVERAGE_WINDOW_S
    readers = {"counter": sensor.counter_j, "instant": sensor.instant_w, "average": sensor.average_w}

    def reader(method: str):
        def read() -> float:
            busy_cpu(read_cost_s)
            elapsed = clock() - start
            if elapsed > duration_s + AVERAGE_WINDOW_S:
                raise SensorFault("simulated sensor: trace ended (device lost)", permanent=True)
            return float(readers[method](elapsed))
        return read

    templates = simulated_channels()
    channels = [dataclasses.replace(templates[m], read=reader(m)) for m in methods]
    status = SourceStatus("simulated", True, f"simulated NVML-like sensor: {', '.join(methods)}")
    return Probe(status, channels, channels[:1], {"device_name": "simulated GPU", "power_limit_w": None,
                                                   "scope": "simulated GPU"})
