"""How long one call of a workload takes on its device: clocks, cache flush, repetition count.

The timing loop itself is pytest-benchmark's `pedantic`; this module gives it a device clock
as its timer (so its stats are device time) and a setup that flushes caches between rounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from wattbench.device import Device


def perf_counter_clock() -> float:
    """Host monotonic time in seconds, from the nanosecond counter."""
    return time.perf_counter_ns() * 1e-9


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


def clock_for(device: Device) -> Callable[[], float]:
    if device.type == "cuda":
        from wattbench.cuda import EventClock

        return EventClock(device.index)
    return perf_counter_clock


def method_name(device: Device, plan: TimingPlan) -> str:
    if device.type != "cuda":
        return "perf_counter"
    return "cuda_graph" if plan.cuda_graph else "cuda_event"


def round_setup(device: Device, plan: TimingPlan) -> Callable[[], None] | None:
    """What runs before each timed round, outside the timed region."""
    if device.type == "cuda" and plan.flush_l2:
        from wattbench.cuda import L2Flush

        return L2Flush(device.index)
    return None


def timed_step(step: Callable[[], Any], device: Device, plan: TimingPlan) -> Callable[[], Any]:
    """The callable whose rounds are timed: `step` itself, or a CUDA graph replay of it."""
    if device.type == "cuda" and plan.cuda_graph:
        from wattbench.cuda import capture_graph

        return capture_graph(step, device.index)
    return step


def time_once(step: Callable[[], Any], device: Device) -> float:
    """Wall time of one synchronised call: a first estimate to plan the rounds."""
    device.synchronize()
    start = time.perf_counter()
    step()
    device.synchronize()
    return time.perf_counter() - start
