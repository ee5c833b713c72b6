"""The sampler: one daemon thread polling every channel, and named windows over its readings.

A thread rather than a process: it shares the `time.perf_counter` clock the timers use, and
an NVML read releases the GIL. Windows may nest and overlap (like Zeus's begin/end_window);
their energy is computed from the recorded readings after the window closes.

The thread can be paused between windows (the monitor pauses it during timing rounds, so that
they run without its wake-ups and GIL requests); while paused it sleeps without waking.

What a read costs is measured, not assumed: an NVML call may take 20 µs or several ms, spent
burning CPU or blocked in the driver. The thread keeps within a budget (`plan_rates`): at
most CPU_BUDGET of one core, and at most WALL_SHARE of its time inside reads. It polls the
primary channels (those whose sum is the device's energy) as close to `hz` as the budget
allows, and the secondary ones (timeline, cross-check, host energy) on every k-th poll only
when the budget is short, so costly reads slow the secondaries first. The plan is made after
the first poll and again every REPLAN_S from the costs measured since.

Each reading is stamped with the midpoint of its read, and its duration kept: when inside
the call the sensor was read is unknown, so half of it bounds the stamp's error, and it goes
into each window's edge error. A read that never returns (a GPU lost) stops the thread's
polling; every wait here is bounded, and the windows it affects are invalid with the reason.
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
from wattbench.power.replay import clock_offset, wall_clock

#: Readings before a window that its integration may use (the counter update before the start),
#: beyond two of the channel's poll intervals.
LOOKBACK_S = 2.0
#: How long closing a window waits for a polled channel to show an update after its end, beyond
#: two of its poll intervals.
POLLED_WAIT_S = 1.0
#: How long it waits for a replay log still being written to reach the window's end.
REPLAY_WAIT_S = 3.0
#: How long resuming waits for every counter to update (a slow hwmon counter may take seconds).
RESUME_WAIT_S = 5.0

#: The thread's CPU budget, in cores: under the 1%-of-a-core target, with room for the error
#: of estimating the next second's cost from the last.
CPU_BUDGET = 0.008
#: Most of the thread's time that may be spent inside reads blocked in a driver: NVML serialises
#: calls to a GPU, so a thread always inside one would delay every other NVML user.
WALL_SHARE = 0.5
#: The secondaries' most share of the budget when it is short.
SECONDARY_SHARE = 0.25
#: Slowest primary rate, whatever a read costs: slower, a counter's update placement (± half a
#: poll interval) would swamp a 5 s window, and a lost device would go unseen for seconds.
MIN_HZ = 1.0
#: Slowest secondary rate: one reading every 5 s still draws a timeline.
MIN_SECONDARY_HZ = 0.2
#: How often the plan is remade from the measured costs.
REPLAN_S = 1.0
#: A read that has not returned for this long is hung (a healthy one takes milliseconds).
HUNG_READ_S = 2.0
#: How long `stop` waits for the thread (which may be stuck in a hung read).
STOP_WAIT_S = 2.0
#: Longest single sleep of the thread, so that a stop is seen within it even at a slow rate.
WAKE_CHECK_S = 0.1


@dataclass(frozen=True)
class Plan:
    """Poll the primary channels at `hz`, the secondary ones on every `every`-th poll (as a whole:
    `share_secondaries` gives each its own divisor within that)."""

    hz: float
    every: int = 1

    @property
    def secondary_hz(self) -> float:
        return self.hz / self.every


def read_load(cpu_s: float, wall_s: float, cpu_budget: float = CPU_BUDGET) -> float:
    """One read's share of the thread's budget, per poll per second (read at r Hz, it takes r
    times this): its CPU against the CPU budget, or its time inside the call against
    WALL_SHARE, whichever is larger."""
    return max(cpu_s / cpu_budget, wall_s / WALL_SHARE)


def plan_rates(max_hz: float, tick_load: float, primary_load: float, secondary_load: float = 0.0) -> Plan:
    """The fastest plan whose load fits the budget (loads per poll from `read_load`; `tick_load`
    is the loop's own cost per wake-up against the CPU budget).

    The primary rate is `max_hz` where it fits, else as fast as fits (never under MIN_HZ).
    Secondaries are read on every poll where that fits; where not, on every k-th poll, k the
    smallest that either keeps the full rate or holds their part to SECONDARY_SHARE of the load.
    """
    per_poll = tick_load + primary_load
    every = 1
    spare = 1 / max_hz - per_poll
    if secondary_load > spare and per_poll > 0:
        every = max(1, math.ceil(secondary_load * (1 - SECONDARY_SHARE) / (SECONDARY_SHARE * per_poll)))
        if spare > 0:
            every = min(every, math.ceil(secondary_load / spare))
    load = per_poll + secondary_load / every
    hz = max_hz if load <= 0 else max(min(max_hz, 1 / load), min(MIN_HZ, max_hz))
    return Plan(hz, min(every, max(1, math.floor(hz / MIN_SECONDARY_HZ))))


def share_secondaries(plan: Plan, loads: list[float]) -> list[int]:
    """Each secondary channel's divisor (read on every k-th poll) within the plan's secondary
    load: cheap channels (a RAPL file beside a slow NVML call) are not slowed for a costly one.
    The cheapest are served first, each to its share of what is left."""
    budget = sum(loads) / plan.every
    slowest = max(1, math.floor(plan.hz / MIN_SECONDARY_HZ))
    every = [1] * len(loads)
    for served, position in enumerate(sorted(range(len(loads)), key=loads.__getitem__)):
        share = budget / (len(loads) - served)
        every[position] = 1 if loads[position] <= share else min(math.ceil(loads[position] / share), slowest)
        budget -= loads[position] / every[position]
    return every


@dataclass
class Trace:
    """Readings of one channel: timestamps (perf_counter s), values, and fault intervals."""

    timestamps: np.ndarray
    values: np.ndarray
    faults: list[tuple[float, float, str]] = field(default_factory=list)
    dead: tuple[float, str] | None = None
    #: How long each read took (its stamp is the read's midpoint); None where nothing was read (a log).
    durations: np.ndarray | None = None


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


#: Fewest updates from which an update period is taken.
MIN_PERIOD_UPDATES = 5


def update_period_s(trace: Trace, is_counter: bool) -> float | None:
    """The median interval between the updates the readings show, or None with fewer than
    MIN_PERIOD_UPDATES: a counter's update points, a polled power reading's changes of value (it
    repeats between updates), a logged reading's rows. Polled more slowly than the sensor
    updates, this is the poll interval: as finely as the readings can place an update."""
    times, values = trace.timestamps, trace.values
    if is_counter:
        times = counter_updates(times, values)[0]
    elif trace.durations is not None and len(values) > 1:
        changed = np.flatnonzero(values[1:] != values[:-1]) + 1
        times = (times[changed - 1] + times[changed]) / 2
    if len(times) < MIN_PERIOD_UPDATES:
        return None
    return float(np.median(np.diff(times)))


def invalid(channel: Channel, duration_s: float, reason: str) -> ChannelWindow:
    return ChannelWindow(channel.name, channel.method, duration_s, valid=False, reason=reason)


def edge_read_s(trace: Trace, edge_s: float) -> float:
    """The longest of the two reads on each side of `edge_s` (0 for readings not polled)."""
    if trace.durations is None or len(trace.durations) == 0:
        return 0.0
    at = int(np.searchsorted(trace.timestamps, edge_s))
    return float(trace.durations[max(at - 2, 0):at + 2].max(initial=0.0))


def interpolation_error(times: np.ndarray, values: np.ndarray, edge_s: float) -> float:
    """Bound on the joules misplaced at `edge_s` by interpolating sampled power across it: the
    power may have stepped anywhere between the samples on either side. Small at 100 Hz; what
    dominates when costly reads leave seconds between samples."""
    at = int(np.searchsorted(times, edge_s))
    if not 0 < at < len(times):
        return 0.0
    return abs(float(values[at] - values[at - 1])) * float(times[at] - times[at - 1])


def uncovered(times: np.ndarray, start_s: float, end_s: float) -> str:
    """Why a log on the perf_counter clock misses a window, in wall-clock time: a person compares it
    with the meter's own timestamps, never with this process's monotonic seconds."""
    offset = clock_offset()

    def wall(stamp: float) -> str:
        return wall_clock(stamp + offset, "milliseconds")

    return (f"the log covers {wall(times[0])} to {wall(times[-1])} (wall clock) and does not cover "
            f"the window {wall(start_s)} to {wall(end_s)}")


def measure_channel(channel: Channel, trace: Trace, start_s: float, end_s: float,
                    call_s: float | None = None) -> ChannelWindow:
    """Energy, average and peak power of one channel over [start_s, end_s]; never raises.

    The edge error includes the reads at the edges: a stamp (a read's midpoint) may be off by
    half its read, so the energy at each edge by the peak power times that.

    `call_s` says that the power at both edges is a workload repeating every `call_s` seconds
    (calls run back to back before, through and after the window). Interpolating a counter
    across an edge then misplaces at most one call's energy, plus a quarter of an update
    interval at the swing the counter shows between its update intervals (power that varies
    more slowly than the calls repeat), where power that may step anywhere between 0 and its
    peak (an idle GPU starting) can misplace up to a quarter of an update interval at peak."""
    duration = end_s - start_s
    if trace.dead is not None and trace.dead[0] <= end_s:
        return invalid(channel, duration, trace.dead[1])
    for fault_start, fault_end, reason in trace.faults:
        if fault_start <= end_s and fault_end >= start_s:
            return invalid(channel, duration, reason)
    times, values = trace.timestamps, trace.values
    if channel.load is not None and len(times) and (times[0] > start_s or times[-1] < end_s):
        return invalid(channel, duration, f"{channel.name}: {uncovered(times, start_s, end_s)}")
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
            # most peak x update interval / 4 (or one call's energy, see the docstring), plus half a
            # poll interval in placing the update.
            update_s = float(np.median(gaps)) if len(gaps) else 0.0
            poll_s = float(np.median(np.diff(times)))
            interpolation = peak * update_s / 4
            if call_s is not None:
                swing = float(slopes.max() - slopes.min()) if len(slopes) else peak
                interpolation = min(interpolation, joules * call_s / duration + swing * update_s / 4)
            edge_error = 2 * interpolation + peak * poll_s + 2 * channel.resolution
            avg = joules / duration
        else:
            # Sensor readings lag the power: skip the first `settle_s` (still showing the power
            # from before the window) and scale the steady-state average to the whole window.
            settle = min(channel.settle_s, duration / 2)
            avg = energy_from_power(times, values, start_s + settle, end_s) / (duration - settle)
            joules = avg * duration
            peak = float(values[inside].max()) if inside.any() else avg
            updates = int((np.diff(values[inside]) != 0).sum()) + int(inside.any())
            edge_error = (settle * max(peak - avg, 0.0) + channel.resolution * duration
                          + interpolation_error(times, values, start_s + settle) + interpolation_error(times, values, end_s))
    except ValueError as err:
        return invalid(channel, duration, f"{channel.name}: {err}")
    edge_error += peak * (edge_read_s(trace, start_s) + edge_read_s(trace, end_s)) / 2
    return ChannelWindow(channel.name, channel.method, duration, valid=True, joules=joules, avg_power_w=avg,
                         peak_power_w=peak, samples=int(inside.sum()), updates=updates, edge_error_j=edge_error)


class _Recording:
    """Readings of one polled channel and what reading it costs, kept by the sampler thread."""

    def __init__(self, channel: Channel, primary: bool):
        self.channel = channel
        self.read = channel.read
        self.is_counter = channel.is_counter
        self.primary = primary
        self.timestamps: list[float] = []
        self.values: list[float] = []
        self.durations: list[float] = []
        self.faults: list[tuple[float, float, str]] = []
        self.dead: tuple[float, str] | None = None
        self.reads = 0
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.longest_s = 0.0
        #: Costs since the last plan, and this channel's load per poll in it (see read_load).
        self.interval = [0, 0.0, 0.0]
        self.load = 0.0
        #: Read on every `every`-th poll of the thread (primaries on every one).
        self.every = 1

    def cost(self, cpu_s: float, wall_s: float) -> None:
        self.reads += 1
        self.cpu_s += cpu_s
        self.wall_s += wall_s
        self.longest_s = max(self.longest_s, wall_s)
        self.interval[0] += 1
        self.interval[1] += cpu_s
        self.interval[2] += wall_s


class Sampler:
    """Polls every channel on a daemon thread, within a CPU budget (see the module docstring);
    evaluates named windows.

    `hz` is the primary channels' rate when reads are cheap; `primary` names the channels
    polled at it (default: all), the rest are secondary; `cpu_budget` defaults to CPU_BUDGET.
    """

    def __init__(self, channels: list[Channel], hz: float = 100.0, primary: list[str] | None = None,
                 cpu_budget: float | None = None):
        cpu_budget = CPU_BUDGET if cpu_budget is None else cpu_budget
        if not (isinstance(hz, (int, float)) and math.isfinite(hz) and hz > 0):
            raise ValueError(f"hz must be a positive number, got {hz!r}")
        if not (isinstance(cpu_budget, (int, float)) and 0 < cpu_budget <= 1):
            raise ValueError(f"cpu_budget must be a share of one core in (0, 1], got {cpu_budget!r}")
        unreadable = [c.name for c in channels if c.read is None and c.load is None]
        if unreadable:
            raise ValueError(f"channels must have read or load, these have neither: {unreadable}")
        self.channels = list(channels)
        self.hz = float(hz)
        self.cpu_budget = float(cpu_budget)
        self.plan = Plan(self.hz)
        self._recordings = {c.name: _Recording(c, primary is None or c.name in primary)
                            for c in self.channels if c.read is not None}
        self._polled = sorted(self._recordings.values(), key=lambda r: not r.primary)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._polling = threading.Event()
        self._polling.set()
        self._thread: threading.Thread | None = None
        self._reading: tuple[_Recording, float] | None = None
        self._open: dict[str, float] = {}
        self._resumed: list[float] = []
        self.cpu_s = 0.0
        self._cpu_polled_s = 0.0  # polled_s when cpu_s was read
        self._polled_s = 0.0
        self._polling_since: float | None = None
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
        """Stop the thread; waits at most STOP_WAIT_S (a thread stuck in a hung read is left,
        a daemon, and `stuck` says why)."""
        if self._thread is not None:
            self._stop.set()
            self._polling.set()  # wake a paused thread so that it sees the stop
            self._thread.join(STOP_WAIT_S)
            self._thread = None

    def pause(self) -> None:
        """Stop polling until `resume`; readings so far are kept. Not while a window is open.

        A pause may hide whole wraps of a RAPL or hwmon counter; no window spans one, so no
        window's energy is affected."""
        if self._open:
            raise RuntimeError(f"cannot pause the sampler while windows are open: {sorted(self._open)}")
        self._polling.clear()

    def resume(self, wait: bool = True) -> None:
        """Poll again; returns once every polled channel has a reading from after the pause (for
        a counter, an update), so that a window may begin at once (or at once, `wait=False`)."""
        if self._polling.is_set():
            return
        resumed = time.perf_counter()
        self._resumed.append(resumed)
        self._polling.set()
        if wait:
            self.wait_for_coverage(resumed, [r.channel for r in self._polled], polled_wait_s=RESUME_WAIT_S)

    @property
    def paused(self) -> bool:
        return not self._polling.is_set()

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        clock, cpu_clock = time.perf_counter, time.thread_time
        cpu_start = interval_cpu = cpu_clock()
        ticks = polls = 0
        due = replan_at = self._polling_since = clock()
        # time.sleep, not Event.wait: it costs half the CPU per wake-up; a stop is seen within WAKE_CHECK_S.
        while not self._stop.is_set():
            if not self._polling.is_set():
                self._polled_s += clock() - self._polling_since
                self._polling_since = None
                self._polling.wait()
                due = self._polling_since = clock()
                replan_at = due + REPLAN_S  # the plan before the pause holds until there is a second to measure
                interval_cpu, ticks = cpu_clock(), 0  # waking from a pause is not a poll's cost
                for recording in self._polled:
                    recording.interval = [0, 0.0, 0.0]
                continue
            self._poll([r for r in self._polled if polls % r.every == 0])
            polls += 1
            ticks += 1
            now = clock()
            if now >= replan_at:
                cpu = cpu_clock()
                self.cpu_s, self._cpu_polled_s = cpu - cpu_start, self.polled_s
                # The first plan, right after the first poll, knows the reads' costs; the loop's
                # own is measured from the next one on (the first poll's includes starting up).
                self._replan(cpu - interval_cpu if polls > 1 else None, ticks)
                interval_cpu, ticks, replan_at = cpu, 0, now + REPLAN_S
            due += 1.0 / self.plan.hz
            if due < now:  # fell behind (e.g. the GIL was busy): keep the rate, drop the backlog
                due = now
            while (delay := due - clock()) > 0 and not self._stop.is_set():
                time.sleep(min(delay, WAKE_CHECK_S))
        self._polled_s += clock() - self._polling_since
        self._polling_since = None
        self.cpu_s, self._cpu_polled_s = cpu_clock() - cpu_start, self._polled_s

    def _replan(self, interval_cpu_s: float | None, ticks: int) -> None:
        """A new plan from the costs since the last: each channel's reads, and the loop's own CPU
        per wake-up (what the thread spent beyond its reads; not counted when None)."""
        reads_cpu = 0.0
        for recording in self._polled:
            reads, cpu_s, wall_s = recording.interval
            if reads:
                reads_cpu += cpu_s
                recording.load = read_load(cpu_s / reads, wall_s / reads, self.cpu_budget)
            recording.interval = [0, 0.0, 0.0]
        tick_cpu = 0.0 if interval_cpu_s is None else max(interval_cpu_s - reads_cpu, 0.0) / max(ticks, 1)
        tick_load = tick_cpu / self.cpu_budget
        live = [r for r in self._polled if r.dead is None]
        secondaries = [r for r in live if not r.primary]
        self.plan = plan_rates(self.hz, tick_load, sum(r.load for r in live if r.primary),
                               sum(r.load for r in secondaries))
        for recording, every in zip(secondaries, share_secondaries(self.plan, [r.load for r in secondaries])):
            recording.every = every

    def poll_once(self) -> None:
        """Read every live polled channel once, whatever the plan (tests call it)."""
        self._poll(self._polled)

    def _poll(self, recordings: list[_Recording]) -> None:
        """Read each live channel of `recordings` once, stamping it with the midpoint of its read.

        Kept lean: at 100 Hz every statement here costs CPU a hundred times a second.
        """
        clock, cpu_clock = time.perf_counter, time.thread_time
        for recording in recordings:
            if recording.dead is not None:
                continue
            cpu_before = cpu_clock()
            before = clock()
            self._reading = (recording, before)
            try:
                value = float(recording.read())
                fault = None
            except Exception as err:  # noqa: BLE001 - a sensor bug must not kill the sampler thread
                fault = err if isinstance(err, SensorFault) else SensorFault(f"unexpected error: {err!r}")
            after = clock()
            self._reading = None
            recording.cost(cpu_clock() - cpu_before, after - before)
            with self._lock:
                if fault is not None:
                    self._fault(recording, after, fault)
                    continue
                if recording.is_counter and recording.values and value < recording.values[-1]:
                    self._fault(recording, after, SensorFault(
                        f"counter went backwards ({recording.values[-1]:.3f} J -> {value:.3f} J)"))
                recording.timestamps.append((before + after) / 2)
                recording.values.append(value)
                recording.durations.append(after - before)

    def _fault(self, recording: _Recording, now: float, fault: SensorFault) -> None:
        """Note a failed or implausible reading: the channel dies (permanent) or gets a fault interval.

        The caller holds the lock."""
        last_time = recording.timestamps[-1] if recording.timestamps else now
        reason = f"{recording.channel.name}: {fault.reason}"
        if fault.permanent:
            recording.dead = (last_time, reason)
        else:
            recording.faults.append((last_time, now, reason))

    def stuck(self) -> str | None:
        """Why the thread polls nothing: a read that has not returned for HUNG_READ_S, or None."""
        reading = self._reading
        if reading is None:
            return None
        recording, since = reading
        waited = time.perf_counter() - since
        if waited < HUNG_READ_S:
            return None
        return (f"{recording.channel.name}: a read has not returned for {waited:.1f} s (the device may be lost "
                "or hung); no channel is polled since")

    @property
    def polled_s(self) -> float:
        """Seconds the thread has spent polling (not paused) so far."""
        since = self._polling_since
        return self._polled_s + (0.0 if since is None else time.perf_counter() - since)

    def stats(self) -> dict:
        """What the thread did: its plan, its CPU, and per polled channel its rate and read costs.
        The CPU (`cpu_s` over `cpu_polled_s` of polling) is as of its last plan (made every
        REPLAN_S) or its end."""
        polled_s = self.polled_s
        channels = {}
        for recording in self._polled:
            reads = recording.reads
            channels[recording.channel.name] = {
                "role": "primary" if recording.primary else "secondary", "reads": reads,
                "plan_hz": self.plan.hz / recording.every, "poll_hz": reads / polled_s if polled_s > 0 else None,
                "read_cpu_s": recording.cpu_s / reads if reads else None,
                "read_s_mean": recording.wall_s / reads if reads else None,
                "read_s_max": recording.longest_s if reads else None}
        return {"hz": self.hz, "cpu_budget_pct": 100 * self.cpu_budget, "plan_hz": self.plan.hz, "polled_s": polled_s,
                "cpu_s": self.cpu_s, "cpu_polled_s": self._cpu_polled_s,
                "cpu_pct": 100 * self.cpu_s / self._cpu_polled_s if self._cpu_polled_s > 0 else None,
                "channels": channels, "stuck": self.stuck()}

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
                         list(recording.faults), recording.dead, np.array(recording.durations[first:]))

    def update_period_s(self, channel: Channel, since_s: float = -math.inf) -> float | None:
        """The channel's update period as its readings since `since_s` show it (`update_period_s`);
        None where they are too few or cannot be read."""
        try:
            return update_period_s(self.trace(channel, since_s), channel.is_counter)
        except (OSError, ValueError):
            return None

    def fault_reasons(self, channel: Channel) -> list[str]:
        """Why readings of a polled channel failed so far, its death (or hung read) last (none for
        a loaded channel). Unlike `trace`, copies no readings: the run file asks after every benchmark."""
        recording = self._recordings.get(channel.name)
        if recording is None:
            return []
        stuck = self.stuck()
        with self._lock:
            reasons = [reason for _, _, reason in recording.faults] + ([recording.dead[1]] if recording.dead else [])
        if stuck is not None and self._reading is not None and self._reading[0] is recording:
            reasons.append(stuck)
        return reasons

    def _covered(self, channel: Channel, end_s: float) -> bool:
        """Whether the readings already reach past `end_s` (or never will)."""
        if channel.load is not None:
            try:
                times, _ = channel.load()
            except (OSError, ValueError):
                return True
            return len(times) == 0 or times[-1] >= end_s
        recording = self._recordings[channel.name]
        if self.stuck() is not None:
            return True
        with self._lock:
            if recording.dead is not None:
                return True
            after = bisect.bisect_right(recording.timestamps, end_s)
            later = recording.values[after:]
        if not channel.is_counter:
            return len(later) > 0
        return any(b != a for a, b in zip(later, later[1:]))

    def _poll_interval_s(self, channel: Channel) -> float:
        """How long apart the current plan reads a polled channel."""
        return self._recordings[channel.name].every / self.plan.hz

    def wait_for_coverage(self, end_s: float, channels: list[Channel] | None = None,
                          polled_wait_s: float = POLLED_WAIT_S) -> None:
        """Wait (bounded) until every channel (of `channels`, default all) has a reading that
        closes a window ending at `end_s`; a polled channel gets `polled_wait_s` beyond two of
        its poll intervals under the current plan."""
        for channel in self.channels if channels is None else channels:
            if channel.load is not None:
                wait = REPLAY_WAIT_S
            else:
                wait = polled_wait_s + 2 * self._poll_interval_s(channel)
            limit = time.perf_counter() + wait
            if channel.read is not None and self._thread is None:
                continue  # nobody is polling: waiting would not help
            while not self._covered(channel, end_s) and time.perf_counter() < limit:
                time.sleep(0.01)

    def evaluate(self, name: str, start_s: float, end_s: float, call_s: float | None = None) -> WindowResult:
        """Every channel's energy over [start_s, end_s] from the readings so far (`call_s`: see
        `measure_channel`)."""
        # Polled readings from before the last pause must not enter the integral: interpolating a
        # counter across a pause would spread the unseen gap's energy over the window's edge.
        resumed = max((r for r in self._resumed if r <= start_s), default=-math.inf)
        results = {}
        for channel in self.channels:
            try:
                lookback = LOOKBACK_S + (2 * self._poll_interval_s(channel) if channel.read is not None else 0.0)
                trace = self.trace(channel, since_s=start_s - lookback)
            except (OSError, ValueError) as err:
                results[channel.name] = invalid(channel, end_s - start_s, f"{channel.name}: {err}")
                continue
            # Readings across a fault outside the window (e.g. a counter reset) must not enter its integral.
            ended = [fault_end for _, fault_end, _ in trace.faults if fault_end < start_s]
            begun = [fault_start for fault_start, _, _ in trace.faults if fault_start > end_s]
            since = max(ended + ([resumed] if channel.read is not None else []), default=-math.inf)
            keep = (trace.timestamps >= since) & (trace.timestamps <= min(begun, default=math.inf))
            trace = Trace(trace.timestamps[keep], trace.values[keep], trace.faults, trace.dead,
                          None if trace.durations is None else trace.durations[keep])
            result = measure_channel(channel, trace, start_s, end_s, call_s)
            stuck = self.stuck() if channel.read is not None and trace.dead is None else None
            results[channel.name] = result if result.valid or stuck is None else \
                invalid(channel, end_s - start_s, stuck)
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
