"""Run files: pytest-benchmark JSON with wattbench's fields; written atomically, read with checks.

A run file is exactly what `pytest --benchmark-json` writes (so `pytest-benchmark compare`
reads it), plus a top-level `wattbench` block and wattbench fields in each record's
`extra_info`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.record import EnergyRecord, records

NOT_MEASURED = "not measured"


def check_writable(directory: Path) -> None:
    """Create `directory` if need be and prove a file can be written there, before anything is measured."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".wattbench-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output folder {str(directory)!r} is not writable: {exc.strerror or exc}") from None


def check_output_file(path: Path, option: str) -> None:
    """A file a run will write (`option` names where it was given): refused now, not after the benchmarks."""
    if path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a directory, not a file")
    check_writable(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file.

    The file gets the user's umask like any file they create (mkstemp would leave it readable by its owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_run(path: Path) -> dict:
    """A run file's contents, checked against its format (wattbench.schema); else a one-line UsageError."""
    data = schema.read_json(path)
    schema.check_run(data, path)
    return data


def run_environment(run: dict) -> dict:
    """The run's recorded environment (`machine_info.wattbench`); {} when the run file lacks it."""
    return (run.get("machine_info") or {}).get("wattbench") or {}


def format_seconds(seconds: float, digits: str = ".3g") -> str:
    """A duration in the largest of s, ms, us that it reaches, else ns: one ladder for every table."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:{digits}} {unit}"
    return f"{seconds / 1e-9:{digits}} ns"


def aligned_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """Header, dashes and rows as text columns, each as wide as its widest cell: one layout for every table.

    Cells must be text: a caller whose cells may not be converts them itself (None is an error, not "None").
    """
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, ["-" * width for width in widths], *rows]]


def _fmt_time(seconds: float | None) -> str:
    return "-" if seconds is None else format_seconds(seconds)


def _fmt_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _energy_cells(energy: EnergyRecord, unit: str) -> list[str]:
    if energy.joules_per_unit is None:
        return [NOT_MEASURED] * 3
    return [f"{energy.joules_per_unit:.4g} J/{unit.rstrip('s')}", f"{energy.units_per_joule:.4g} {unit}/J",
            f"{energy.avg_power_w:.4g} W"]


def disagreeing_benchmarks(run: dict) -> list[tuple[str, list[str]]]:
    """(case, how) for each benchmark whose own measurements disagree (wattbench.measure.disagreements)."""
    found = []
    for bench, record in zip(run["benchmarks"], records(run)):
        how = (record.timing or {}).get("disagreements")
        if how:
            found.append(((bench.get("params") or {}).get("wattbench_case") or bench.get("name", "?"), how))
    return found


def inter_token_latency(record) -> dict | None:
    """A record's ITL in ms (p50, p90, p99 of wattbench.metrics.latency_percentiles, and a mean for llm.decode's
    steps; llm.generate's are its host-synchronised token gaps), or None where it has none."""
    itl = record.extra.get("itl_ms")
    return itl if isinstance(itl, dict) else None


def _itl_cell(record) -> str:
    itl = inter_token_latency(record)
    return "-" if itl is None else f"{format_seconds(itl['p50'] / 1e3)} / {format_seconds(itl['p99'] / 1e3)}"


def format_table(run: dict) -> str:
    """The summary table `wattbench run` prints: time, throughput and energy per benchmark (and, for a sweep's
    run file, the setting of each; where a record has an inter-token latency, its p50 and p99)."""
    found = records(run)
    settings = len({record.setting_id for record in found}) > 1
    itl = any(inter_token_latency(record) for record in found)
    header = ["workload", "style", "impl", "precision", "size", *(["setting"] if settings else []), "median",
              "throughput", *(["ITL p50 / p99"] if itl else []), "energy/unit", "work/J", "avg power"]
    rows = []
    interpreted_seen = False
    for bench, record in zip(run["benchmarks"], found):
        impl = record.impl or "?"
        if record.interpreted:
            impl += "*"
            interpreted_seen = True
        throughput = record.units_per_s
        unit = record.unit or ""
        rows.append([record.workload or bench.get("name", "?"), record.style or "?", impl,
                     record.precision or "?", record.size or "?", *([record.setting_id] if settings else []),
                     _fmt_time(record.median_s),
                     f"{_fmt_number(throughput)} {unit}/s" if throughput else "-",
                     *([_itl_cell(record)] if itl else []),
                     *_energy_cells(record.energy_or_none, record.unit or "unit")])
    lines = aligned_lines(header, [[str(cell) for cell in row] for row in rows])
    lines += _footnotes(run, interpreted_seen, itl)
    return "\n".join(lines)


def _footnotes(run: dict, interpreted_seen: bool, itl_seen: bool) -> list[str]:
    notes = []
    if interpreted_seen:
        notes.append("* interpreted: Triton ran through its interpreter on the CPU; correct results, "
                     "but the timing is meaningless and must not be compared")
    if itl_seen:
        notes.append("ITL p50 / p99: time between a sequence's consecutive tokens; llm.decode: every decode step of "
                     "the timed rounds (one token for each sequence of the batch; CUDA events between steps on a "
                     "GPU, the host clock on a CPU: the record's itl_method), llm.generate: host-synchronised tokens")
    found = records(run)
    energies = [record.energy_or_none for record in found]
    reasons = {energy.reason for energy in energies if energy.joules_per_unit is None}
    for reason in sorted(r for r in reasons if r):
        notes.append(f"energy: {NOT_MEASURED} — {reason}")
    if any(energy.joules_per_unit is not None for energy in energies):
        notes.append("median and throughput: device time of one call, caches flushed before each round; energy/unit, "
                     "work/J and avg power: the same call run back to back in the energy windows (their own "
                     "throughput is the record's energy.window_units_per_s)")
    graph_notes = [(record.timing or {}).get("graph_note") for record in found]
    for note in sorted(set(graph_notes) - {None}):
        eager = graph_notes.count(note)
        notes.append(f"{eager} benchmark(s) ran eagerly in graph mode — {note.removeprefix('CUDA graph not used: ')}")
    block = run["wattbench"]
    for skipped in block.get("skipped", []):
        notes.append(f"skipped {skipped['case']}: {skipped['reason']}")
    for failed in block.get("failed", []):
        notes.append(f"FAILED {failed['case']}: {failed['error']}")
    return notes
