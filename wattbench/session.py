"""One pytest session of a run: its state (`RunState`), its signals (`Interrupts`) and the run block it writes.

The settings are the session's RunConfig (wattbench.config), made once before the session starts; RunState adds
what the session learns as it goes (the plan, failures and skips, threads, the power monitor, the journal).
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from wattbench import schema, timing
from wattbench.config import RunConfig
from wattbench.journal import RunJournal, recorded_cases
from wattbench.power import PowerMonitor
from wattbench.signals import Handlers, SignalInterrupt


class Interrupts(Handlers):
    """While a session measures, SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (pytest then ends the
    session and the run file says so), and which signal came is remembered for the run file. While the
    session writes its results (`deferred`), a signal is only noted, so that no final write is cut short.
    A signal the process ignores (nohup, a background job) stays ignored."""

    def __init__(self):
        self.received: str | None = None
        self.pending = False
        self._deferring = False
        super().__init__(self._handle)

    def _handle(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name
        if self._deferring:
            self.pending = True
            return
        raise SignalInterrupt(signum)

    @contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def load_average() -> list[float] | None:
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except (AttributeError, OSError):
        return None


@dataclass
class RunState:
    """One pytest session of a run: its config and what it has done so far, kept in pytest's config stash."""

    config: RunConfig
    started_utc: str = field(default_factory=_now)
    #: This session's start (a resumed run keeps its first start in `started_utc`).
    segment_started_utc: str = field(default_factory=_now)
    earlier_segments: list = field(default_factory=list)
    #: Case ids the run is to record, from collection on (on resume: those already recorded too).
    planned: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    exit_status: int | None = None
    interrupts: Interrupts = field(default_factory=Interrupts)
    load_start: list | None = field(default_factory=load_average)
    #: torch's thread settings (wattbench.threads), None until the session measures.
    threads: dict | None = None
    power: PowerMonitor | None = None
    #: A resumed run's power block, kept when this session measures nothing.
    power_before: dict | None = None
    journal: RunJournal | None = None
    journal_header: dict | None = None
    output_json: dict | None = None
    _clock: Callable[[], float] | None = None

    @classmethod
    def start(cls, config: RunConfig) -> RunState:
        """The session of `config`: its journal opened and, on resume, checked against the run and continued
        from it (a UsageError when it cannot be)."""
        config.set_up_triton()
        if config.model:
            from wattbench.models.choice import resolve_model
            from wattbench.workloads import use_model

            use_model(resolve_model(config.model))
        journal = RunJournal(Path(config.run_file), config.resume) if config.run_file else None
        if not (journal and journal.previous_block):
            return cls(config=config, journal=journal)
        journal.check_resumable(config)
        return cls(config=config, journal=journal, **journal.progress())

    def clock(self) -> Callable[[], float]:
        """The device clock, made on first use: pytest runs without wattbench benchmarks never touch CUDA."""
        if self._clock is None:
            self._clock = timing.clock_for(self.config.device)
        return self._clock

    def segment(self, missing: list[str], final: bool) -> dict:
        """This session as one segment of the run: when, and how it ended ("running" until it has)."""
        segment = {"started_utc": self.segment_started_utc, "ended_utc": _now()}
        if not final:
            return {**segment, "end": "running"}
        if self.exit_status == pytest.ExitCode.INTERRUPTED:
            return {**segment, "end": "interrupted", "signal": self.interrupts.received}
        if missing:
            return {**segment, "end": "stopped", "pytest_exit_status": self.exit_status}
        return {**segment, "end": "finished"}

    def run_block(self, benchmarks: list[dict], final: bool) -> dict:
        """The run file's `wattbench` block: how, where and how completely this run was measured.

        `complete` only when every planned benchmark is recorded (measured, failed or skipped) and the
        session has ended: a run cut short, or resumed with a narrower selection, can never claim it."""
        config = self.config
        recorded = recorded_cases(benchmarks, self.failed, self.skipped)
        missing = [case for case in self.planned if case not in recorded]
        return {
            "format": schema.RUN_FORMAT.current,
            "preset": config.preset,
            "device": config.device.spec,
            "device_name": config.device.name,
            "seed": config.seed,
            "select": config.keyword,
            "timing_plan": asdict(config.plan),
            "started_utc": self.started_utc,
            "ended_utc": _now(),
            "complete": final and not missing,
            "planned": self.planned,
            "segments": [*self.earlier_segments, self.segment(missing, final)],
            "failed": self.failed,
            "skipped": self.skipped,
            "threads": self.threads,
            "load_average": {"start": self.load_start, "end": load_average()},
            "power": self.power.run_info() if self.power else self.power_before or {"reason": "no benchmark ran"},
        }
