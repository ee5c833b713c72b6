"""PowerMonitor: the energy side of one benchmark run.

Entering it probes the sources once, starts the sampler, measures the idle baseline and the
sensor's real update period (it differs across GPUs and drivers: 20 to 100 ms on NVIDIA's).
`measure` then runs a benchmark's step in its own steady-state windows, separate from the
timing runs (`run_windows`, the rules in `WindowRule`): the step runs back to back through
all of them, so that power is steady across every edge; each window starts after a random
offset within one update period, so that the windows see the sensor at different phases; the
windows last at least long enough for their edges to stay under a third of the target
uncertainty (the floor), at most `max_window_s` (the ceiling), and they stop as soon as the
energy per call reaches the target (`target_pct`, 95%), or after `repeats` windows.

Between benchmarks' energy windows the sampler is paused (unless the whole trace is to be
saved), so that timing rounds run without its wake-ups.

Each window also records the GPU's conditions (temperature and clocks at its edges, the
clock-event reasons seen during it; see `wattbench.conditions`), and with `cooldown_c` set,
`measure` first waits for the GPU to cool back to within `cooldown_c` degrees of the
temperature at the end of the idle baseline.

In a power sweep (`readback` given: wattbench.power.knobs' `Applied.readback`), the settings in force
are read back before the first window and after each one, and the record's `setting` block
(knobs.held_over) says whether the sweep's setting held throughout; a record where it did not is warned about.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from wattbench.conditions import ConditionSensors, WindowWatch, summarize_conditions, wait_until_cool
from wattbench.device import Device
from wattbench.power import hwmon, knobs, nvml, rapl, replay
from wattbench.power.attribution import cumulative_energy
from wattbench.power.base import Channel, Probe, SourceStatus
from wattbench.power.boundary import boundary
from wattbench.power.sampler import ChannelWindow, Sampler
from wattbench.record import EnergyRecord
from wattbench.schema import is_finite_number

#: The figures every energy record carries (None where not measured): record.EnergyRecord's.
ENERGY_FIELDS = EnergyRecord.FIGURES

#: Two-sided 95% Student t quantiles by degrees of freedom (`t95` reads it).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13,
       20: 2.09, 30: 2.04}


def t95(dof: int) -> float:
    """The 95% Student t quantile for `dof` degrees of freedom, from the table's nearest entry
    at or below it (never too small)."""
    if dof < 1:
        raise ValueError(f"dof must be at least 1, got {dof!r}")
    return T95[max(k for k in T95 if k <= dof)]

#: Fewer sensor updates than this in a window and the sensor's granularity shows: the floor never
#: plans a window shorter, and a window that sees fewer (under a low ceiling) is warned about.
MIN_UPDATES = 10

#: The step runs this many update periods before each window (plus its random start offset) and
#: after it, so that the counter's update intervals at both edges hold the workload's own power,
#: never an idle GPU starting or stopping.
EDGE_RUN_UPDATES = 1.2

#: How long entering waits for enough sensor updates to measure the update period when there is
#: no idle baseline to measure it in.
UPDATE_WAIT_S = 3.0

#: How often the cool-down reads the temperature.
COOLDOWN_POLL_S = 0.5

#: PowerConfig fields that must be finite numbers, and those among them that must be above zero.
NUMBERS = ("min_window_s", "max_window_s", "sample_hz", "idle_s", "offset_period_s", "cooldown_timeout_s")
POSITIVE = ("min_window_s", "max_window_s", "sample_hz", "cooldown_timeout_s")


@dataclass(frozen=True)
class PowerConfig:
    """How energy windows are measured.

    `target_pct` is the uncertainty (95%) each benchmark's energy per call should reach: its
    windows stop once it does (None: `repeats` windows of `min_window_s`, no target).
    `min_window_s` bounds every window from below, `max_window_s` from above (never below
    `min_window_s`), and `repeats` is the most windows. `offset_period_s` is the update
    period assumed where the sensor's own cannot be measured; `sysfs_root` is where RAPL and
    hwmon are looked for. `cooldown_c` (degrees above the idle baseline temperature, None for
    no cool-down) and `cooldown_timeout_s` set the wait before each benchmark's energy windows.
    """

    min_window_s: float = 1.0
    repeats: int = 3
    target_pct: float | None = 2.0
    max_window_s: float = 20.0
    idle_s: float = 10.0
    replay_path: str | None = None
    save_trace: bool = False
    sample_hz: float = 100.0
    offset_period_s: float = 0.1
    sysfs_root: str = "/sys"
    cooldown_c: float | None = None
    cooldown_timeout_s: float = 120.0

    def __post_init__(self):
        for name in NUMBERS + (("cooldown_c",) if self.cooldown_c is not None else ()):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise TypeError(f"{name} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and name in POSITIVE):
                raise ValueError(f"{name} must be {'positive' if name in POSITIVE else '>= 0'}, got {value!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {self.repeats!r}")
        if self.target_pct is not None:
            if not is_finite_number(self.target_pct):
                raise TypeError(f"target_pct must be a finite number or None, got {self.target_pct!r}")
            if not 0 < self.target_pct < 100:
                raise ValueError(f"target_pct must be above 0 and below 100, got {self.target_pct!r}")
        if self.replay_path is not None and not isinstance(self.replay_path, str):
            raise TypeError(f"replay_path must be a path string or None, got {self.replay_path!r}")


def probe_sources(device: Device, config: PowerConfig) -> list[Probe]:
    """Every source kind, in detection order: NVML, RAPL, hwmon, replay."""
    return [nvml.probe(device), rapl.probe(device, config.sysfs_root), hwmon.probe(device, config.sysfs_root),
            replay.probe(config.replay_path)]


def describe_sources(device: Device, config: PowerConfig = PowerConfig()) -> list[SourceStatus]:
    """Whether each source kind can measure `device`, and why not."""
    probes = probe_sources(device, config)
    close_probes(probes)
    return [found.status for found in probes]


def close_probes(probes: list[Probe]) -> None:
    for found in probes:
        found.close()


def sampled_channels(probes: list[Probe]) -> list[Channel]:
    """Every channel of every usable source: what a run samples."""
    return [c for p in probes if p.status.available for c in p.channels]


def statuses(probes: list[Probe]) -> str:
    """Each source's status in one line: why none can be used, when none can."""
    return "; ".join(f"{p.status.name}: {p.status.detail}" for p in probes)


def sum_channels(results: list[ChannelWindow]) -> ChannelWindow:
    """Several channels that together make the device's energy (e.g. two CPU packages)."""
    first = results[0]
    if len(results) == 1 or not all(r.valid for r in results):
        return next((r for r in results if not r.valid), first)
    return ChannelWindow("+".join(r.channel for r in results), first.method, first.duration_s, True,
                         joules=sum(r.joules for r in results), avg_power_w=sum(r.avg_power_w for r in results),
                         peak_power_w=sum(r.peak_power_w for r in results), samples=min(r.samples for r in results),
                         updates=min(r.updates for r in results), edge_error_j=sum(r.edge_error_j for r in results))


def combine(windows: list[ChannelWindow], calls: list[int], idle_power_w: float | None = None) -> dict:
    """Energy per call over the valid windows (their joules over their calls: windows of any
    lengths, each weighted by its calls), with a 95% uncertainty.

    The uncertainty adds the spread between windows (Student t on their mean: it catches a
    sensor that sees a different part of the workload in each window, sensor noise, drift,
    and the edges' errors, which random start phases make differ from window to window) and
    the bound from the windows' edges (counter granularity, update placement, sensor lag),
    which holds even where a few windows agree by chance. `spread_pct` and `edge_pct` are the
    two parts; `window_joules_per_call` each window's own figure (None where invalid).
    """
    valid = [(w, n) for w, n in zip(windows, calls) if w.valid]
    reasons = [w.reason for w in windows if not w.valid]
    by_window = [w.joules / n if w.valid else None for w, n in zip(windows, calls)]
    if not valid:
        return {**{f: None for f in ENERGY_FIELDS}, "idle_power_w": idle_power_w, "updates": None,
                "valid_windows": 0, "reasons": reasons, "spread_pct": None, "edge_pct": None,
                "window_joules_per_call": by_window}
    per_call = [w.joules / n for w, n in valid]
    joules, made, seconds = (sum(w.joules for w, _ in valid), sum(n for _, n in valid),
                             sum(w.duration_s for w, _ in valid))
    mean = joules / made
    # Unweighted, the spread gives short windows (the noisier ones) as much say as long ones.
    spread = t95(len(per_call) - 1) * statistics.stdev(per_call) / math.sqrt(len(per_call)) \
        if len(per_call) > 1 else 0.0
    # The joules are off by at most the sum of the windows' edge errors.
    edges = sum(w.edge_error_j for w, _ in valid) / joules if mean > 0 else math.inf
    dynamic = None if idle_power_w is None else (joules - idle_power_w * seconds) / made
    return {
        "joules_per_call": mean,
        "avg_power_w": joules / seconds,
        "peak_power_w": max(w.peak_power_w for w, _ in valid),
        "idle_power_w": idle_power_w,
        "dynamic_joules_per_call": dynamic,
        "window_s": statistics.fmean(w.duration_s for w, _ in valid),
        "samples": sum(w.samples for w, _ in valid),
        "updates": sum(w.updates for w, _ in valid),
        "uncertainty_pct": 100 * (spread / mean + edges) if mean > 0 else None,
        "spread_pct": 100 * spread / mean if mean > 0 else None,
        "edge_pct": 100 * edges if mean > 0 else None,
        "valid_windows": len(valid),
        "reasons": reasons,
        "window_joules_per_call": by_window,
    }


def window_throughput(windows, calls: list[int], units_per_call: float) -> dict:
    """Work per second inside the energy windows (every window, valid or not: their host clock
    is right even when a sensor failed). J/unit and these units/s describe the same calls,
    run back to back; the record's `median_s` is the device time of one call after a cache flush."""
    seconds = sum(w.duration_s for w in windows)
    done = sum(calls)
    if seconds <= 0 or done == 0:
        return {"window_units_per_s": None, "window_seconds_per_call": None}
    return {"window_units_per_s": done * units_per_call / seconds, "window_seconds_per_call": seconds / done}


def run_for(step: Callable[[], Any], seconds: float) -> int:
    """Call `step` until `seconds` have passed on the host; the number of calls."""
    start = time.perf_counter()
    calls = 0
    while True:
        step()
        calls += 1
        if time.perf_counter() - start >= seconds:
            return calls


def start_offsets(repeats: int, period_s: float, rng: random.Random) -> list[float]:
    """Random offsets spread over one sensor period: one in each of `repeats` equal slices,
    so that even a workload in step with the sensor is seen at evenly spread phases."""
    offsets = [(i + rng.random()) * period_s / repeats for i in range(repeats)]
    rng.shuffle(offsets)
    return offsets


#: Why a benchmark's windows stopped.
TARGET_REACHED, MOST_WINDOWS, FIXED_WINDOWS = "target reached", "most windows", "fixed windows"


@dataclass(frozen=True)
class WindowRule:
    """How long each energy window of a benchmark is, and when they stop.

    `target` is the uncertainty (95%, a fraction) the energy per call should reach; None for
    `max_windows` fixed windows of `min_window_s`. `update_s`, `poll_s` and `read_s` (the
    sensor's update period, the poll interval, the longest read) predict the first window's
    floor; each window's measured edge error then sets the floor of the next ones.
    """

    target: float | None
    min_window_s: float
    max_window_s: float
    max_windows: int
    update_s: float
    poll_s: float = 0.0
    read_s: float = 0.0

    @classmethod
    def from_config(cls, config: PowerConfig, update_s: float, poll_s: float, read_s: float) -> "WindowRule":
        return cls(None if config.target_pct is None else config.target_pct / 100, config.min_window_s,
                   config.max_window_s, config.repeats, update_s, poll_s, read_s)

    def clamp(self, seconds: float) -> float:
        """Within the ceiling and the given minimum (which wins where they cross)."""
        return max(min(seconds, self.max_window_s), self.min_window_s)

    def predicted_floor_s(self, call_s: float) -> float:
        """The shortest window whose edge error stays under a third of the target for steady power
        (peak = mean): at each edge up to one call's energy or a quarter of an update interval's
        (`measure_channel`), half a poll interval and half a read; never under MIN_UPDATES updates."""
        edge_s = 2 * min(call_s, self.update_s / 4) + self.poll_s + self.read_s
        return max(3 * edge_s / self.target, MIN_UPDATES * self.update_s)

    def measured_floor_s(self, windows: list[ChannelWindow]) -> float | None:
        """The floor the valid windows' own edge errors call for (an edge error is a fixed amount of
        energy, so its share falls with the window's length); None without a valid window."""
        floors = [w.duration_s * 3 * w.edge_error_j / (w.joules * self.target)
                  for w in windows if w.valid and w.joules > 0]
        return max(floors) if floors else None

    def first_length(self, call_s: float) -> float:
        return self.min_window_s if self.target is None else self.clamp(self.predicted_floor_s(call_s))

    def decide(self, windows: list[ChannelWindow], calls: list[int]) -> tuple[str | None, float]:
        """Why the windows stop now (None: go on), and how long the next one is.

        Stop once two valid windows or more put the uncertainty within the target, or after
        `max_windows`. Otherwise the next window is at least as long as the last and as the
        floor its predecessors' edges call for; from the third window on, when the spread
        between windows (not the edges) is what misses the target, it is twice the last."""
        last = windows[-1].duration_s
        if self.target is None:
            return (FIXED_WINDOWS if len(windows) >= self.max_windows else None), self.min_window_s
        summary = combine(windows, calls)
        if summary["valid_windows"] >= 2 and (summary["uncertainty_pct"] or math.inf) <= 100 * self.target:
            return TARGET_REACHED, last
        if len(windows) >= self.max_windows:
            return MOST_WINDOWS, last
        length = max(last, self.measured_floor_s(windows) or 0.0)
        if summary["valid_windows"] >= 3 and (summary["spread_pct"] or 0.0) > 100 * self.target * 2 / 3:
            length = max(length, 2 * last)
        return None, self.clamp(length)


def run_windows(runner, rule: WindowRule, rng: random.Random) -> tuple[list[ChannelWindow], list[int], str]:
    """A benchmark's energy windows: the primary energy of each, its calls, and why they stopped.

    `runner` runs the benchmark and reads the sensor: on the real clock in `PowerMonitor.measure`,
    in simulated time in the self-checks, so that both follow these same rules. It offers
    `clock()`, `run(seconds)` (the step back to back for at least that long, synchronised at the
    end; the calls made), `window(seconds)` (the same as a window: its start, end and calls) and
    `evaluate(start_s, end_s, call_s)` (the window's primary energy, once the sensor has updated
    after its end).

    The step never stops between the windows: before each it runs EDGE_RUN_UPDATES update
    periods plus the window's random start offset, after each EDGE_RUN_UPDATES update periods
    more, so the update intervals at every edge hold steady power.
    """
    offsets = start_offsets(rule.max_windows, rule.update_s, rng)
    windows, calls = [], []
    length = None
    while True:
        began = runner.clock()
        made = runner.run(EDGE_RUN_UPDATES * rule.update_s + offsets[len(windows)])
        if length is None:
            length = rule.first_length((runner.clock() - began) / made)
        start, end, made = runner.window(length)
        runner.run(EDGE_RUN_UPDATES * rule.update_s)
        windows.append(runner.evaluate(start, end, (end - start) / made))
        calls.append(made)
        stopped, length = rule.decide(windows, calls)
        if stopped is not None:
            return windows, calls, stopped


def adaptive_block(rule: WindowRule, stopped: str, windows: list[ChannelWindow], summary: dict,
                   update_measured: bool) -> dict:
    """A record's `adaptive` block: what its windows aimed at, what they reached, why they stopped,
    and what set their lengths."""
    return {"target_pct": None if rule.target is None else 100 * rule.target,
            "reached_pct": summary["uncertainty_pct"], "stopped": stopped,
            "spread_pct": summary["spread_pct"], "edge_pct": summary["edge_pct"],
            "lengths_s": [w.duration_s for w in windows],
            "floor_s": None if rule.target is None else rule.measured_floor_s(windows),
            "min_window_s": rule.min_window_s, "max_window_s": rule.max_window_s, "max_windows": rule.max_windows,
            "update_period_s": rule.update_s, "update_period_measured": update_measured, "poll_s": rule.poll_s}


class _LiveRun:
    """`run_windows`' runner on the real clock: the benchmark's step, the sampler and the GPU's
    condition sensors (read just outside each window, so that their reads do not stall it)."""

    def __init__(self, monitor: "PowerMonitor", step: Callable[[], Any], sync: Callable[[], None], name: str):
        self.monitor, self.step, self.sync, self.name = monitor, step, sync, name
        self.results = []
        self.conditions = []
        self.readbacks = []
        #: Calls made outside the windows, to hold the power steady across their edges.
        self.edge_calls = 0

    @staticmethod
    def clock() -> float:
        return time.perf_counter()

    def run(self, seconds: float) -> int:
        calls = run_for(self.step, seconds)
        self.sync()
        self.edge_calls += calls
        return calls

    def window(self, seconds: float) -> tuple[float, float, int]:
        with WindowWatch(self.monitor.sensors) as watch:
            start = time.perf_counter()
            calls = run_for(self.step, seconds)
            self.sync()
            end = time.perf_counter()
        self.conditions.append(watch.result())
        self.read_back()
        return start, end, calls

    def read_back(self) -> None:
        """The sweep's settings in force now (outside the windows, like the condition sensors)."""
        if self.monitor.readback is not None:
            self.readbacks.append(self.monitor.readback())

    def evaluate(self, start_s: float, end_s: float, call_s: float) -> ChannelWindow:
        sampler = self.monitor.sampler
        sampler.wait_for_coverage(end_s)
        result = sampler.evaluate(f"{self.name}:window{len(self.results) + 1}", start_s, end_s, call_s)
        self.results.append(result)
        return sum_channels([result.channels[c.name] for c in self.monitor.primary])


class PowerMonitor:
    """Owns the power sampler for one run (a context manager).

    `probes` replaces the probing of real sources (tests and self-checks pass simulated ones);
    `conditions` replaces NVML's condition sensors of the device; `readback` reads a power sweep's
    settings back (knobs.Applied.readback), None outside a sweep.
    """

    def __init__(self, device: Device, config: PowerConfig = PowerConfig(), probes: list[Probe] | None = None,
                 conditions: ConditionSensors | None = None, readback: Callable[[], dict] | None = None):
        if not isinstance(config, PowerConfig):
            raise TypeError(f"config must be a PowerConfig, got {type(config).__name__}")
        if conditions is not None and not isinstance(conditions, ConditionSensors):
            raise TypeError(f"conditions must be a ConditionSensors or None, got {type(conditions).__name__}")
        self.device = device
        self.config = config
        self._given_probes = probes
        self.probes: list[Probe] = []
        self.chosen: Probe | None = None
        self.primary: list[Channel] = []
        self.reason: str | None = None
        self.sampler: Sampler | None = None
        self.idle_power_w: float | None = None
        self.idle_reason: str | None = None
        self.idle_by_channel: dict[str, float | None] = {}
        self._given_conditions = conditions
        self.readback = readback
        self.sensors: ConditionSensors | None = None
        self.idle_temperature_c: float | None = None
        self.update_s: float | None = None
        self.update_reason: str | None = None
        self._entered = False
        self._measured = 0
        self._rng = random.Random()

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> "PowerMonitor":
        self._entered = True
        self.probes = probe_sources(self.device, self.config) if self._given_probes is None else self._given_probes
        chosen = next((p for p in self.probes if p.status.available and p.primary), None)
        if chosen is None:
            self.reason = "no power source: " + statuses(self.probes)
            close_probes(self.probes)
            return self
        self.chosen = chosen
        self.primary = chosen.primary
        self.sampler = Sampler(sampled_channels(self.probes), self.config.sample_hz,
                               primary=[c.name for c in self.primary]).start()
        self.sensors = nvml.condition_sensors(self.device) if self._given_conditions is None \
            else self._given_conditions
        self.sampler.wait_for_coverage(time.perf_counter())  # every counter has updated once: windows may start
        self._measure_idle()
        self._measure_update_period()
        self.idle_temperature_c = self.sensors.read("temperature_c")
        self._pause()
        return self

    def __exit__(self, *exc) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.sensors is not None:
            self.sensors.close()
        close_probes(self.probes)

    def _pause(self) -> None:
        if not self.config.save_trace:
            self.sampler.pause()

    def _measure_idle(self) -> None:
        if self.config.idle_s == 0:
            self.idle_reason = "idle baseline not measured (idle_s=0)"
            return
        self.device.synchronize()
        with self.sampler.window("idle") as window:
            time.sleep(self.config.idle_s)
        idle = sum_channels([window.result.channels[c.name] for c in self.primary])
        self.idle_power_w = idle.avg_power_w
        self.idle_reason = None if idle.valid else f"idle baseline invalid: {idle.reason}"
        self.idle_by_channel = {name: r.avg_power_w for name, r in window.result.channels.items()}

    def _measure_update_period(self) -> None:
        """The primary channels' update period, from every reading since the sampler started (the
        idle baseline's, or, without one, a wait of at most UPDATE_WAIT_S for enough updates);
        the slowest where several channels make the energy."""
        deadline = time.perf_counter() + UPDATE_WAIT_S
        while True:
            periods = [self.sampler.update_period_s(c, self.sampler.started_s) for c in self.primary]
            if None not in periods or time.perf_counter() >= deadline:
                break
            time.sleep(0.05)
        if None in periods:
            missing = self.primary[periods.index(None)].name
            self.update_reason = (f"{missing}: too few updates to measure its update period; "
                                  f"{self.config.offset_period_s:g} s assumed")
            return
        self.update_s = max(periods)

    # -- measurement --------------------------------------------------------------------

    def window_energy(self, record: dict) -> tuple[list[tuple[float, float]], Callable[[float], float]] | None:
        """A measured record's windows on the trace's clock (perf_counter s) and the primary channels' energy
        spent up to any time inside them (J), for sharing a window's energy out within it (per request, per
        phase: wattbench.power.attribution); None when the record holds no valid windows."""
        if self.sampler is None or not record.get("valid"):
            return None
        curves = [cumulative_energy(trace.timestamps, trace.values, channel.is_counter)
                  for channel in self.primary for trace in [self.sampler.trace(channel)]]
        spans = [(start + self.sampler.started_s, end + self.sampler.started_s)
                 for start, end in record["window_spans_s"]]
        return spans, lambda t: sum(curve(t) for curve in curves)

    def not_measured(self, reason: str) -> dict:
        return EnergyRecord.not_measured(reason).to_json()

    def measure(self, step: Callable[[], Any], sync: Callable[[], None], units_per_call: float) -> dict:
        """The energy record of one benchmark (see the module docstring); never raises for sensor faults.

        `step` must be the callable the benchmark's rounds timed (its CUDA graph replay in graph
        mode), so that energy and time describe the same execution."""
        if not callable(step) or not callable(sync):
            raise TypeError("step and sync must be callables taking no arguments")
        if not is_finite_number(units_per_call) or units_per_call <= 0:
            raise ValueError(f"units_per_call must be a positive number, got {units_per_call!r}")
        if not self._entered:
            raise RuntimeError("PowerMonitor.measure needs the monitor entered (`with PowerMonitor(...) as m:`)")
        if self.sampler is None:
            record = self.not_measured(self.reason)
            if self.readback is not None:  # no windows, but the setting the timing ran at is read back all the same
                self._add_setting(record, [self.readback()])
            return record
        self._measured += 1
        cooldown = self._cool_down() if self.config.cooldown_c is not None else None
        rule = self.window_rule()
        live = _LiveRun(self, step, sync, f"benchmark{self._measured}")
        live.read_back()
        self.sampler.resume()
        try:
            _, calls, stopped = run_windows(live, rule, self._rng)
        finally:
            self._pause()
        record = self.record(live.results, calls, units_per_call, rule, stopped, live.edge_calls)
        self._add_conditions(record, live.conditions, cooldown)
        if self.readback is not None:
            self._add_setting(record, live.readbacks)
        return record

    @staticmethod
    def _add_setting(record: dict, readbacks: list[dict]) -> None:
        """Whether the sweep's setting held over the windows (or, without them, when read), with a warning when it
        did not (or is unknown)."""
        record["setting"] = knobs.held_over(readbacks)
        held, reasons = record["setting"]["held"], "; ".join(record["setting"]["reasons"])
        warnings = record.setdefault("warnings", [])
        if held is False:
            warnings.append(f"the setting {readbacks[0]['setting']} did not hold during the energy "
                                      f"windows: {reasons}")
        elif held is None:
            warnings.append(f"whether the sweep's setting held is unknown: {reasons}")

    def window_rule(self) -> WindowRule:
        """The stopping rules for the next benchmark, from the config, the measured update period
        and the sampler's current poll rate and read times of the primary channels."""
        config = self.config
        update_s = self.update_s or config.offset_period_s
        polled = self.sampler.stats()["channels"]
        polls = [polled[c.name] for c in self.primary if c.name in polled]
        poll_s = max((1 / p["plan_hz"] for p in polls), default=update_s)
        read_s = max((p["read_s_max"] or 0.0 for p in polls), default=0.0)
        return WindowRule.from_config(config, update_s, poll_s, read_s)

    def _add_conditions(self, record: dict, conditions: list[dict], cooldown: dict | None) -> None:
        """The windows' conditions and the cool-down into the record, with a warning for each problem."""
        record["conditions"] = summarize_conditions(conditions, self.sensors)
        if record["conditions"].get("throttled"):
            record["warnings"].append("throttled during the energy windows: "
                                      + ", ".join(record["conditions"]["throttle_reasons"]))
        if cooldown is not None:
            record["cooldown"] = cooldown
            if not cooldown["reached"]:
                record["warnings"].append(cooldown["reason"])

    def _cool_down(self) -> dict:
        """Wait until the GPU is within `cooldown_c` degrees of the idle baseline temperature,
        for at most `cooldown_timeout_s`; what happened, with the reason when it fell short."""
        if self.idle_temperature_c is None:
            why = self.sensors.missing.get("temperature_c", "it could not be read at the end of the idle baseline")
            return {"reached": False, "reason": f"cool-down skipped: no idle baseline temperature: {why}"}
        target = self.idle_temperature_c + self.config.cooldown_c
        result = wait_until_cool(lambda: self.sensors.read("temperature_c"), target, self.config.cooldown_timeout_s,
                                 COOLDOWN_POLL_S, hung=lambda: self.sensors.hung)
        result["idle_c"] = self.idle_temperature_c
        if not result["reached"]:
            now = "unreadable" if result["end_c"] is None else f"{result['end_c']:g} C"
            result["reason"] = (f"cool-down gave up after {self.config.cooldown_timeout_s:g} s: the GPU is at {now}, "
                                f"the target {target:g} C (idle {self.idle_temperature_c:g} C + "
                                f"{self.config.cooldown_c:g})")
        return result

    def record(self, windows, calls: list[int], units_per_call: float, rule: WindowRule | None = None,
               stopped: str | None = None, edge_calls: int | None = None) -> dict:
        """The energy record of `windows` (WindowResults), as record.EnergyRecord writes it; with the `rule` they
        followed and why they `stopped`, its `adaptive` block says what was aimed at and what was reached.
        `edge_calls`: the calls made outside the windows (`_LiveRun.edge_calls`)."""
        primary = [sum_channels([w.channels[c.name] for c in self.primary]) for w in windows]
        summary = combine(primary, calls, self.idle_power_w)
        first = self.primary[0]
        valid = summary["valid_windows"] > 0
        figures = {name: summary.get(name) for name in EnergyRecord.FIGURES}
        if valid:
            per_call = summary["joules_per_call"]
            figures.update(joules_per_unit=per_call / units_per_call,
                           units_per_joule=units_per_call / per_call if per_call > 0 else None)
        channels = {channel.name: self._channel_energy(channel, windows, calls) for channel in self.sampler.channels}
        energy = EnergyRecord(
            source=first.source, method=first.method,
            reason=None if valid else f"energy invalid: {summary['reasons'][0]}", valid=valid, scope=first.scope,
            **figures, windows=len(windows), valid_windows=summary["valid_windows"],
            window_joules_per_call=summary["window_joules_per_call"],
            **window_throughput(windows, calls, units_per_call),
            # On the trace's clock (seconds since the monitor started), so plots can shade the windows.
            window_spans_s=[[w.start_s - self.sampler.started_s, w.end_s - self.sampler.started_s] for w in windows],
            edge_calls=edge_calls,
            adaptive=None if rule is None else adaptive_block(rule, stopped, primary, summary,
                                                              self.update_s is not None),
            boundary=boundary(first.source, first.scope, figures["joules_per_call"], self.idle_power_w is not None,
                              channels),
            extra={"channel": "+".join(c.name for c in self.primary), "updates": summary["updates"],
                   "calls_per_window": calls, "channels": channels,
                   **self._cross_check(figures["joules_per_call"], channels)})
        return {**energy.to_json(),
                "warnings": self._warnings(windows, primary, summary) + self._target_warnings(energy)}

    @staticmethod
    def _channel_energy(channel: Channel, windows, calls: list[int]) -> dict:
        """One sampled channel's own figures over the windows (the record's `channels`)."""
        each = combine([w.channels[channel.name] for w in windows], calls)
        return {"method": channel.method, "scope": channel.scope, "joules_per_call": each["joules_per_call"],
                "avg_power_w": each["avg_power_w"], "uncertainty_pct": each["uncertainty_pct"],
                "valid_windows": each["valid_windows"], **({"reasons": each["reasons"]} if each["reasons"] else {})}

    def _target_warnings(self, energy: EnergyRecord) -> list[str]:
        adaptive = energy.adaptive
        if not adaptive or adaptive["target_pct"] is None or not energy.valid:
            return []
        warnings = []
        if adaptive["stopped"] != TARGET_REACHED:
            reached = "no uncertainty" if adaptive["reached_pct"] is None else f"±{adaptive['reached_pct']:.2g}%"
            warnings.append(f"energy target ±{adaptive['target_pct']:g}% not reached: {reached} after "
                            f"{energy.windows} window(s) of up to {max(adaptive['lengths_s']):.3g} s "
                            f"(spread ±{adaptive['spread_pct']:.2g}%, edges ±{adaptive['edge_pct']:.2g}%)")
        floor = adaptive["floor_s"]
        if floor is not None and floor > max(adaptive["max_window_s"], adaptive["min_window_s"]):
            warnings.append(f"the edges alone need windows of {floor:.3g} s for ±{adaptive['target_pct']:g}%, "
                            f"above the {adaptive['max_window_s']:g} s ceiling (max_window_s)")
        if self.update_reason:
            warnings.append(self.update_reason)
        return warnings

    def _cross_check(self, joules_per_call: float | None, channels: dict) -> dict:
        """Instant-power energy against the counter of the same device, when both exist.

        Matched by `Channel.sensor`, not by scope: NVML labels its counter "GPU board" and its
        instant field "GPU", and the comparison is wanted exactly there (both scopes are in
        the record's `channels`)."""
        first = self.primary[0]
        if first.method != "counter" or len(self.primary) != 1 or first.sensor is None:
            return {}
        twin = next((c for c in self.sampler.channels if c.sensor == first.sensor and c.method == "instant"), None)
        if twin is None:
            return {}
        other = channels[twin.name]["joules_per_call"]
        return {"cross_check_method": "instant", "cross_check_joules_per_call": other,
                "disagreement_pct": None if other is None or not joules_per_call
                else 100 * (other - joules_per_call) / joules_per_call}

    def _warnings(self, windows, primary: list[ChannelWindow], summary: dict) -> list[str]:
        warnings = [f"window {i + 1}/{len(windows)} invalid: {w.reason}" for i, w in enumerate(primary) if not w.valid]
        warnings += [f"window {i + 1}/{len(windows)} saw only {w.updates} sensor updates (< {MIN_UPDATES}): "
                     "its edges are much of its energy" for i, w in enumerate(primary)
                     if w.valid and w.updates < MIN_UPDATES]
        if self.primary[0].method == "average":
            warnings.append(f"{self.primary[0].name}: {self.primary[0].note}")
        if summary["valid_windows"] == 1:
            warnings.append("one valid window: the uncertainty covers its edges only, not the spread between windows")
        if self.idle_reason:
            warnings.append(self.idle_reason)
        return warnings

    # -- run level ----------------------------------------------------------------------

    def run_info(self) -> dict:
        info = {"sources": [asdict(p.status) for p in self.probes], "reason": self.reason,
                "device": self.device.name, "device_spec": self.device.spec, "config": asdict(self.config)}
        if self.sampler is None:
            return info
        chosen = self.chosen.info
        faults = [reason for channel in self.sampler.channels for reason in self.sampler.fault_reasons(channel)]
        return {**info, "source": self.chosen.status.name, "primary": [c.name for c in self.primary],
                "scope": self.primary[0].scope, "power_limit_w": chosen.get("power_limit_w"),
                "device_name_reported": chosen.get("device_name"),
                "idle_power_w": self.idle_power_w, "idle_s": self.config.idle_s, "idle_reason": self.idle_reason,
                "idle_power_by_channel_w": self.idle_by_channel,
                "idle_temperature_c": self.idle_temperature_c,
                "update_period_s": self.update_s, "update_period_reason": self.update_reason,
                "conditions": {"read": sorted(self.sensors.readers), "missing": self.sensors.missing,
                               "hung": self.sensors.hung},
                "channels": [c.describe() for c in self.sampler.channels],
                "sampler": {**self.sampler.stats(), "thread": "daemon", "clock": "time.perf_counter",
                            "stamp": "midpoint of each read"},
                "faults": faults}

    def write_trace(self, path: str) -> None:
        """The run's readings as CSV (timestamp_s from the monitor's start), with `save_trace` only."""
        if not self.config.save_trace:
            return
        with open(path, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["timestamp_s", "source", "channel", "method", "watts", "joules"])
            if self.sampler is None:
                return
            for channel in self.sampler.channels:
                try:
                    trace = self.sampler.trace(channel)
                except (OSError, ValueError):
                    continue
                for stamp, value in zip(trace.timestamps, trace.values):
                    power, energy = ("", value) if channel.is_counter else (value, "")
                    out.writerow([f"{stamp - self.sampler.started_s:.6f}", channel.source, channel.name,
                                  channel.method, power, energy])
