"""Power limits and locked clocks: what a sweep may change on a device, checked before anything changes, applied,
read back, settled, and always put back.

Knobs (`KNOBS`):
- `gpu_power_limit` (W): NVML's power management limit, within nvmlDeviceGetPowerManagementLimitConstraints.
- `gpu_sm_clock`, `gpu_mem_clock` (MHz): NVML locked clocks (minimum = maximum = the value), among the clocks
  NVML lists as supported. NVML cannot read a lock back, so the original is taken as unlocked and put back by
  resetting the lock.
- `cpu_power_limit` (W): the long-term RAPL limit of every CPU package (powercap `constraint_*_power_limit_uw`).
- `cpu_max_freq` (MHz): cpufreq's `scaling_max_freq` of every policy.

These settings outlive the process that changes them. So `plan_sweep` checks every value (range, supported
clock, permission through a write of the value already in force) before anything changes; `KnobSession` writes
the originals to a state file before its first change, puts each knob back after its setting, and restores
everything on exit, on an exception and on SIGINT, SIGTERM and SIGHUP. After a harder death (SIGKILL, power
loss) the state file stays: `leftover_warning` says so and `restore_leftover` puts the originals back from it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import sys
import time
from abc import ABC, abstractmethod
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from wattbench.conditions import is_throttle
from wattbench.device import Device
from wattbench.errors import UsageError
from wattbench.power import nvml, sysfs
from wattbench.signals import Handlers


@dataclass(frozen=True)
class Knob:
    name: str
    #: The sweep option that asks for it.
    option: str
    unit: str
    #: What a setting's identity starts with: `pl` + 300 + `w` is `pl300w`.
    prefix: str
    what: str

    @property
    def argument(self) -> str:
        """plan_sweep's keyword argument for it: `--sm-clocks` is `sm_clocks`."""
        return self.option.removeprefix("--").replace("-", "_")


KNOBS = {knob.name: knob for knob in (
    Knob("gpu_power_limit", "--power-limits", "W", "pl", "GPU power limit"),
    Knob("gpu_sm_clock", "--sm-clocks", "MHz", "sm", "locked GPU SM clock"),
    Knob("gpu_mem_clock", "--mem-clocks", "MHz", "mem", "locked GPU memory clock"),
    Knob("cpu_power_limit", "--cpu-power-limits", "W", "cpupl", "CPU package power limit (RAPL long-term)"),
    Knob("cpu_max_freq", "--cpu-max-freqs", "MHz", "cpufreq", "CPU maximum frequency (cpufreq)"),
)}
GPU_CLOCKS = {"gpu_sm_clock": "sm", "gpu_mem_clock": "mem"}

#: The most values one option may ask for: each is a whole run of the selected benchmarks.
MAX_VALUES = 64
#: A locked clock holds while the current clock is within this of it (one step of NVML's clock table).
CLOCK_TOLERANCE_MHZ = 15
#: A power limit holds while the limit read back is within this of it (NVML works in mW).
POWER_TOLERANCE_W = 0.5
#: Settling: a new power limit has taken effect once the board draws no more than this above it.
POWER_MARGIN = 0.05
SETTLE_TIMEOUT_S = 10.0
SETTLE_POLL_S = 0.1
#: Readbacks in a row that must show the setting before it counts as settled.
STEADY_READS = 3

STATE_FORMAT = "wattbench-knob-state/1"


class KnobError(Exception):
    """Changing, reading or restoring a knob failed after the sweep was validated; the message says why."""


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: one knob at one value, or `DEFAULT` (every knob as found)."""

    knob: str | None = None
    value: int | None = None

    @property
    def id(self) -> str:
        """The setting's name in records, e.g. `default`, `pl300w`, `sm1200mhz`, `cpufreq2000mhz`."""
        if self.knob is None:
            return "default"
        knob = KNOBS[self.knob]
        return f"{knob.prefix}{self.value}{knob.unit.lower()}"

    def describe(self) -> dict:
        unit = KNOBS[self.knob].unit if self.knob else None
        return {"id": self.id, "knob": self.knob, "value": self.value, "unit": unit}


DEFAULT = Setting()


# -- parsing the options -------------------------------------------------------------------------

_VALUE = re.compile(r"(\d+)\s*([A-Za-z]*)")


def parse_values(text: str, knob: str) -> list[int]:
    """The values of an option such as `--power-limits 200,300` or `200:400:50` (min:max:step, max included
    when on the step), each optionally with its unit (`300W`, `1200MHz`): ascending, each once."""
    spec = KNOBS[knob]
    example = "200,300 or 200:400:50" if spec.unit == "W" else "900,1200 or 900:1800:300"

    def fail(why: str):
        raise UsageError(f"{spec.option} {text!r}: {why}; give whole {spec.unit} as e.g. {example}")

    def number(item: str) -> int:
        match = _VALUE.fullmatch(item.strip())
        if match is None:
            fail(f"{item.strip()!r} is not a whole number of {spec.unit}")
        if match.group(2) and match.group(2).lower() != spec.unit.lower():
            fail(f"{item.strip()!r} is in {match.group(2)}, not {spec.unit}")
        if int(match.group(1)) <= 0:
            fail(f"{item.strip()!r} is not positive")
        return int(match.group(1))

    if not isinstance(text, str) or not text.strip():
        fail("no values")
    values: set[int] = set()
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) == 1:
            values.add(number(parts[0]))
        elif len(parts) == 3:
            low, high, step = (number(part) for part in parts)
            if low > high:
                fail(f"{item.strip()!r}: min is above max")
            if len(values) + (high - low) // step + 1 > MAX_VALUES:
                fail(f"more than {MAX_VALUES} values (each is a whole run of the benchmarks)")
            values.update(range(low, high + 1, step))
        else:
            fail(f"{item.strip()!r} is neither a value nor min:max:step")
        if len(values) > MAX_VALUES:
            fail(f"more than {MAX_VALUES} values (each is a whole run of the benchmarks)")
    return sorted(values)


# -- the knobs of a device -----------------------------------------------------------------------

def _write_problem(path: Path, err: OSError) -> str:
    """Why writing a sysfs knob failed, naming the fix."""
    if isinstance(err, PermissionError):
        return f"cannot write {path}: permission denied: changing it needs root (run as root, e.g. sudo)"
    if err.errno == errno.EROFS:
        return f"cannot write {path}: /sys is mounted read-only (a container?): run on the host, or mount it read-write"
    return f"cannot write {path}: {err.strerror or err}"


def _nvml_step(what: str, step: Callable):
    """step(), with an NVML error turned into a KnobError saying `what` failed and how to fix it."""
    try:
        return step()
    except nvml.NVMLError as err:
        raise KnobError(nvml.setting_problem(err, what)) from None


class Control(ABC):
    """One knob of one device: its original (read when found), its valid values, and how to set it, read it back,
    check a readback and put the original back. `state()` is the state file's record of the original."""

    knob: Knob

    @abstractmethod
    def valid(self) -> str:
        """The values this device takes, in words."""

    @abstractmethod
    def original(self) -> str:
        """The value found, in words."""

    @abstractmethod
    def check(self, value: int) -> None:
        """UsageError when `value` is not one this device takes."""

    @abstractmethod
    def probe(self) -> None:
        """Prove the knob can be changed, by writing the value in force: UsageError naming the fix."""

    @abstractmethod
    def state(self) -> dict:
        """How to put the original back (`_restore_record`), as JSON for the state file."""

    @abstractmethod
    def apply(self, value: int) -> None:
        """Set the knob to `value` (KnobError when the device refuses)."""

    @abstractmethod
    def restore(self) -> None:
        """Put the original back (KnobError when it cannot be), as `restore_leftover` would from `state()`."""

    @abstractmethod
    def read(self) -> dict:
        """What is in force now (KnobError when it cannot be read)."""

    @abstractmethod
    def problem(self, value: int | None, reading: dict) -> str | None:
        """Why `reading` is not `value` (None: the original) in force, or None when it is."""

    def settle_problem(self, value: int | None, reading: dict) -> str | None:
        """Like `problem`, and also whatever else shows that a change has not yet taken effect."""
        return self.problem(value, reading)

    def describe(self) -> dict:
        return {"knob": self.knob.name, "option": self.knob.option, "unit": self.knob.unit, "valid": self.valid(),
                "original": self.original()}


class GpuControl(Control):
    """A knob of one GPU, open in NVML as `gpu`."""

    gpu: nvml.GpuSettings

    def restore(self) -> None:
        _restore_record(self.state(), lambda uuid: self.gpu)


class GpuPowerLimit(GpuControl):
    knob = KNOBS["gpu_power_limit"]

    def __init__(self, gpu: nvml.GpuSettings):
        self.gpu = gpu
        self.low_w, self.high_w = gpu.power_limit_range_w()
        self.original_w = gpu.power_limit_w()

    def valid(self) -> str:
        return f"{self.low_w:g}-{self.high_w:g} W"

    def original(self) -> str:
        return f"{self.original_w:g} W"

    def check(self, value: int) -> None:
        if not self.low_w <= value <= self.high_w:
            raise UsageError(f"--power-limits {value} W: outside the {self.gpu.name}'s range {self.valid()} "
                             "(nvmlDeviceGetPowerManagementLimitConstraints); give values in it")

    def probe(self) -> None:
        try:
            self.gpu.set_power_limit_w(self.original_w)
        except nvml.NVMLError as err:
            raise UsageError(f"--power-limits: {nvml.setting_problem(err, f'setting the {self.gpu.name} power limit')}")

    def state(self) -> dict:
        return {"knob": self.knob.name, "gpu": self.gpu.uuid, "original_w": self.original_w}

    def apply(self, value: int) -> None:
        _nvml_step(f"setting the power limit to {value} W", lambda: self.gpu.set_power_limit_w(value))

    def read(self) -> dict:
        return _nvml_step("reading the power limit back", lambda: {
            "power_limit_w": self.gpu.power_limit_w(), "enforced_power_limit_w": self.gpu.enforced_power_limit_w()})

    def problem(self, value: int | None, reading: dict) -> str | None:
        target = self.original_w if value is None else value
        if abs(reading["power_limit_w"] - target) > POWER_TOLERANCE_W:
            return f"the power limit reads {reading['power_limit_w']:g} W, not {target:g} W"
        if value is not None and reading["enforced_power_limit_w"] < target - POWER_TOLERANCE_W:
            return (f"the enforced power limit is {reading['enforced_power_limit_w']:g} W, below the {target:g} W "
                    "set (another limit applies)")
        return None

    def settle_problem(self, value: int | None, reading: dict) -> str | None:
        target = self.original_w if value is None else value
        power = self.gpu.power_w()
        if power is not None and power > target * (1 + POWER_MARGIN):
            return f"the GPU draws {power:.0f} W, over the {target:g} W limit"
        return self.problem(value, reading)


class GpuClock(GpuControl):
    def __init__(self, gpu: nvml.GpuSettings, knob: str):
        self.gpu, self.knob, self.clock = gpu, KNOBS[knob], GPU_CLOCKS[knob]
        self.supported = gpu.supported_clocks_mhz(self.clock)

    def valid(self) -> str:
        if len(self.supported) < 2:
            return f"{self.supported[0]} MHz only" if self.supported else "none listed"
        return f"{len(self.supported)} supported clocks, {self.supported[0]}-{self.supported[-1]} MHz"

    def original(self) -> str:
        return "unlocked"

    def check(self, value: int) -> None:
        listing = "nvmlDeviceGetSupportedGraphicsClocks" if self.clock == "sm" else "nvmlDeviceGetSupportedMemoryClocks"
        if not self.supported:
            raise UsageError(f"{self.knob.option}: the {self.gpu.name} lists no supported {self.clock.upper()} "
                             f"clocks ({listing}), so none can be locked")
        if value not in self.supported:
            nearest = sorted(sorted(self.supported, key=lambda clock: abs(clock - value))[:2])
            raise UsageError(f"{self.knob.option} {value} MHz: not a supported {self.clock.upper()} clock of the "
                             f"{self.gpu.name} ({listing}); nearest: {', '.join(map(str, nearest))} MHz")

    def probe(self) -> None:
        try:
            self.gpu.reset_clock(self.clock)
        except nvml.NVMLError as err:
            what = f"locking the {self.gpu.name} {self.clock.upper()} clock"
            raise UsageError(f"{self.knob.option}: {nvml.setting_problem(err, what)}")

    def state(self) -> dict:
        return {"knob": self.knob.name, "gpu": self.gpu.uuid, "original": "unlocked"}

    def apply(self, value: int) -> None:
        _nvml_step(f"locking the {self.clock.upper()} clock at {value} MHz",
                   lambda: self.gpu.lock_clock(self.clock, value))

    def read(self) -> dict:
        return _nvml_step(f"reading the {self.clock.upper()} clock", lambda: {
            f"{self.clock}_clock_mhz": self.gpu.clock_mhz(self.clock), "clock_events": self.gpu.clock_events()})

    def problem(self, value: int | None, reading: dict) -> str | None:
        if value is None:
            return None  # an unlocked clock moves freely: there is nothing to read back
        current = reading[f"{self.clock}_clock_mhz"]
        if abs(current - value) <= CLOCK_TOLERANCE_MHZ:
            return None
        throttles = [event for event in reading["clock_events"] if is_throttle(event)]
        why = f" ({', '.join(throttles)})" if throttles else ""
        return f"the {self.clock.upper()} clock is {current} MHz, not the {value} MHz locked{why}"


#: File units per knob unit of the sysfs knobs: µW per W, kHz per MHz.
SYSFS_SCALES = {"cpu_power_limit": 1_000_000, "cpu_max_freq": 1000}


class SysfsControl(Control):
    """A knob made of sysfs files that all get the same value (every CPU package, every cpufreq policy).

    `originals` maps each file to its value when found (in the file's unit, SYSFS_SCALES per knob unit);
    `labels` names each file in readbacks; `low` and `high` bound the values (in the file's unit)."""

    #: Where the bounds come from, for the message when a value is outside them.
    range_source: str

    def __init__(self, originals: dict[Path, int], labels: dict[Path, str], low: int, high: int):
        self.originals, self.labels, self.low, self.high = originals, labels, low, high
        self.scale = SYSFS_SCALES[self.knob.name]

    def valid(self) -> str:
        return f"{self.low / self.scale:g}-{self.high / self.scale:g} {self.knob.unit}"

    def original(self) -> str:
        return ", ".join(f"{self.labels[path]} {value / self.scale:g} {self.knob.unit}"
                         for path, value in self.originals.items())

    def check(self, value: int) -> None:
        if not self.low <= value * self.scale <= self.high:
            raise UsageError(f"{self.knob.option} {value} {self.knob.unit}: outside this host's range "
                             f"{self.valid()} ({self.range_source}); give values in it")

    def probe(self) -> None:
        for path, value in self.originals.items():
            try:
                sysfs.write_int(path, value)
            except OSError as err:
                raise UsageError(f"{self.knob.option}: {_write_problem(path, err)}") from None

    def state(self) -> dict:
        return {"knob": self.knob.name, "files": {str(path): value for path, value in self.originals.items()}}

    def apply(self, value: int) -> None:
        for path in self.originals:
            try:
                sysfs.write_int(path, value * self.scale)
            except OSError as err:
                raise KnobError(_write_problem(path, err)) from None

    def restore(self) -> None:
        _restore_record(self.state(), None)

    def read(self) -> dict:
        try:
            return {self.labels[path]: sysfs.read_int(path) / self.scale for path in self.originals}
        except (OSError, ValueError) as err:
            raise KnobError(f"reading the {self.knob.what} back: {err}") from None

    def problem(self, value: int | None, reading: dict) -> str | None:
        wrong = [f"{self.labels[path]} reads {reading[self.labels[path]]:g} {self.knob.unit}"
                 for path, original in self.originals.items()
                 if reading[self.labels[path]] * self.scale != (original if value is None else value * self.scale)]
        if not wrong:
            return None
        target = "the original" if value is None else f"{value} {self.knob.unit}"
        return f"{', '.join(wrong)}, not {target}"


class RaplLimit(SysfsControl):
    knob = KNOBS["cpu_power_limit"]
    range_source = "constraint_*_min_power_uw and constraint_*_max_power_uw, else 1 W up to the limit in force"


class CpuMaxFreq(SysfsControl):
    """`available`: the frequencies every policy lists (scaling_available_frequencies), None where none lists."""

    knob = KNOBS["cpu_max_freq"]
    range_source = "cpuinfo_min_freq and cpuinfo_max_freq"

    def __init__(self, *args, available: set[int] | None = None):
        super().__init__(*args)
        self.available = available

    def check(self, value: int) -> None:
        super().check(value)
        if self.available is not None and value * self.scale not in self.available:
            listed = sorted(frequency // self.scale for frequency in self.available)
            nearest = sorted(sorted(listed, key=lambda mhz: abs(mhz - value))[:2])
            raise UsageError(f"--cpu-max-freqs {value} MHz: not one of this host's frequencies "
                             f"(scaling_available_frequencies); nearest: {', '.join(map(str, nearest))} MHz")


def _read(path: Path) -> int | None:
    try:
        return sysfs.read_int(path)
    except (OSError, ValueError):
        return None


def _rapl_control(sysfs_root: str) -> RaplLimit:
    powercap = Path(sysfs_root) / "class" / "powercap"
    zones = sorted(zone for zone in powercap.glob("intel-rapl:*")
                   if zone.name.count(":") == 1 and sysfs.read_text(zone / "name").startswith("package"))
    if not zones:
        raise UsageError(f"--cpu-power-limits: no RAPL package zones under {powercap} (no RAPL driver, or a "
                         "container without /sys/class/powercap)")
    originals, labels, lows, highs = {}, {}, [], []
    for zone in zones:
        label = sysfs.read_text(zone / "name", zone.name)
        index = next((name.name.split("_")[1] for name in sorted(zone.glob("constraint_*_name"))
                      if sysfs.read_text(name) == "long_term"), None)
        limit = zone / f"constraint_{index}_power_limit_uw"
        original = _read(limit) if index is not None else None
        if original is None:
            raise UsageError(f"--cpu-power-limits: {zone} has no readable long-term power limit "
                             "(constraint_*_power_limit_uw)")
        if sysfs.read_text(zone / "enabled", "1") == "0":
            raise UsageError(f"--cpu-power-limits: RAPL power limiting is off on {label} ({zone}/enabled is 0): "
                             f"enable it first (as root: echo 1 > {zone}/enabled)")
        originals[limit], labels[limit] = original, label
        lows.append(_read(zone / f"constraint_{index}_min_power_uw") or 1_000_000)
        highs.append(_read(zone / f"constraint_{index}_max_power_uw") or original)
    return RaplLimit(originals, labels, max(lows), min(highs))


def _cpufreq_control(sysfs_root: str) -> CpuMaxFreq:
    cpufreq = Path(sysfs_root) / "devices" / "system" / "cpu" / "cpufreq"
    policies = sorted((policy for policy in cpufreq.glob("policy*") if (policy / "scaling_max_freq").exists()),
                      key=lambda policy: int(policy.name.removeprefix("policy") or 0))
    if not policies:
        raise UsageError(f"--cpu-max-freqs: no cpufreq policies under {cpufreq} (no cpufreq driver on this host)")
    originals, labels, lows, highs, available = {}, {}, [], [], None
    for policy in policies:
        readings = [_read(policy / name) for name in ("scaling_max_freq", "cpuinfo_min_freq", "cpuinfo_max_freq")]
        if None in readings:
            raise UsageError(f"--cpu-max-freqs: cannot read {policy}'s scaling_max_freq, cpuinfo_min_freq and "
                             "cpuinfo_max_freq")
        current, low, high = readings
        limit = policy / "scaling_max_freq"
        originals[limit], labels[limit] = current, policy.name
        lows.append(low)
        highs.append(high)
        listed = sysfs.read_text(policy / "scaling_available_frequencies")
        if listed:
            frequencies = {int(word) for word in listed.split()}
            available = frequencies if available is None else available & frequencies
    return CpuMaxFreq(originals, labels, max(lows), min(highs), available=available)


class _Finder:
    """Finds the controls of one device, opening its GPU in NVML once (closed with `stack`)."""

    def __init__(self, device: Device, sysfs_root: str, stack: ExitStack):
        self.device, self.sysfs_root, self.stack = device, sysfs_root, stack
        self._gpu: nvml.GpuSettings | None = None

    def gpu(self, option: str) -> nvml.GpuSettings:
        if self._gpu is not None:
            return self._gpu
        if self.device.type != "cuda":
            raise UsageError(f"{option}: GPU power limits and clocks need a CUDA device; the device is "
                             f"{self.device.spec}")
        try:
            gpu = nvml.GpuSettings.open(self.device)
        except nvml.NVMLError as err:
            raise UsageError(f"{option}: {nvml.explain(err, f'GPU {self.device.spec}')}") from None
        except LookupError as err:
            raise UsageError(f"{option}: {err}") from None
        self.stack.callback(gpu.close)
        if gpu.mig:
            raise UsageError(f"{option}: the {gpu.name} is in MIG mode: its power limit and clocks are every "
                             "slice's, so a sweep would change other tenants' too; sweep it with MIG off")
        self._gpu = gpu
        return gpu

    def control(self, knob: str) -> Control:
        option = KNOBS[knob].option
        if knob == "cpu_power_limit":
            return _rapl_control(self.sysfs_root)
        if knob == "cpu_max_freq":
            return _cpufreq_control(self.sysfs_root)
        gpu = self.gpu(option)
        try:
            return GpuPowerLimit(gpu) if knob == "gpu_power_limit" else GpuClock(gpu, knob)
        except nvml.NVMLError as err:
            raise UsageError(f"{option}: {nvml.setting_problem(err, f'reading the {KNOBS[knob].what}')}") from None


def list_knobs(device: Device, sysfs_root: str = "/sys") -> list[dict]:
    """Every knob of `device` and the host: its valid values and original, or why it is unavailable. Nothing is
    written (whether a knob can be changed is proven when a sweep starts)."""
    rows = []
    with ExitStack() as stack:
        finder = _Finder(device, sysfs_root, stack)
        for knob in KNOBS:
            try:
                rows.append({"available": True, **finder.control(knob).describe()})
            except UsageError as err:
                rows.append({"knob": knob, "option": KNOBS[knob].option, "unit": KNOBS[knob].unit,
                             "available": False, "reason": str(err).removeprefix(f"{KNOBS[knob].option}: ")})
    return rows


@dataclass
class SweepPlan:
    """The settings to run, `DEFAULT` first, and the controls they change; `close` releases NVML."""

    settings: list[Setting]
    controls: dict[str, Control]
    close: Callable[[], None] = lambda: None


def plan_sweep(device: Device, power_limits: str | None = None, sm_clocks: str | None = None,
               mem_clocks: str | None = None, cpu_power_limits: str | None = None, cpu_max_freqs: str | None = None,
               sysfs_root: str = "/sys") -> SweepPlan:
    """Every requested value parsed and checked against `device` and the host (range, supported clock, and
    permission, through a write of the value in force), before anything changes: a one-line UsageError naming
    the fix otherwise. GPU knobs need a CUDA device; CPU knobs are the host's, whatever the device."""
    options = {"gpu_power_limit": power_limits, "gpu_sm_clock": sm_clocks, "gpu_mem_clock": mem_clocks,
               "cpu_power_limit": cpu_power_limits, "cpu_max_freq": cpu_max_freqs}
    requested = {knob: parse_values(text, knob) for knob, text in options.items() if text is not None}
    if not requested:
        raise UsageError("give what to sweep: " + ", ".join(knob.option for knob in KNOBS.values()))
    stack = ExitStack()
    with stack:
        finder = _Finder(device, sysfs_root, stack)
        controls = {knob: finder.control(knob) for knob in requested}
        for knob, values in requested.items():
            for value in values:
                controls[knob].check(value)
        for control in controls.values():
            control.probe()
        settings = [DEFAULT] + [Setting(knob, value) for knob, values in requested.items() for value in values]
        return SweepPlan(settings, controls, stack.pop_all().close)


# -- the state file --------------------------------------------------------------------------------

def state_dir() -> Path:
    """`$XDG_STATE_HOME/wattbench`, else `~/.local/state/wattbench` (the XDG base directory default)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state") / "wattbench"


def state_file() -> Path:
    """This host's state file: named by host, since a home folder may be shared by many hosts."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"
    return state_dir() / f"knobs-{host}.json"


def _boot_id() -> str | None:
    return sysfs.read_text(Path("/proc/sys/kernel/random/boot_id")) or None


def _start_ticks(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _this_process() -> dict:
    return {"pid": os.getpid(), "boot_id": _boot_id(), "start_ticks": _start_ticks(os.getpid())}


def _alive(process: dict) -> bool:
    """Whether the process that wrote a state file still runs: same boot, same pid, same start time (a pid
    taken again by another process after the sweep died has another start time)."""
    if process.get("boot_id") != _boot_id():
        return False
    pid = process.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if process.get("start_ticks") is not None:
        return _start_ticks(pid) == process["start_ticks"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it runs, as another user
    return True


def write_state(path: Path, state: dict) -> None:
    """Write `state` so that `path` holds either nothing or all of it, on disk, whatever happens next."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "w") as out:
            json.dump(state, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_state(path: Path) -> dict | None:
    """The state file at `path`, None when there is none; UsageError when it is not one wattbench wrote."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read the sweep state file ({err}): check the settings by hand "
                         "(nvidia-smi -q -d POWER,CLOCK), then remove it") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(
            state.get("originals"), list) or not isinstance(state.get("process"), dict):
        raise UsageError(f"{path}: not a {STATE_FORMAT} file: check the settings by hand (nvidia-smi -q -d "
                         "POWER,CLOCK), then remove it")
    return state


def _describe_record(record: dict) -> str:
    """A state file record in words: the knob, where, and its original."""
    knob = KNOBS.get(record.get("knob"))
    if knob is None:
        return f"unknown knob {record.get('knob')!r}"
    if knob.name in SYSFS_SCALES:
        files = record.get("files") or {}
        originals = [f"{Path(path).parent.name} {value / SYSFS_SCALES[knob.name]:g} {knob.unit}"
                     for path, value in list(files.items())[:3]]
        more = f" and {len(files) - 3} more" if len(files) > 3 else ""
        return f"{knob.what} ({', '.join(originals)}{more})"
    original = record.get("original")
    if knob.name == "gpu_power_limit":
        watts = record.get("original_w")
        original = f"{watts:g} W" if isinstance(watts, (int, float)) else repr(watts)
    return f"{knob.what} of {record.get('gpu')} ({original})"


def _leftover(state: dict, path: Path) -> str:
    pid = state["process"].get("pid")
    changed = "; ".join(_describe_record(record) for record in state["originals"] if isinstance(record, dict))
    if _alive(state["process"]):
        return (f"a sweep (pid {pid}) is changing this host's device settings now: {changed}; measurements taken "
                "meanwhile are not at the usual settings")
    return (f"a sweep (pid {pid}, started {state.get('started_utc')}) ended without putting back the device "
            f"settings it changed: {changed}; run `wattbench sweep --restore` (state file {path})")


def leftover_warning(path: Path | None = None) -> str | None:
    """A line for any wattbench command to print when this host's settings may not be as found: a sweep is
    changing them now, or one ended without putting them back (SIGKILL, power loss). None when neither."""
    path = path or state_file()
    try:
        state = read_state(path)
    except UsageError as err:
        return f"wattbench: warning: {err}"
    return None if state is None else f"wattbench: warning: {_leftover(state, path)}"


def warn_if_leftover(path: Path | None = None, stream=None) -> bool:
    """Print `leftover_warning` to stderr (or `stream`) when there is one; whether there was."""
    warning = leftover_warning(path)
    if warning:
        print(warning, file=stream or sys.stderr)
    return warning is not None


def _restore_record(record: dict, gpu_for: Callable[[str], nvml.GpuSettings] | None) -> None:
    """Put back the original that a state file record describes (KnobError when it cannot be)."""
    knob = record.get("knob")
    if knob == "gpu_power_limit":
        _nvml_step("restoring the power limit",
                   lambda: gpu_for(record["gpu"]).set_power_limit_w(record["original_w"]))
    elif knob in GPU_CLOCKS:
        _nvml_step(f"unlocking the {GPU_CLOCKS[knob].upper()} clock",
                   lambda: gpu_for(record["gpu"]).reset_clock(GPU_CLOCKS[knob]))
    elif knob in ("cpu_power_limit", "cpu_max_freq"):
        for path, value in record["files"].items():
            try:
                sysfs.write_int(Path(path), value)
            except OSError as err:
                raise KnobError(f"restoring {path}: {_write_problem(Path(path), err)}") from None
    else:
        raise KnobError(f"a state file record of an unknown knob {knob!r}: put it back by hand")


def restore_leftover(path: Path | None = None, stream=None) -> int:
    """`wattbench sweep --restore`: put back the originals a sweep that died recorded, then remove its state file.

    0 when everything was restored (or there was nothing to restore), 1 when something could not be (the state
    file is kept, so running it again after the fix finishes the job). UsageError while that sweep still runs
    (it restores its settings itself when it ends)."""
    path, out = path or state_file(), stream or sys.stdout
    state = read_state(path)
    if state is None:
        print(f"nothing to restore: no sweep state file at {path}", file=out)
        return 0
    pid = state["process"].get("pid")
    if _alive(state["process"]):
        raise UsageError(f"a sweep is running (pid {pid}): it puts the settings back itself when it ends; stop it "
                         f"(kill {pid}), and run --restore only if it dies without doing so")
    failed = []
    with ExitStack() as stack:
        gpus: dict[str, nvml.GpuSettings] = {}

        def gpu_for(uuid: str) -> nvml.GpuSettings:
            if uuid not in gpus:
                gpus[uuid] = nvml.GpuSettings.by_uuid(uuid)
                stack.callback(gpus[uuid].close)
            return gpus[uuid]

        for record in state["originals"]:
            if not isinstance(record, dict):
                failed.append(f"a state file record that is not an object: {record!r}")
                continue
            try:
                _restore_record(record, gpu_for)
            except (KnobError, KeyError, TypeError) as err:
                failed.append(f"{_describe_record(record)}: {err}")
            else:
                print(f"restored the {_describe_record(record)}", file=out)
    if failed:
        for problem in failed:
            print(f"wattbench: could not restore the {problem}", file=sys.stderr)
        print(f"wattbench: the state file {path} is kept: fix the above and run `wattbench sweep --restore` again",
              file=sys.stderr)
        return 1
    path.unlink(missing_ok=True)
    print(f"removed the state file {path}", file=out)
    return 0


# -- the sweep's session --------------------------------------------------------------------------

def held_over(readbacks: list[dict]) -> dict:
    """What a record says about its setting, from the readbacks taken over its energy windows: `held` is False
    when any readback showed the setting not in force, None when some could not be read and none showed that,
    else True; `reasons` says why (each once)."""
    if not readbacks:
        return {"held": None, "reasons": ["no readback"], "readbacks": []}
    verdicts = [readback["held"] for readback in readbacks]
    held = False if False in verdicts else (None if None in verdicts else True)
    reasons = list(dict.fromkeys(reason for readback in readbacks for reason in readback["reasons"]))
    return {"held": held, "reasons": reasons, "readbacks": readbacks}


@dataclass
class Applied:
    """A setting in force: how long it took to settle, and `readback()` for the power monitor's windows."""

    setting: Setting
    settle_s: float
    readback: Callable[[], dict] = field(repr=False)


class KnobSession:
    """Changes the knobs of a `SweepPlan` and guarantees they are put back.

        with KnobSession(plan) as session:
            for setting in plan.settings:
                with session.applied(setting) as applied:
                    ...  # measure; applied.readback() at each window's edges

    Entering writes the originals to the state file (refusing when one is already there: its originals are the
    true ones). Each setting's knob is put back after its block; leaving restores everything and removes the
    state file. SIGINT, SIGTERM and SIGHUP restore everything at once, then go to the handler that was there
    before (or end the process as they would have); after one, no further setting is applied. A signal the
    process ignores stays ignored; off the main thread no handler is installed.
    """

    def __init__(self, plan: SweepPlan, state_path: Path | None = None):
        self.plan = plan
        self.path = state_path or state_file()
        #: The name of the signal that interrupted the sweep, once one has.
        self.interrupted: str | None = None
        self._handlers = Handlers(self._on_signal)

    def __enter__(self) -> "KnobSession":
        try:
            found = read_state(self.path)
            if found is not None:
                raise UsageError(_leftover(found, self.path))
            write_state(self.path, {
                "format": STATE_FORMAT, "host": socket.gethostname(), "process": _this_process(),
                "started_utc": datetime.now(timezone.utc).isoformat(), "command": sys.argv,
                "settings": [setting.id for setting in self.plan.settings],
                "originals": [control.state() for control in self.plan.controls.values()]})
        except OSError as err:
            self.plan.close()
            raise UsageError(f"cannot write the sweep state file {self.path}: {err.strerror or err}; set "
                             "XDG_STATE_HOME to a writable folder") from None
        except BaseException:
            self.plan.close()
            raise
        self._handlers.install()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            failed = self.restore()
        finally:
            self._handlers.restore()
            self.plan.close()
        if failed and exc_type is None:
            raise self._not_put_back(failed)
        if failed:
            print(f"wattbench: error: {self._not_put_back(failed)}", file=sys.stderr)

    def _not_put_back(self, failed: list[str]) -> KnobError:
        return KnobError(f"could not put back: {'; '.join(failed)}; the state file {self.path} is kept: fix that, "
                         "then run `wattbench sweep --restore`")

    def restore(self) -> list[str]:
        """Every knob back to its original, the state file removed once all are; what could not be put back."""
        failed = []
        for control in self.plan.controls.values():
            try:
                control.restore()
            except KnobError as err:
                failed.append(str(err))
        if not failed:
            self.path.unlink(missing_ok=True)
        return failed

    @contextmanager
    def applied(self, setting: Setting, timeout_s: float = SETTLE_TIMEOUT_S, poll_s: float = SETTLE_POLL_S,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[Applied]:
        """`setting` in force and settled for the block, its knob put back after it. KnobError when it cannot be
        changed or has not taken effect within `timeout_s` (then it is put back at once)."""
        control = self.plan.controls[setting.knob] if setting.knob else None
        self._refuse_if_interrupted()
        try:
            if control is not None:
                control.apply(setting.value)
                self._refuse_if_interrupted()  # a signal during the change restored before it was made
            settle_s = self._settle(setting, timeout_s, poll_s, clock, sleep)
            yield Applied(setting, settle_s, lambda: self.readback(setting))
        except BaseException:
            if control is not None:
                try:
                    control.restore()
                except KnobError:
                    pass  # leaving the session tries again, and reports it
            raise
        if control is not None:
            try:
                control.restore()
            except KnobError as err:
                raise self._not_put_back([str(err)]) from None

    def readback(self, setting: Setting, settling: bool = False) -> dict:
        """What is in force now, and whether it is `setting`: every knob of the plan is read, the one `setting`
        changes against its value and the others against their originals. `held` is False when a readback
        shows otherwise, None when some knob could not be read, else True; `reasons` says why."""
        in_force, problems, unread = {}, [], []
        for knob, control in self.plan.controls.items():
            value = setting.value if knob == setting.knob else None
            try:
                reading = control.read()
                problem = (control.settle_problem if settling else control.problem)(value, reading)
            except KnobError as err:
                unread.append(str(err))
                continue
            in_force[knob] = reading
            if problem:
                problems.append(f"{KNOBS[knob].what}: {problem}")
        held = False if problems else (None if unread else True)
        return {"setting": setting.id, "in_force": in_force, "held": held, "reasons": problems + unread}

    def _settle(self, setting: Setting, timeout_s: float, poll_s: float, clock, sleep) -> float:
        """Seconds until STEADY_READS readbacks in a row show `setting` in force (and a new power limit obeyed)."""
        began, steady = clock(), 0
        while True:
            readback = self.readback(setting, settling=True)
            steady = steady + 1 if readback["held"] else 0
            if steady >= STEADY_READS:
                return clock() - began
            if clock() - began >= timeout_s:
                raise KnobError(f"{setting.id} did not take effect within {timeout_s:g} s: "
                                f"{'; '.join(readback['reasons'])}")
            sleep(poll_s)

    def _refuse_if_interrupted(self) -> None:
        if self.interrupted:
            raise KnobError(f"the sweep was interrupted ({self.interrupted}) and its settings put back: no further "
                            "setting is applied")

    def _on_signal(self, signum, frame) -> None:
        self.interrupted = signal.Signals(signum).name
        previous = self._handlers.previous.get(signum)
        failed = self.restore()
        if failed:
            print(f"wattbench: error: {self.interrupted}: {self._not_put_back(failed)}", file=sys.stderr)
        self._handlers.restore()
        if callable(previous):
            previous(signum, frame)
        else:  # the default: end the process by this signal, as it would have ended without the sweep
            signal.raise_signal(signum)
