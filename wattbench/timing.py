"""How long one call of a workload takes on its device: clocks, cache flush, repetition count.

One timing implementation serves the suites and the self-checks: a device clock
read twice per round (pytest-benchmark's `pedantic` loop in the suites, `time_rounds` in
`median_time` for the self-checks), a setup that flushes caches before each round outside the timed span, and the
callable that is timed (the step itself, or a replay of its CUDA graph).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from wattbench.device import Device


class HostClock:
    """Host monotonic time in seconds, from the nanosecond counter (the CPU's device clock)."""

    __name__ = "perf_counter_clock"

    def __call__(self) -> float:
        return time.perf_counter_ns() * 1e-9

    def reset(self) -> None:
        """Nothing to forget: every reading stands alone."""


@dataclass(frozen=True)
class TimingPlan:
    """How a benchmark is timed: minimum measured time and bounds on the number of rounds."""

    min_time_s: float = 0.5
    min_rounds: int = 5
    max_rounds: int = 1000
    warmup_rounds: int = 2
    flush_l2: bool = True
    cuda_graph: bool = False

    def rounds_for(self, call_s: float) -> int:
        """Rounds needed for the timed rounds to span `min_time_s`, within the bounds."""
        wanted = math.ceil(self.min_time_s / max(call_s, 1e-9))
        return max(self.min_rounds, min(self.max_rounds, wanted))


def clock_for(device: Device) -> HostClock | Any:
    """The device's clock: CUDA event pairs on a GPU, the host's counter elsewhere."""
    if device.type == "cuda":
        from wattbench.cuda import EventClock

        return EventClock(device.index)
    return HostClock()


def round_setup(device: Device, plan: TimingPlan) -> Callable[[], None] | None:
    """What runs before each timed round, outside the timed span."""
    if device.type == "cuda" and plan.flush_l2:
        from wattbench.cuda import L2Flush

        return L2Flush.for_gpu(device.index)
    return None


@dataclass(frozen=True)
class Target:
    """The callable whose rounds are timed and whose energy is measured, and how it is timed.

    `method` is "perf_counter", "cuda_event" or "cuda_graph" (a replay of the step's captured
    graph); `graph_note` says why a CUDA graph was asked for but not used.
    """

    call: Callable[[], Any]
    method: str
    graph_note: str | None = None


def timed_target(step: Callable[[], Any], device: Device, plan: TimingPlan,
                 not_capturable: str | None = None) -> Target:
    """The step itself, or (in graph mode, for a step that can be captured) its graph's replay.

    `not_capturable` is the workload's reason why its step cannot be captured, if any: such
    steps run eagerly in graph mode, and the record says so."""
    if device.type != "cuda":
        return Target(step, "perf_counter")
    if not plan.cuda_graph:
        return Target(step, "cuda_event")
    if not_capturable:
        return Target(step, "cuda_event", f"CUDA graph not used: {not_capturable}")
    from wattbench.cuda import capture_graph

    return Target(capture_graph(step, device.index), "cuda_graph")


def time_rounds(call: Callable[[], Any], setup: Callable[[], None] | None, clock: Callable[[], float],
                rounds: int) -> list[float]:
    """Seconds of each of `rounds` calls, each after `setup`, read as pytest-benchmark's
    `pedantic` reads them (the clock just before and just after the call)."""
    samples = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        begin = clock()
        call()
        samples.append(clock() - begin)
    return samples


def time_once(step: Callable[[], Any], device: Device) -> float:
    """Wall time of one synchronised call: a first estimate to plan the rounds."""
    device.synchronize()
    start = time.perf_counter()
    step()
    device.synchronize()
    return time.perf_counter() - start


def median_time(step: Callable[[], Any], device: Device, plan: TimingPlan) -> float:
    """Median seconds per call, timed as the harness times a benchmark: the same callable (the
    step or its graph's replay), warm-up, planned rounds, flush and device clock (the self-checks' timing)."""
    target = timed_target(step, device, plan)
    for _ in range(plan.warmup_rounds):
        target.call()
    rounds = plan.rounds_for(time_once(target.call, device))
    samples = time_rounds(target.call, round_setup(device, plan), clock_for(device), rounds)
    return statistics.median(samples)
