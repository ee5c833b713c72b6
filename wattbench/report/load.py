"""Run files from any number of hosts into one tidy DataFrame: one row per benchmark record; power traces.

`load_runs` collects the files it cannot use, each with why; `check_problems` refuses them unless the
user asked to skip bad files, and says which it left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wattbench.accuracy import Budget, load_budget
from wattbench.errors import UsageError
from wattbench.specs import SpecTable, load_specs
from wattbench.record import IDENTITY_FIELDS, EnergyRecord, Record, comparability
from wattbench.results import inter_token_latency, load_run, run_environment
from wattbench.schema import is_finite_number, shown

#: Identity of a benchmark across runs (record.IDENTITY_FIELDS); a list, as pandas takes column keys.
IDENTITY = list(IDENTITY_FIELDS)

#: A median's 95% half-width is about this times IQR / sqrt(n): 1.96 z, times sqrt(pi/2) (the
#: median's standard error relative to the mean's, for normal samples), over 1.349 IQRs per sigma.
MEDIAN_CI_FACTOR = 1.96 * math.sqrt(math.pi / 2) / 1.349

COLUMNS = [
    "run_file", "run_started", "host", "device", "device_name", "wattbench_version", "commit",
    "workload", "op", "style", "impl", "precision", "size", "setting", "batch", "unit", "interpreted",
    "timing_method", "rounds", "median_s", "mean_s", "stddev_s", "min_s", "max_s", "q1_s", "q3_s",
    "p90_s", "p99_s", "median_ms", "time_uncertainty_pct", "units_per_s", "flops", "bytes", "tflops",
    "gbps",
    "arithmetic_intensity", "energy_method", "energy_source", "energy_reason", "energy_measured",
    "joules_per_call", "joules_per_unit", "units_per_joule", "avg_power_w", "peak_power_w", "idle_power_w",
    "dynamic_joules_per_call", "energy_uncertainty_pct", "energy_valid_windows",
    "energy_boundary", "dynamic_joules_per_unit", "gpu_plus_host_joules_per_unit", "batch_size",
    "itl_p50_ms", "itl_p99_ms",
    "spec_name", "peak_tflops", "pct_peak_flops", "peak_gbps", "pct_peak_bw", "attainable_tflops", "pct_roofline",
    "accuracy", "top1_agreement", "kl_divergence", "reference_path", "within_budget", "accuracy_note",
]


@dataclass
class Loaded:
    """The tidy table, the run files it came from (path, contents), the files that could not be used (path, why)
    and the valid run files without a record (a run cut short before its first benchmark)."""

    frame: pd.DataFrame
    runs: list[tuple[Path, dict]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)


def _number(value) -> float:
    if not is_finite_number(value):
        return math.nan
    return float(value)


def _samples(record: Record, stats: dict) -> np.ndarray:
    """Per-round device-time samples; pytest-benchmark's own data when wattbench's are missing."""
    samples = (record.timing or {}).get("samples_s") or stats.get("data") or []
    values = np.array([_number(s) for s in samples], dtype=float)
    return values[np.isfinite(values)]


def _timing_columns(record: Record, stats: dict) -> dict:
    samples = _samples(record, stats)
    median = _number(record.median_s if record.median_s is not None else stats.get("median"))
    row = {"median_s": median, "mean_s": _number(stats.get("mean")), "stddev_s": _number(stats.get("stddev")),
           "min_s": _number(stats.get("min")), "max_s": _number(stats.get("max")),
           "q1_s": _number(stats.get("q1")), "q3_s": _number(stats.get("q3")),
           "p90_s": math.nan, "p99_s": math.nan, "time_uncertainty_pct": math.nan}
    if samples.size:
        q1, q3, p90, p99 = np.percentile(samples, [25, 75, 90, 99])
        row.update(p90_s=p90, p99_s=p99)
        if samples.size >= 2 and median > 0:
            row["time_uncertainty_pct"] = 100 * MEDIAN_CI_FACTOR * (q3 - q1) / math.sqrt(samples.size) / median
    row["median_ms"] = median * 1e3
    return row


def _boundary_columns(energy: EnergyRecord, units_per_call: float) -> dict:
    """What the energy covers, and per unit: above idle, and GPU + host where RAPL was read beside NVML."""
    boundary = energy.boundary or {}
    per_unit = (lambda joules: _number(joules) / units_per_call) if units_per_call > 0 else (lambda joules: math.nan)
    return {"energy_boundary": boundary.get("covers"),
            "dynamic_joules_per_unit": per_unit(energy.dynamic_joules_per_call) if energy.measured else math.nan,
            "gpu_plus_host_joules_per_unit": per_unit(boundary.get("gpu_plus_host_joules_per_call"))
            if energy.measured else math.nan}


def _energy_columns(energy: EnergyRecord) -> dict:
    per_call = _number(energy.joules_per_call)
    return {"energy_method": energy.method or "none", "energy_source": energy.source or "none",
            "energy_reason": energy.reason, "energy_measured": math.isfinite(per_call),
            "joules_per_call": per_call, "joules_per_unit": _number(energy.joules_per_unit),
            "units_per_joule": _number(energy.units_per_joule),
            "avg_power_w": _number(energy.avg_power_w),
            "peak_power_w": _number(energy.peak_power_w), "idle_power_w": _number(energy.idle_power_w),
            "dynamic_joules_per_call": _number(energy.dynamic_joules_per_call),
            "energy_uncertainty_pct": _number(energy.uncertainty_pct),
            "energy_valid_windows": _number(energy.valid_windows)}


def _spec_columns(specs: SpecTable, device_name: str, precision: str, tflops: float, gbps: float,
                  intensity: float) -> dict:
    """% of peak FLOP/s (the MFU for training records), % of peak bandwidth and % of the roofline."""
    spec = specs.find(device_name)
    peak = spec.peak_for(precision) if spec else None
    bandwidth = spec.memory_bandwidth_gbps if spec else None
    row = {"spec_name": spec.name if spec else None, "peak_tflops": _number(peak), "peak_gbps": _number(bandwidth)}
    row["pct_peak_flops"] = 100 * tflops / peak if peak else math.nan
    row["pct_peak_bw"] = 100 * gbps / bandwidth if bandwidth else math.nan
    attainable = _number(spec.attainable_tflops(precision, intensity)) if spec and math.isfinite(intensity) \
        else math.nan
    row["attainable_tflops"] = attainable
    row["pct_roofline"] = 100 * tflops / attainable if math.isfinite(attainable) and attainable > 0 else math.nan
    return row


def _accuracy_columns(record: Record, budget: Budget) -> dict:
    """The accuracy guard's figures and the verdict under `budget` (the report's, which may differ from the run's:
    a record the run flagged stays flagged); True for a case with no guard (a dense one)."""
    figures = {name: _number(getattr(record, name)) for name in ("accuracy", "top1_agreement", "kl_divergence")}
    why = budget.outside(figures)
    if why is None and record.within_budget is False:
        why = record.accuracy_note or "outside the run's accuracy budget"
    return {**figures, "reference_path": record.reference_path, "within_budget": why is None, "accuracy_note": why}


def record_row(path: Path, run: dict, bench: dict, specs: SpecTable, budget: Budget | None = None) -> dict:
    """One benchmark record as a flat row (the columns in COLUMNS), its accuracy verdict under `budget`
    (default: the nearest pyproject.toml's, wattbench.accuracy.load_budget)."""
    record, stats = Record.from_json(bench["extra_info"]), bench.get("stats") or {}
    block = run["wattbench"]
    env = run_environment(run)
    commit = env.get("wattbench_commit") or {}
    flops, nbytes = _number(record.flops), _number(record.bytes)
    intensity = flops / nbytes if nbytes > 0 else math.nan
    tflops, gbps = _number(record.tflops), _number(record.gbps)
    device_name = record.device_name or block.get("device_name") or "unknown device"
    precision = record.precision or "unknown"
    timing = record.timing or {}
    row = {
        "run_file": str(path), "run_started": block.get("started_utc") or run.get("datetime"),
        "host": env.get("host") or (run.get("machine_info") or {}).get("node") or "unknown host",
        "device": record.device or block.get("device"), "device_name": device_name,
        "wattbench_version": env.get("wattbench_version"),
        "commit": commit["id"][:12] + ("+dirty" if commit.get("dirty") else "") if commit.get("id") else None,
        "workload": record.workload or bench.get("group") or bench.get("name"),
        "op": record.op, "style": record.style, "impl": record.impl, "precision": precision,
        "size": record.size, "setting": record.setting_id, "batch": _number(record.units_per_call),
        "unit": record.unit,
        "interpreted": bool(record.interpreted),
        "timing_method": timing.get("method"),
        "rounds": _number(timing.get("rounds", stats.get("rounds"))),
        "units_per_s": _number(record.units_per_s), "flops": flops, "bytes": nbytes,
        "tflops": tflops, "gbps": gbps, "arithmetic_intensity": intensity,
    }
    row.update(_timing_columns(record, stats))
    row.update(_energy_columns(record.energy_or_none))
    row.update(_boundary_columns(record.energy_or_none, _number(record.units_per_call)))
    shape = record.shape or {}
    row["batch_size"] = _number(shape.get("B", shape.get("M")))  # a model's batch, a GEMM's rows
    itl = inter_token_latency(record) or {}
    row.update(itl_p50_ms=_number(itl.get("p50")), itl_p99_ms=_number(itl.get("p99")))
    row.update(_spec_columns(specs, device_name, precision, tflops, gbps, intensity))
    row.update(_accuracy_columns(record, budget or load_budget()))
    return row


def load_runs(paths: list[Path], specs: SpecTable | None = None, budget: Budget | None = None) -> Loaded:
    """Every readable record of `paths` in one DataFrame; unusable files in `problems`, those without records
    in `empty`. Accuracy is judged by `budget`, by default the nearest pyproject.toml's (wattbench.accuracy)."""
    if not isinstance(paths, (list, tuple)):
        raise TypeError(f"paths must be a list of run file paths, got {type(paths).__name__}")
    if not paths:
        raise UsageError("no run files given")
    specs = specs or load_specs()
    budget = budget or load_budget()
    rows, loaded = [], Loaded(pd.DataFrame(columns=COLUMNS))
    for path in map(Path, paths):
        try:
            run = load_run(path)
        except UsageError as exc:
            loaded.problems.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        if not run["benchmarks"]:
            loaded.empty.append(path)
            continue
        loaded.runs.append((path, run))
        rows += [record_row(path, run, bench, specs, budget) for bench in run["benchmarks"]]
    if rows:
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["run_started"] = pd.to_datetime(frame["run_started"], utc=True, errors="coerce", format="ISO8601")
        loaded.frame = frame
    return loaded


def load_usable(paths: list[Path], skip_bad: bool, specs: SpecTable | None = None) -> tuple[Loaded, list[str]]:
    """`load_runs` for a command over the user's run files: the files that cannot be used refused (or left out
    with `skip_bad`, see `check_problems`), and no record at all refused; with the notes for the command to show."""
    loaded = load_runs(list(paths), specs)
    notes = check_problems(loaded, skip_bad)
    if loaded.frame.empty:
        raise UsageError("none of the run files holds a benchmark record")
    return loaded, notes


def check_problems(loaded: Loaded, skip_bad: bool) -> list[str]:
    """A run file the user named and that cannot be used is an error, unless they asked to skip such files
    (`--skip-bad`); the messages that name each file left out and each run file without a record, for the
    command to show (cli.show_notes)."""
    if loaded.problems and not skip_bad:
        path, why = loaded.problems[0]
        others = f" ({len(loaded.problems) - 1} other file(s) too)" if len(loaded.problems) > 1 else ""
        raise UsageError(f"{path}: {why}{others}; pass --skip-bad to leave such files out")
    return ([f"skipped {path}: {why}" for path, why in loaded.problems]
            + [f"note: {path} holds no benchmark record yet" for path in loaded.empty])


#: A power trace CSV (PowerMonitor.write_trace): the columns, and those that hold numbers (watts or joules
#: may be empty: a counter channel has no watts, an instant one no joules).
TRACE_COLUMNS = ("timestamp_s", "source", "channel", "method", "watts", "joules")
TRACE_NUMBERS = {"timestamp_s": False, "watts": True, "joules": True}


def load_trace(path: Path) -> pd.DataFrame:
    """A power trace CSV, checked: a one-line UsageError naming the file (and the row) when it is not one."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a power trace CSV")
    try:
        trace = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path}: is empty: expected a power trace with columns {', '.join(TRACE_COLUMNS)}") \
            from None
    except (ValueError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"{path}: not a power trace CSV: {str(exc).splitlines()[0]}") from None
    missing = [column for column in TRACE_COLUMNS if column not in trace.columns]
    if missing:
        raise UsageError(f"{path}: not a power trace: no column {', '.join(missing)} (the columns of "
                         f"`wattbench run --save-trace` are {', '.join(TRACE_COLUMNS)})")
    for column, may_be_empty in TRACE_NUMBERS.items():
        text = trace[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = ~np.isfinite(values.to_numpy(float)) & ~((text == "") & may_be_empty).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UsageError(f"{path}: row {row + 1}: {column}: expected a finite number, "
                             f"got {shown(trace[column].iloc[row])}")
        trace[column] = values
    return trace


def energy_reasons(frame: pd.DataFrame) -> list[str]:
    """Why energy was not measured, each reason once and sorted, over the records of `frame` that lack it."""
    return sorted(set(frame.loc[~frame["energy_measured"], "energy_reason"].dropna()))


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Records fit for speed and energy comparisons (record.comparability), the latest run of each identity."""
    measured = frame[[comparability(interpreted) is None for interpreted in frame["interpreted"]]]
    return measured.sort_values("run_started", kind="stable").drop_duplicates(IDENTITY, keep="last")
