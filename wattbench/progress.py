"""One line per benchmark while a run goes on, with the time left.

The time left starts from the run's plan (wattbench.estimate) and is corrected by what has been measured so far:
the ratio of the wall time the finished benchmarks took to what the plan gave them, applied to the plan of the
rest (`remaining_s`). A run on a GPU the spec table does not know, or whose plan cannot be made, plans every
benchmark alike, so the ratio becomes the mean time per benchmark so far. Where the output is a terminal, each
line starts with a progress bar; in a CI log (not a TTY) the lines are plain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from wattbench.estimate import duration

BAR_WIDTH = 20


def remaining_s(estimated_done: float, measured_done: float, estimated_left: float) -> float:
    """The plan of the rest, scaled by how the finished part compared with its plan (as planned before any)."""
    if estimated_done <= 0 or measured_done <= 0:
        return estimated_left
    return estimated_left * measured_done / estimated_done


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def figures(info: dict | None) -> str:
    """A benchmark's time and energy per call, from its record's fields."""
    if not info:
        return ""
    parts = []
    if info.get("median_s") is not None:
        parts.append(f"{info['median_s'] * 1e3:.3g} ms/call")
    energy = info.get("energy") or {}
    if energy.get("joules_per_call") is not None:
        parts.append(f"{energy['joules_per_call']:.3g} J/call")
    elif energy.get("reason"):
        parts.append("no energy")
    return ", ".join(parts)


@dataclass
class Progress:
    """The planned benchmarks (case id -> estimated seconds, in run order) and what has finished."""

    planned: dict[str, float]
    write: Callable[[str], None]
    interactive: bool = False
    clock: Callable[[], float] = time.monotonic
    #: Seconds the plan gives to what runs once, before the first benchmark's windows (the idle baseline).
    before_first_s: float = 0.0
    finished: list[str] = field(default_factory=list)
    #: How the benchmark under way has gone so far: passed, failed or skipped.
    outcome: str = "passed"
    estimated_done: float = 0.0
    measured_done: float = 0.0
    _started: float | None = None
    _info: dict | None = None

    @classmethod
    def for_run(cls, config, case_ids: list[str], write: Callable[[str], None], interactive: bool) -> Progress:
        """The progress of a run of `config` (a RunConfig) over `case_ids`, planned by wattbench.estimate."""
        from wattbench import estimate
        from wattbench.errors import UsageError
        from wattbench.workloads import case_by_id

        try:
            machine = estimate.machine_for(config.device, config.power, config.specs)
            plan = estimate.estimate([case_by_id(case_id) for case_id in case_ids], machine, config.plan,
                                     config.power, eager_decode=config.eager_decode)
        except (UsageError, KeyError):
            return cls(dict.fromkeys(case_ids, 1.0), write, interactive)
        return cls({b.case_id: b.total_s for b in plan.benchmarks}, write, interactive,
                   before_first_s=plan.parts["idle baseline"])

    def start(self) -> None:
        self._started, self._info, self.outcome = self.clock(), None, "passed"

    def measured(self, info: dict) -> None:
        self._info = info

    def remaining_s(self) -> float:
        left = sum(seconds for case_id, seconds in self.planned.items() if case_id not in self.finished)
        return remaining_s(self.estimated_done, self.measured_done, left)

    def finish(self, case_id: str) -> None:
        """Note a benchmark's end and write its line."""
        if case_id not in self.planned or case_id in self.finished:
            return
        took = self.clock() - self._started if self._started is not None else 0.0
        self.estimated_done += self.planned[case_id] + (self.before_first_s if not self.finished else 0.0)
        self.measured_done += took
        self.finished.append(case_id)
        done, total = len(self.finished), len(self.planned)
        what = figures(self._info) if self.outcome == "passed" else self.outcome
        left = "done" if done == total else f"~{duration(self.remaining_s())} left"
        head = f"{bar(done, total)} " if self.interactive else ""
        self.write(f"{head}[{done}/{total}] {case_id}: {duration(took)}"
                   + (f", {what}" if what else "") + f"; {left}")
        self._started = None
