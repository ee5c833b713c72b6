"""The sampler: one daemon thread polling every channel, and named windows over its readings.

A thread rather than a process: it shares the `time.perf_counter` clock the timers use, and
an NVML read releases the GIL. Windows may nest and overlap (like Zeus's begin/end_window);
their energy is computed from the recorded readings after the window closes.

The thread can be paused between windows (the monitor pauses it during timing rounds, so that
they run without its wake-ups and GIL requests); while paused it sleeps without waking.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from wattbench.power.base import Channel, SensorFault
from wattbench.power.integrate import counter_updates, energy_from_counter, energy_from_power

#: Readings before a window that its integration may use (the counter update before the start).
LOOKBACK_S = 2.0
#: How long closing a window waits for a polled channel to show an update after its end.
POLLED_WAIT_S = 1.0
#: How long it waits for a replay log still being written to reach the window's end.
REPLAY_WAIT_S = 3.0
#: How long resuming waits for every counter to update (a slow hwmon counter may take seconds).
RESUME_WAIT_S = 5.0


@dataclass
class Trace:
    """Readings of one channel: timestamps (perf_counter s), values, and fault intervals."""

    timestamps: np.ndarray
    values: np.ndarray
    faults: list[tuple[float, float, str]] = field(default_factory=list)
    dead: tuple[float, str] | None = None


@dataclass
class ChannelWindow:
    """One channel's energy over one window; the numbers are None when `valid` is False."""

    channel: str
    method: str
    duration_s: float
    valid: bool
    reason: str | None = None
    joules: float | None = None
    avg_power_w: float | None = None
    peak_power_w: float | None = None
    samples: int = 0
    updates: int = 0
    #: Bound on the error from the window's edges (counter granularity, sensor lag), in joules.
    edge_error_j: float = 0.0


@dataclass
class WindowResult:
    name: str
    start_s: float
    end_s: float
    channels: dict[str, ChannelWindow]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def invalid(channel: Channel, duration_s: float, reason: str) -> ChannelWindow:
    return ChannelWindow(channel.name, channel.method, duration_s, valid=False, reason=reason)


def measure_channel(channel: Channel, trace: Trace, start_s: float, end_s: float) -> ChannelWindow:
    """Energy, average and peak power of one channel over [start_s, end_s]; never raises."""
    duration = end_s - start_s
    if trace.dead is not None and trace.dead[0] <= end_s:
        return invalid(channel, duration, trace.dead[1])
    for fault_start, fault_end, reason in trace.faults:
        if fault_start <= end_s and fault_end >= start_s:
            return invalid(channel, duration, reason)
    times, values = trace.timestamps, trace.values
    inside = (times >= start_s) & (times <= end_s)
    try:
        if channel.is_counter:
            joules = energy_from_counter(times, values, start_s, end_s)
            update_times, update_values = counter_updates(times, values)
            gaps = np.diff(update_times)
            spans = (update_times[1:] > start_s) & (update_times[:-1] < end_s)
            slopes = np.diff(update_values)[spans] / gaps[spans]
            peak = float(slopes.max()) if len(slopes) else joules / duration
            updates = int(((update_times >= start_s) & (update_times <= end_s)).sum())
            # Between updates the counter is interpolated linearly: at each edge that is off by at
            # most peak x update interval / 4, plus half a poll interval in placing the update.
            update_s = float(np.median(gaps)) if len(gaps) else 0.0
            poll_s = float(np.median(np.diff(times)))
            edge_error = peak * (update_s / 2 + poll_s) + 2 * channel.resolution
            avg = joules / duration
        else:
            # Sensor readings lag the power: skip the first `settle_s` (still showing the power
            # from before the window) and scale the steady-state average to the whole window.
            settle = min(channel.settle_s, duration / 2)
            avg = energy_from_power(times, values, start_s + settle, end_s) / (duration - settle)
            joules = avg * duration
            peak = float(values[inside].max()) if inside.any() else avg
            updates = int((np.diff(values[inside]) != 0).sum()) + int(inside.any())
            edge_error = settle * max(peak - avg, 0.0) + channel.resolution * duration
    except ValueError as err:
        return invalid(channel, duration, f"{channel.name}: {err}")
    return ChannelWindow(channel.name, channel.method, duration, valid=True, joules=joules, avg_power_w=avg,
                         peak_power_w=peak, samples=int(inside.sum()), updates=updates, edge_error_j=edge_error)


class _Recording:
    """Readings of one polled channel, appended by the sampler thread only."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.read = channel.read
        self.is_counter = channel.is_counter
        self.timestamps: list[float] = []
        self.values: list[float] = []
        self.faults: list[tuple[float, float, str]] = []
        self.dead: tuple[float, str] | None = None


class Sampler:
    """Polls every channel at `hz` on a daemon thread; evaluates named windows."""

    def __init__(self, channels: list[Channel], hz: float = 100.0):
        if not (isinstance(hz, (int, float)) and math.isfinite(hz) and hz > 0):
            raise ValueError(f"hz must be a positive number, got {hz!r}")
        unreadable = [c.name for c in channels if c.read is None and c.load is None]
        if unreadable:
            raise ValueError(f"channels must have read or load, these have neither: {unreadable}")
        self.channels = list(channels)
        self.hz = float(hz)
        self._recordings = {c.name: _Recording(c) for c in self.channels if c.read is not None}
        self._polled = list(self._recordings.values())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._polling = threading.Event()
        self._polling.set()
        self._thread: threading.Thread | None = None
        self._open: dict[str, float] = {}
        self._resumed: list[float] = []
        self.cpu_s = 0.0
        self.started_s: float | None = None

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> "Sampler":
        if self._thread is not None:
            raise RuntimeError("the sampler is already running")
        self.started_s = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="wattbench-power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._polling.set()  # wake a paused thread so that it sees the stop
            self._thread.join()
            self._thread = None

    def pause(self) -> None:
        """Stop polling until `resume`; readings so far are kept. Not while a window is open.

        A pause may hide whole wraps of a RAPL or hwmon counter; no window spans one, so no
        window's energy is affected."""
        if self._open:
            raise RuntimeError(f"cannot pause the sampler while windows are open: {sorted(self._open)}")
        self._polling.clear()

    def resume(self) -> None:
        """Poll again; returns once every polled channel has a reading from after the pause (for
        a counter, an update), so that a window may begin at once."""
        if self._polling.is_set():
            return
        resumed = time.perf_counter()
        self._resumed.append(resumed)
        self._polling.set()
        self.wait_for_coverage(resumed, [r.channel for r in self._polled], polled_wait_s=RESUME_WAIT_S)

    @property
    def paused(self) -> bool:
        return not self._polling.is_set()

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        cpu_start = time.thread_time()
        period = 1.0 / self.hz
        ticks_per_cpu_update = max(1, round(self.hz))  # thread_time is a syscall: read it once a second
        due = time.perf_counter()
        # time.sleep, not Event.wait: it costs half the CPU per wake-up; stopping waits one period at most.
        tick = 0
        while not self._stop.is_set():
            if not self._polling.is_set():
                self._polling.wait()
                due = time.perf_counter()
                continue
            self.poll_once()
            tick += 1
            if tick % ticks_per_cpu_update == 0:
                self.cpu_s = time.thread_time() - cpu_start
            due += period
            delay = due - time.perf_counter()
            if delay < 0:  # fell behind (e.g. the GIL was busy): keep the rate, drop the backlog
                due, delay = time.perf_counter(), 0.0
            time.sleep(delay)
        self.cpu_s = time.thread_time() - cpu_start

    def poll_once(self) -> None:
        """Read every live polled channel once (the thread's loop body; tests call it directly).

        Kept lean: at 100 Hz every statement here costs CPU a hundred times a second. A reading
        is stamped with the time just before its read: after a read that released the GIL, the
        thread may wait up to the interpreter's switch interval (5 ms) to run again.
        """
        clock = time.perf_counter
        for recording in self._polled:
            if recording.dead is not None:
                continue
            before = clock()
            try:
                value = float(recording.read())
            except Exception as err:  # noqa: BLE001 - a sensor bug must not kill the sampler thread
                fault = err if isinstance(err, SensorFault) else SensorFault(f"unexpected error: {err!r}")
                with self._lock:
                    self._fault(recording, before, fault)
                continue
            with self._lock:
                if recording.is_counter and recording.values and value < recording.values[-1]:
                    self._fault(recording, before, SensorFault(
                        f"counter went backwards ({recording.values[-1]:.3f} J -> {value:.3f} J)"))
                recording.timestamps.append(before)
                recording.values.append(value)

    def _fault(self, recording: _Recording, now: float, fault: SensorFault) -> None:
        """Note a failed or implausible reading: the channel dies (permanent) or gets a fault interval.

        The caller holds the lock."""
        last_time = recording.timestamps[-1] if recording.timestamps else now
        reason = f"{recording.channel.name}: {fault.reason}"
        if fault.permanent:
            recording.dead = (last_time, reason)
        else:
            recording.faults.append((last_time, now, reason))

    # -- readings -----------------------------------------------------------------------

    def trace(self, channel: Channel, since_s: float = -math.inf) -> Trace:
        """The channel's readings from `since_s` on (a copy; safe while the thread runs)."""
        if channel.load is not None:
            times, values = channel.load()
            return Trace(times, values)
        recording = self._recordings[channel.name]
        with self._lock:
            first = bisect.bisect_left(recording.timestamps, since_s)
            return Trace(np.array(recording.timestamps[first:]), np.array(recording.values[first:]),
                         list(recording.faults), recording.dead)

    def fault_reasons(self, channel: Channel) -> list[str]:
        """Why readings of a polled channel failed so far, its death last (none for a loaded channel).
        Unlike `trace`, copies no readings: the run file asks after every benchmark."""
        recording = self._recordings.get(channel.name)
        if recording is None:
            return []
        with self._lock:
            return [reason for _, _, reason in recording.faults] + ([recording.dead[1]] if recording.dead else [])

    def _covered(self, channel: Channel, end_s: float) -> bool:
        """Whether the readings already reach past `end_s` (or never will)."""
        if channel.load is not None:
            try:
                times, _ = channel.load()
            except (OSError, ValueError):
                return True
            return len(times) == 0 or times[-1] >= end_s
        recording = self._recordings[channel.name]
        with self._lock:
            if recording.dead is not None:
                return True
            after = bisect.bisect_right(recording.timestamps, end_s)
            later = recording.values[after:]
        if not channel.is_counter:
            return len(later) > 0
        return any(b != a for a, b in zip(later, later[1:]))

    def wait_for_coverage(self, end_s: float, channels: list[Channel] | None = None,
                          polled_wait_s: float = POLLED_WAIT_S) -> None:
        """Wait (bounded) until every channel (of `channels`, default all) has a reading that
        closes a window ending at `end_s`."""
        for channel in self.channels if channels is None else channels:
            limit = time.perf_counter() + (REPLAY_WAIT_S if channel.load is not None else polled_wait_s)
            if channel.read is not None and self._thread is None:
                continue  # nobody is polling: waiting would not help
            while not self._covered(channel, end_s) and time.perf_counter() < limit:
                time.sleep(0.01)

    def evaluate(self, name: str, start_s: float, end_s: float) -> WindowResult:
        # Polled readings from before the last pause must not enter the integral: interpolating a
        # counter across a pause would spread the unseen gap's energy over the window's edge.
        resumed = max((r for r in self._resumed if r <= start_s), default=-math.inf)
        results = {}
        for channel in self.channels:
            try:
                trace = self.trace(channel, since_s=start_s - LOOKBACK_S)
            except (OSError, ValueError) as err:
                results[channel.name] = invalid(channel, end_s - start_s, f"{channel.name}: {err}")
                continue
            # Readings across a fault outside the window (e.g. a counter reset) must not enter its integral.
            ended = [fault_end for _, fault_end, _ in trace.faults if fault_end < start_s]
            begun = [fault_start for fault_start, _, _ in trace.faults if fault_start > end_s]
            since = max(ended + ([resumed] if channel.read is not None else []), default=-math.inf)
            keep = (trace.timestamps >= since) & (trace.timestamps <= min(begun, default=math.inf))
            trace = Trace(trace.timestamps[keep], trace.values[keep], trace.faults, trace.dead)
            results[channel.name] = measure_channel(channel, trace, start_s, end_s)
        return WindowResult(name, start_s, end_s, results)

    # -- windows ------------------------------------------------------------------------

    def begin_window(self, name: str) -> float:
        if name in self._open:
            raise ValueError(f"window {name!r} is already open")
        if self.paused:
            raise RuntimeError(f"cannot open window {name!r}: the sampler is paused (resume() it first)")
        self._open[name] = time.perf_counter()
        return self._open[name]

    def end_window(self, name: str, cancel: bool = False) -> WindowResult | None:
        """Close a window; its result (None when cancelled) once readings cover its end."""
        if name not in self._open:
            raise ValueError(f"no open window named {name!r}")
        end = time.perf_counter()
        start = self._open.pop(name)
        if cancel:
            return None
        self.wait_for_coverage(end)
        return self.evaluate(name, start, end)

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator["WindowHandle"]:
        """`with sampler.window("x") as w: ...` then `w.result`; cancelled if the body raises."""
        handle = WindowHandle(name)
        self.begin_window(name)
        try:
            yield handle
        except BaseException:
            self.end_window(name, cancel=True)
            raise
        handle.result = self.end_window(name)


@dataclass
class WindowHandle:
    name: str
    result: WindowResult | None = None
