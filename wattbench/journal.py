"""The run file as a journal: rewritten atomically after every benchmark, so nothing measured is lost.

While a run goes on, its run file always holds every benchmark completed so far and says
`complete: false`; a crash, Ctrl-C or SIGTERM leaves a valid file that `--resume` continues.
A run is complete only when every benchmark it planned is recorded: measured, failed or skipped.
Each session of a run (the first, then each resume) is one segment: when it started, when it
ended and how.
"""

from __future__ import annotations

from pathlib import Path

from wattbench.errors import UsageError
from wattbench.results import load_run, write_json_atomic

#: What a segment that still says "running" when the run is resumed turns into: its process ended
#: without writing how (SIGKILL, the out-of-memory killer, a power cut, a crash of the interpreter).
DIED = {"end": "died", "note": "the process ended without recording how (killed, out of memory, or crashed)"}


def case_of(benchmark: dict) -> str | None:
    """The registry case id a benchmark record was made from."""
    return (benchmark.get("params") or {}).get("wattbench_case")


def recorded_cases(benchmarks: list[dict], failed: list[dict], skipped: list[dict]) -> set[str]:
    """The cases a run file accounts for: measured, failed or skipped."""
    return ({case_of(b) for b in benchmarks} | {f["case"] for f in failed} | {s["case"] for s in skipped}) - {None}


def earlier_segments(block: dict) -> list[dict]:
    """The segments of a run file being resumed; a file from before segments were recorded has one, undescribed."""
    if not block:
        return []
    segments = block.get("segments")
    if segments is None:
        return [{"started_utc": block.get("started_utc"), "ended_utc": block.get("ended_utc"), "end": "unrecorded"}]
    return [{**segment, **DIED} if segment.get("end") == "running" else segment for segment in segments]


class RunJournal:
    """The run file of one session: the records of the sessions before it (on resume) and its own."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        previous = load_run(path) if resume else {"benchmarks": [], "wattbench": {}}
        self.previous: list[dict] = previous["benchmarks"]
        #: The run block as the last session left it ({} for a new run).
        self.previous_block: dict = previous["wattbench"]
        self.added: list[dict] = []

    @property
    def completed_cases(self) -> set[str]:
        block = self.previous_block
        return recorded_cases(self.previous, block.get("failed", []), block.get("skipped", []))

    def check_resumable(self, expected: dict[str, tuple[str, object]]) -> None:
        """Refuse to resume with other settings than the run's: its records would not be one run's.

        `expected` maps a run block field to (the option that sets it, this session's value)."""
        for name, (option, value) in expected.items():
            recorded = self.previous_block.get(name)
            if name in self.previous_block and recorded != value:
                raise UsageError(f"{self.path}: this run was made with {option} {recorded!r}, not {value!r}: "
                                 f"resume it with the same settings")

    def add(self, benchmark: dict) -> None:
        self.added.append(benchmark)

    def benchmarks(self) -> list[dict]:
        """Every record so far: the earlier sessions' and this one's."""
        return self.previous + self.added

    def merged(self, benchmarks: list[dict]) -> list[dict]:
        """This session's records as pytest-benchmark reports them at the end, after the earlier sessions'."""
        return self.previous + benchmarks

    def write(self, data: dict) -> None:
        write_json_atomic(self.path, data)
