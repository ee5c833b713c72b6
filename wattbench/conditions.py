"""The conditions a measurement was taken under: GPU temperature, clocks and clock events.

A benchmark measured while its GPU was power-capped or thermally throttled ran slower (and
at a different power) than the same benchmark on a cool GPU, so each energy window records
the temperature and clocks at its edges and the clock-event reasons NVML reported during it,
and a record is flagged when any of them is a throttle. NVML reports a reason only while it
is active, so the reasons are polled on a thread for the length of the window.

This module knows nothing about NVML calls (those stay in `wattbench.power.nvml`); it works
on readers: functions returning a number, or None when a reading failed. A reader may hang (a
driver call on a GPU that fell off the bus never returns): every reading goes through a
`BoundedCaller`, so no wait here lasts longer than a timeout.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from wattbench.record import Record
from wattbench.schema import is_finite_number

#: NVML's clock-event reason bits (nvml.h `nvmlClocksEventReason*`), with whether each is a throttle.
#: Idle, application/display clock settings and sync boost are settings, not throttling.
CLOCK_EVENTS = {
    0x1: ("gpu_idle", False),
    0x2: ("applications_clocks_setting", False),
    0x4: ("sw_power_cap", True),
    0x8: ("hw_slowdown", True),
    0x10: ("sync_boost", False),
    0x20: ("sw_thermal_slowdown", True),
    0x40: ("hw_thermal_slowdown", True),
    0x80: ("hw_power_brake_slowdown", True),
    0x100: ("display_clock_setting", False),
    0x200: ("board_limit", True),
    0x400: ("reliability", True),
}
THROTTLES = {name for name, throttle in CLOCK_EVENTS.values() if throttle}

#: Readings taken at each window's edges.
EDGE_QUANTITIES = ("temperature_c", "sm_clock_mhz", "mem_clock_mhz")
#: Everything a ConditionSensors may read: the edge quantities and the clock-event bitmask.
QUANTITIES = EDGE_QUANTITIES + ("clock_events",)

#: How often the clock events are polled during a window (one cheap NVML call each).
POLL_S = 0.1

#: How long one condition reading may take before the device is taken as hung (a healthy one takes
#: milliseconds).
READ_TIMEOUT_S = 10.0


class CallTimeout(Exception):
    """A call did not return in time; `reason` says which call and how long it was given."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BoundedCaller:
    """Runs calls on one daemon worker thread and waits for each at most a timeout.

    A driver call that hangs cannot be interrupted from Python. Made on the worker, it leaves
    the caller free: the caller gets a CallTimeout, and the process can still exit. The worker
    stays stuck in that call, so every later call fails at once with the same reason rather
    than waiting again: a device that hung once is not asked again in this process.
    """

    def __init__(self, name: str = "wattbench-bounded-calls"):
        self.name = name
        self.hung: str | None = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        # Re-entrant: a signal handler (a sweep's restore) may call in while this thread holds it.
        self._start_lock = threading.RLock()

    def call(self, fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """fn() on the worker; its result, or its exception; CallTimeout after `timeout_s`."""
        if threading.current_thread() is self._worker:
            return fn()  # a call made from inside a call: waiting on the worker would deadlock
        if self.hung is not None:
            raise CallTimeout(self.hung)
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._worker.start()
        done, outcome = threading.Event(), {}
        self._requests.put((fn, done, outcome))
        if not done.wait(timeout_s):
            self.hung = self.hung or (f"{what} did not return within {timeout_s:g} s (the device may be lost or "
                                      "hung); no further calls are made to it")
            raise CallTimeout(self.hung)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _serve(self) -> None:
        while True:
            fn, done, outcome = self._requests.get()
            try:
                outcome["value"] = fn()
            except Exception as err:  # noqa: BLE001 - handed to the caller, who decides
                outcome["error"] = err
            done.set()


def unknown(reason: str) -> dict:
    """A fact that could not be read, and why (never a guessed value)."""
    return {"unknown": True, "reason": reason}


def decode_clock_events(mask: int) -> list[str]:
    """The names of the bits set in an NVML clock-event bitmask.

    Bits this table does not know are named `unknown_0x...` and count as throttles: newer
    drivers have added limiters, not settings.
    """
    if isinstance(mask, bool) or not isinstance(mask, int) or mask < 0:
        raise ValueError(f"mask must be a non-negative integer bitmask, got {mask!r}")
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_EVENTS[bit][0] if bit in CLOCK_EVENTS else f"unknown_{bit:#x}")
        bit <<= 1
    return names


def is_throttle(name: str) -> bool:
    return name in THROTTLES or name.startswith("unknown_0x")


@dataclass
class ConditionSensors:
    """What can be read about a device's conditions.

    `readers` maps a quantity of QUANTITIES to a function returning its value (None when one
    reading fails); `missing` maps each quantity that cannot be read at all to the reason.
    Readings are made through `caller` and given up after `timeout_s`; after one has hung,
    `hung` says why and every later reading is None at once.
    """

    readers: dict[str, Callable[[], float | None]]
    missing: dict[str, str]
    close: Callable[[], None] = lambda: None
    caller: BoundedCaller = field(default_factory=BoundedCaller)
    timeout_s: float = READ_TIMEOUT_S

    def __post_init__(self):
        given = [*self.readers, *self.missing]
        if sorted(given) != sorted(QUANTITIES):
            raise ValueError(f"each of {QUANTITIES} needs either a reader or the reason it is missing, "
                             f"got readers {sorted(self.readers)} and missing {sorted(self.missing)}")

    @classmethod
    def unavailable(cls, reason: str) -> "ConditionSensors":
        return cls({}, {quantity: reason for quantity in QUANTITIES})

    def read(self, quantity: str) -> float | None:
        reader = self.readers.get(quantity)
        if reader is None:
            return None
        try:
            return self.caller.call(reader, self.timeout_s, f"reading {quantity}")
        except CallTimeout:
            return None

    @property
    def hung(self) -> str | None:
        """Why readings stopped (one did not return in time), or None."""
        return self.caller.hung

    def why_unavailable(self) -> str | None:
        """Why nothing at all can be read, or None when something can."""
        return None if self.readers else "; ".join(sorted(set(self.missing.values())))


class WindowWatch:
    """The conditions over one window (`with WindowWatch(sensors) as watch: ...`, then `watch.result()`).

    Edge quantities are read on entering and leaving; the clock events on entering, every
    `poll_s` on a daemon thread, and on leaving, OR-ed together. Every reading is bounded (see
    ConditionSensors), so leaving waits at most one poll period and one reading's timeout.
    """

    def __init__(self, sensors: ConditionSensors, poll_s: float = POLL_S):
        if not isinstance(sensors, ConditionSensors):
            raise TypeError(f"sensors must be a ConditionSensors, got {type(sensors).__name__}")
        if isinstance(poll_s, bool) or not isinstance(poll_s, (int, float)) or not poll_s > 0:
            raise ValueError(f"poll_s must be a positive number of seconds, got {poll_s!r}")
        self.sensors = sensors
        self.poll_s = poll_s
        self.start: dict[str, float | None] = {}
        self.end: dict[str, float | None] = {}
        self.mask = 0
        self.polls = 0
        self.hung: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        mask = self.sensors.read("clock_events")
        self.polls += 1
        if mask is not None:
            self.mask |= int(mask)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()

    def _edges(self) -> dict:
        return {q: self.sensors.read(q) for q in EDGE_QUANTITIES if q in self.sensors.readers}

    def __enter__(self) -> "WindowWatch":
        self.start = self._edges()
        if "clock_events" in self.sensors.readers:
            self._poll()
            self._thread = threading.Thread(target=self._run, name="wattbench-conditions", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(self.poll_s + self.sensors.timeout_s)
            self._poll()
        self.end = self._edges()
        self.hung = self.sensors.hung

    def result(self) -> dict:
        """[start, end] of each readable edge quantity, the clock events seen (when readable), and
        `hung`, the reason, when readings stopped because one did not return."""
        result = {q: [self.start[q], self.end[q]] for q in self.start}
        if "clock_events" in self.sensors.readers:
            result["clock_events"] = decode_clock_events(self.mask)
            result["polls"] = self.polls
        if self.hung is not None:
            result["hung"] = self.hung
        return result


def summarize_conditions(windows: list[dict], sensors: ConditionSensors) -> dict:
    """A benchmark's `energy["conditions"]`: its first window's start and last window's end,
    every clock event seen in any window, the throttles among them, and each window's detail.

    When readings hung in a window, `hung` gives the reason, and without a throttle seen
    `throttled` is None: an unread window is not a calm one."""
    if not windows:
        raise ValueError("windows must hold at least one window's conditions")
    everything_missing = sensors.why_unavailable()
    if everything_missing:
        return unknown(everything_missing)
    summary = {}
    for quantity in EDGE_QUANTITIES:
        if quantity in sensors.missing:
            summary[quantity] = unknown(sensors.missing[quantity])
        else:
            summary[quantity] = [windows[0][quantity][0], windows[-1][quantity][1]]
    if "clock_events" in sensors.missing:
        reason = sensors.missing["clock_events"]
        summary.update(clock_events=unknown(reason), throttle_reasons=unknown(reason), throttled=None)
    else:
        seen = list(dict.fromkeys(name for window in windows for name in window["clock_events"]))
        throttles = [name for name in seen if is_throttle(name)]
        summary.update(clock_events=seen, throttle_reasons=throttles, throttled=bool(throttles))
    hung = next((window["hung"] for window in windows if "hung" in window), None)
    if hung is not None:
        summary["hung"] = hung
        if not summary["throttled"]:
            summary["throttled"] = None
    summary["windows"] = windows
    return summary


def wait_until_cool(read_temperature: Callable[[], float | None], target_c: float, timeout_s: float,
                    poll_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep,
                    hung: Callable[[], str | None] = lambda: None) -> dict:
    """Poll the temperature until it is at or below `target_c`, giving up after `timeout_s`.

    A failed reading (None) counts as not cool yet. Once `hung()` gives a reason (the sensors
    stopped answering, e.g. ConditionSensors.hung) waiting longer cannot help: the wait ends
    at once, with that reason as `hung`. Returns what happened: the target, the temperatures
    at the start and end, the seconds waited and whether the target was reached.
    """
    for name, value in (("target_c", target_c), ("timeout_s", timeout_s), ("poll_s", poll_s)):
        if not is_finite_number(value):
            raise TypeError(f"{name} must be a finite number, got {value!r}")
    if timeout_s < 0 or poll_s <= 0:
        raise ValueError(f"timeout_s must be >= 0 and poll_s > 0, got timeout_s={timeout_s!r}, poll_s={poll_s!r}")
    began = clock()
    start = current = read_temperature()
    while (current is None or current > target_c) and hung() is None:
        waited = clock() - began
        if waited >= timeout_s:
            break
        sleep(min(poll_s, timeout_s - waited))
        current = read_temperature()
    reached = current is not None and current <= target_c
    result = {"target_c": target_c, "start_c": start, "end_c": current, "waited_s": clock() - began,
              "reached": reached}
    if not reached and hung() is not None:
        result["hung"] = hung()
    return result


def throttled_benchmarks(run: dict) -> list[str]:
    """Names of the run file's benchmarks whose energy windows saw a throttle (power cap, thermal, ...)."""
    if not isinstance(run, dict) or not isinstance(run.get("benchmarks"), list):
        raise TypeError("run must be a run file's JSON object with a 'benchmarks' list")
    names = []
    for bench in run["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("energy"), dict):
            continue
        conditions = Record.from_json(info).energy.extra.get("conditions")  # PowerMonitor's, not a declared field
        if isinstance(conditions, dict) and conditions.get("throttled") is True:
            names.append(bench.get("name") or bench.get("fullname") or "unnamed benchmark")
    return names
