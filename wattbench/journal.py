"""The run file as a journal: rewritten atomically after every benchmark, so nothing measured is lost.

While a run goes on, its run file always holds every benchmark completed so far and says
`complete: false`; a crash, Ctrl-C or SIGTERM leaves a valid file that `--resume` continues.
A run is complete only when every benchmark it planned is recorded: measured, failed or skipped.
Each session of a run (the first, then each resume) is one segment: when it started, when it
ended and how.

Resuming is owned here, from `wattbench run --resume` to the last deselected benchmark:
`resume_settings` (what the command continues with), `RunJournal.check_resumable` (the session's
settings against the run's), `RunJournal.progress` (what the session carries on from) and
`RunJournal.plan` (the benchmarks still to run).
"""

from __future__ import annotations

from dataclasses import asdict
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


def resume_settings(path: Path, device: str | None, preset: str | None, keyword: str | None) -> dict:
    """The device, preset, seed and -k expression ("keyword") a `wattbench run --resume` continues with: the run
    file's. A complete run, or a flag that contradicts the run file, is refused."""
    block = load_run(path)["wattbench"]
    if block.get("complete"):
        raise UsageError(f"{path}: this run is complete; there is nothing to resume")
    for name, given in (("--device", device), ("--preset", preset), ("-k", keyword)):
        recorded = block.get({"-k": "select"}.get(name, name.lstrip("-"))) or None
        if given is not None and given != recorded:
            was = f"with {name} {recorded}" if recorded else f"without {name}"
            raise UsageError(f"{path}: was run {was}, not {name} {given}: resume it with the same selection")
    return {"device": block.get("device"), "preset": block.get("preset"), "seed": block.get("seed", 0),
            "keyword": block.get("select") or None}


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

    def check_resumable(self, config) -> None:
        """Refuse to resume with other settings than the run's (a RunConfig): its records would not be one run's."""
        expected = {"preset": ("--wattbench-preset", config.preset),
                    "device": ("--wattbench-device", config.device.spec),
                    "seed": ("--wattbench-seed", config.seed), "select": ("-k", config.keyword),
                    "timing_plan": ("the timing options", asdict(config.plan))}
        for name, (option, value) in expected.items():
            recorded = self.previous_block.get(name)
            if name in self.previous_block and recorded != value:
                raise UsageError(f"{self.path}: this run was made with {option} {recorded!r}, not {value!r}: "
                                 f"resume it with the same settings")

    def progress(self) -> dict:
        """What a resumed session carries on from (RunState's fields): the run's first start, its segments, its
        failures and skips, and its power block (kept when this session measures nothing)."""
        block = self.previous_block
        progress = {"earlier_segments": earlier_segments(block), "failed": list(block.get("failed", [])),
                    "skipped": list(block.get("skipped", [])), "power_before": block.get("power")}
        return {**progress, "started_utc": block["started_utc"]} if block.get("started_utc") else progress

    def plan(self, selected: list[str]) -> tuple[list[str], set[str]]:
        """The run's plan when this session selects `selected`, and the cases already recorded (to deselect).

        A resumed session must select what the run planned, less what it has recorded."""
        done = self.completed_cases
        before = self.previous_block.get("planned")
        if before is not None and set(before) != set(selected) | done:
            raise UsageError(f"{self.path}: this run planned {len(before)} benchmarks, this session selects "
                             f"{len(set(selected) | done)}: resume it with the same selection and wattbench version")
        return list(dict.fromkeys([*(before or sorted(done)), *selected])), done

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
