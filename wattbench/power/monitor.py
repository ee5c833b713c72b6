"""PowerMonitor: the energy side of one benchmark run.

Entering it probes the sources once, starts the sampler and measures the idle baseline.
`measure` then runs a benchmark's step in its own steady-state windows, separate from the
timing runs: each window repeats the step until it spans `min_window_s` (about 50 updates of
a 100 ms counter), `repeats` times, each after a random start offset so that a sensor that
sees only part of each update period sees different parts of the workload.

Between benchmarks' energy windows the sampler is paused (unless the whole trace is to be
saved), so that timing rounds run without its wake-ups.

Each window also records the GPU's conditions (temperature and clocks at its edges, the
clock-event reasons seen during it; see `wattbench.conditions`), and with `cooldown_c` set,
`measure` first waits for the GPU to cool back to within `cooldown_c` degrees of the
temperature at the end of the idle baseline.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from wattbench.conditions import ConditionSensors, WindowWatch, summarize, wait_until_cool
from wattbench.device import Device
from wattbench.power import hwmon, nvml, rapl, replay
from wattbench.power.base import Channel, Probe, SourceStatus
from wattbench.power.sampler import ChannelWindow, Sampler
from wattbench.schema import is_finite_number

ENERGY_FIELDS = ("joules_per_call", "joules_per_unit", "units_per_joule", "avg_power_w", "peak_power_w",
                 "idle_power_w", "dynamic_joules_per_call", "window_s", "samples", "uncertainty_pct")

#: Two-sided 95% Student t quantiles by degrees of freedom; beyond 10, 2.23 stays conservative.
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}

#: Fewer sensor updates than this in a window and the sensor's granularity shows.
MIN_UPDATES = 50

#: How often the cool-down reads the temperature.
COOLDOWN_POLL_S = 0.5

#: PowerConfig fields that must be finite numbers, and those among them that must be above zero.
NUMBERS = ("min_window_s", "sample_hz", "idle_s", "offset_period_s", "cooldown_timeout_s")
POSITIVE = ("min_window_s", "sample_hz", "cooldown_timeout_s")


@dataclass(frozen=True)
class PowerConfig:
    """How energy windows are measured.

    `offset_period_s` is the sensor update period that the random start offsets spread
    over; `sysfs_root` is where RAPL and hwmon are looked for. `cooldown_c` (degrees above the
    idle baseline temperature, None for no cool-down) and `cooldown_timeout_s` set the wait
    before each benchmark's energy windows.
    """

    min_window_s: float = 5.0
    repeats: int = 3
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
    """Mean per call over the valid windows, with a 95% uncertainty.

    The uncertainty adds the spread between windows (Student t on their mean: it catches a
    sensor that sees a different part of the workload in each window) and the worst bound
    from a window's edges (counter granularity, sensor lag).
    """
    valid = [(w, n) for w, n in zip(windows, calls) if w.valid]
    reasons = [w.reason for w in windows if not w.valid]
    if not valid:
        return {**{f: None for f in ENERGY_FIELDS}, "idle_power_w": idle_power_w, "updates": None,
                "valid_windows": 0, "reasons": reasons}
    per_call = [w.joules / n for w, n in valid]
    mean = statistics.fmean(per_call)
    spread = T95.get(len(per_call) - 1, 2.23) * statistics.stdev(per_call) / math.sqrt(len(per_call)) \
        if len(per_call) > 1 else 0.0
    edges = max(w.edge_error_j / w.joules for w, _ in valid) if mean > 0 else math.inf
    dynamic = None if idle_power_w is None else \
        statistics.fmean((w.joules - idle_power_w * w.duration_s) / n for w, n in valid)
    return {
        "joules_per_call": mean,
        "avg_power_w": statistics.fmean(w.avg_power_w for w, _ in valid),
        "peak_power_w": max(w.peak_power_w for w, _ in valid),
        "idle_power_w": idle_power_w,
        "dynamic_joules_per_call": dynamic,
        "window_s": statistics.fmean(w.duration_s for w, _ in valid),
        "samples": sum(w.samples for w, _ in valid),
        "updates": sum(w.updates for w, _ in valid),
        "uncertainty_pct": 100 * (spread / mean + edges) if mean > 0 else None,
        "valid_windows": len(valid),
        "reasons": reasons,
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


class PowerMonitor:
    """Owns the power sampler for one run (a context manager).

    `probes` replaces the probing of real sources (tests and self-checks pass simulated ones);
    `conditions` replaces NVML's condition sensors of the device.
    """

    def __init__(self, device: Device, config: PowerConfig = PowerConfig(), probes: list[Probe] | None = None,
                 conditions: ConditionSensors | None = None):
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
        self.sensors: ConditionSensors | None = None
        self.idle_temperature_c: float | None = None
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

    # -- measurement --------------------------------------------------------------------

    def not_measured(self, reason: str) -> dict:
        return {"source": "none", "method": "none", "reason": reason, **{f: None for f in ENERGY_FIELDS}}

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
            return self.not_measured(self.reason)
        self._measured += 1
        cooldown = self._cool_down() if self.config.cooldown_c is not None else None
        windows, calls, conditions = [], [], []
        self.sampler.resume()
        try:
            for i, offset in enumerate(start_offsets(self.config.repeats, self.config.offset_period_s, self._rng)):
                time.sleep(offset)
                sync()
                with self.sampler.window(f"benchmark{self._measured}:window{i + 1}") as window:
                    with WindowWatch(self.sensors) as watch:
                        calls.append(run_for(step, self.config.min_window_s))
                        sync()
                windows.append(window.result)
                conditions.append(watch.result())
        finally:
            self._pause()
        record = self.record(windows, calls, units_per_call)
        self._add_conditions(record, conditions, cooldown)
        return record

    def _add_conditions(self, record: dict, conditions: list[dict], cooldown: dict | None) -> None:
        """The windows' conditions and the cool-down into the record, with a warning for each problem."""
        record["conditions"] = summarize(conditions, self.sensors)
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

    def record(self, windows, calls: list[int], units_per_call: float) -> dict:
        primary = [sum_channels([w.channels[c.name] for c in self.primary]) for w in windows]
        summary = combine(primary, calls, self.idle_power_w)
        first = self.primary[0]
        record = {"source": first.source, "method": first.method,
                  "reason": None if summary["valid_windows"] else f"energy invalid: {summary['reasons'][0]}",
                  "valid": summary["valid_windows"] > 0, "scope": first.scope,
                  "channel": "+".join(c.name for c in self.primary),
                  **{f: summary[f] for f in ENERGY_FIELDS if f in summary},
                  "joules_per_unit": None, "units_per_joule": None,
                  "updates": summary["updates"], "windows": len(windows), "valid_windows": summary["valid_windows"],
                  "calls_per_window": calls,
                  **window_throughput(windows, calls, units_per_call),
                  # On the trace's clock (seconds since the monitor started), so plots can shade the windows.
                  "window_spans_s": [[w.start_s - self.sampler.started_s, w.end_s - self.sampler.started_s]
                                     for w in windows]}
        if record["valid"]:
            record["joules_per_unit"] = summary["joules_per_call"] / units_per_call
            record["units_per_joule"] = units_per_call / summary["joules_per_call"] \
                if summary["joules_per_call"] > 0 else None
        record["channels"] = {}
        for channel in self.sampler.channels:
            each = combine([w.channels[channel.name] for w in windows], calls)
            record["channels"][channel.name] = {
                "method": channel.method, "scope": channel.scope, "joules_per_call": each["joules_per_call"],
                "avg_power_w": each["avg_power_w"], "uncertainty_pct": each["uncertainty_pct"],
                "valid_windows": each["valid_windows"], **({"reasons": each["reasons"]} if each["reasons"] else {})}
        record.update(self._cross_check(record))
        record["warnings"] = self._warnings(windows, primary, summary)
        return record

    def _cross_check(self, record: dict) -> dict:
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
        other = record["channels"][twin.name]["joules_per_call"]
        base = record["joules_per_call"]
        return {"cross_check_method": "instant", "cross_check_joules_per_call": other,
                "disagreement_pct": None if other is None or not base else 100 * (other - base) / base}

    def _warnings(self, windows, primary: list[ChannelWindow], summary: dict) -> list[str]:
        warnings = [f"window {i + 1}/{len(windows)} invalid: {w.reason}" for i, w in enumerate(primary) if not w.valid]
        warnings += [f"window {i + 1}/{len(windows)} saw only {w.updates} sensor updates (< {MIN_UPDATES}): "
                     "raise min_window_s" for i, w in enumerate(primary) if w.valid and w.updates < MIN_UPDATES]
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
