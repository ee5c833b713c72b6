"""Device settings compared: for each workload and phase, energy per unit of work against latency at every power
limit or locked clock a sweep ran, the Pareto frontier of the two, and the energy-optimal setting under a latency
bound, with its saving and its slowdown against the default, each with its 95% uncertainty.

A sweep's record names its setting in `extra_info.setting` (`pl300w`, `sm1200mhz`; a record without one ran at the
host's own settings: `default`, record.DEFAULT_SETTING) and says whether the setting held over its energy windows in
`extra_info.energy.setting` (wattbench.power.knobs.held_over): a record whose setting did not hold is left out,
with the reason. The uncertainties are the records' own 95% half-widths (energy `uncertainty_pct`, the median's
from its rounds), combined in quadrature for a ratio of two independent measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wattbench.report.load import record_row
from wattbench.report.select import BOUNDS, bound_words, check_bounds, check_workload, format_number
from wattbench.specs import SpecTable, load_specs
from wattbench.record import DEFAULT_SETTING, IDENTITY_FIELDS
from wattbench.results import aligned_lines
from wattbench.schema import is_finite_number

#: One comparison: a benchmark's identity but its setting, on one host (a sweep changes one host's devices).
GROUP = [*(name for name in IDENTITY_FIELDS if name != "setting"), "host"]

def _p50(info: dict, metric: str) -> float:
    """The p50 of a latency summary such as `ttft_ms` (wattbench.metrics.latency_percentiles), NaN where there is none."""
    summary = info.get(metric)
    value = summary.get("p50") if isinstance(summary, dict) else None
    return float(value) if is_finite_number(value) else math.nan


def _setting_columns(info: dict) -> dict:
    check = (info.get("energy") or {}).get("setting")
    held = check.get("held") if isinstance(check, dict) else None
    reasons = check.get("reasons") if isinstance(check, dict) and isinstance(check.get("reasons"), list) else []
    return {"setting_checked": isinstance(check, dict),
            "setting_held": held if isinstance(held, bool) else None,
            "setting_reasons": "; ".join(map(str, reasons)),
            "ttft_p50_ms": _p50(info, "ttft_ms"), "tpot_p50_ms": _p50(info, "tpot_ms")}


def setting_rows(runs: list[tuple[Path, dict]], specs: SpecTable | None = None) -> pd.DataFrame:
    """One row per record of `runs` (`Loaded.runs`): report.load's columns (its setting among them), and whether
    the setting was checked and held (and why not), and its TTFT and TPOT p50 (NaN where it has none)."""
    specs = specs or load_specs()
    rows = [{**record_row(path, run, bench, specs), **_setting_columns(bench["extra_info"])}
            for path, run in runs for bench in run["benchmarks"]]
    return pd.DataFrame(rows)


@dataclass
class Point:
    """One setting's record in a comparison."""

    setting: str
    joules_per_unit: float
    energy_uncertainty_pct: float
    units_per_s: float
    median_ms: float
    time_uncertainty_pct: float
    ttft_p50_ms: float
    tpot_p50_ms: float
    on_frontier: bool = False


def _ratio(value: float, reference: float, value_pct: float, reference_pct: float) -> tuple[float, float]:
    """value / reference, and its 95% half-width (a fraction of 1), the two taken as independent."""
    ratio = value / reference
    return ratio, ratio * math.hypot(value_pct / 100, reference_pct / 100)


@dataclass
class Comparison:
    """Every setting of one benchmark on one host; the optimum under the bounds and how it compares to `default`.

    `saving_pct` is the energy per unit saved against the default (negative: more), `slowdown_pct` how much longer
    a call takes (negative: faster); each `_uncertainty_pct` is its 95% half-width in percentage points, NaN when
    a record's uncertainty is unknown. `tied` names the other eligible settings whose energy per unit cannot be
    told from the optimum's (their 95% intervals overlap)."""

    group: dict
    unit: str
    points: list[Point]
    bounds: dict
    optimum: Point | None = None
    default: Point | None = None
    saving_pct: float = math.nan
    saving_uncertainty_pct: float = math.nan
    slowdown_pct: float = math.nan
    slowdown_uncertainty_pct: float = math.nan
    tied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def within_uncertainty(self) -> bool | None:
        """Whether the optimum's saving could be nothing (its 95% interval reaches 0); None when unknown or when
        there is nothing to compare (no default, or the default is the optimum)."""
        if self.optimum is None or self.default is None or self.optimum is self.default:
            return None
        if not math.isfinite(self.saving_uncertainty_pct):
            return None
        return abs(self.saving_pct) <= self.saving_uncertainty_pct

    def compare_to_default(self) -> None:
        ratio, spread = _ratio(self.optimum.joules_per_unit, self.default.joules_per_unit,
                               self.optimum.energy_uncertainty_pct, self.default.energy_uncertainty_pct)
        self.saving_pct, self.saving_uncertainty_pct = 100 * (1 - ratio), 100 * spread
        ratio, spread = _ratio(self.optimum.median_ms, self.default.median_ms, self.optimum.time_uncertainty_pct,
                               self.default.time_uncertainty_pct)
        self.slowdown_pct, self.slowdown_uncertainty_pct = 100 * (ratio - 1), 100 * spread


def pareto_frontier(points: list[Point]) -> list[Point]:
    """The points no other point beats on both energy per unit and median latency (lower is better in both),
    fastest first."""
    frontier, best_energy = [], math.inf
    for point in sorted(points, key=lambda p: (p.median_ms, p.joules_per_unit)):
        if point.joules_per_unit < best_energy:
            frontier.append(point)
            best_energy = point.joules_per_unit
    return frontier


def _overlap(first: Point, second: Point) -> bool:
    """Whether the 95% intervals of the two energies per unit overlap (False when either is unknown)."""
    def interval(point: Point) -> tuple[float, float]:
        spread = point.joules_per_unit * point.energy_uncertainty_pct / 100
        return point.joules_per_unit - spread, point.joules_per_unit + spread
    (low_a, high_a), (low_b, high_b) = interval(first), interval(second)
    return low_a <= high_b and low_b <= high_a


def _point(row) -> Point:
    return Point(row.setting, row.joules_per_unit, row.energy_uncertainty_pct, row.units_per_s, row.median_ms,
                 row.time_uncertainty_pct, row.ttft_p50_ms, row.tpot_p50_ms)


def _compare_group(group: dict, rows: pd.DataFrame, bounds: dict) -> Comparison:
    comparison = Comparison(group, str(rows["unit"].iloc[0] or "unit"), [], bounds)
    for row in rows.itertuples():
        if not row.energy_measured:
            why = row.energy_reason or "no reason recorded"
            comparison.notes.append(f"{row.setting}: left out: energy not measured ({why})")
        elif row.setting_held is False:
            comparison.notes.append(f"{row.setting}: left out: the setting did not hold ({row.setting_reasons})")
        else:
            if row.setting_held is None and row.setting_checked:
                comparison.notes.append(f"{row.setting}: whether the setting held is unknown ({row.setting_reasons})")
            comparison.points.append(_point(row))
    comparison.points.sort(key=lambda p: p.median_ms)
    for point in pareto_frontier(comparison.points):
        point.on_frontier = True
    comparison.default = next((p for p in comparison.points if p.setting == DEFAULT_SETTING), None)
    eligible = comparison.points
    for name, bound in bounds.items():
        column, words = BOUNDS[name]
        unbounded = [p.setting for p in eligible if not math.isfinite(getattr(p, column))]
        if unbounded:
            comparison.notes.append(f"{', '.join(unbounded)}: no {words} recorded, so the {bound:g} ms bound cannot "
                                    "be checked")
        over = [p.setting for p in eligible if getattr(p, column) > bound]
        if over:
            comparison.notes.append(f"{', '.join(over)}: {words} over the {bound:g} ms bound")
        eligible = [p for p in eligible if getattr(p, column) <= bound]
    if not eligible:
        comparison.notes.append("no setting meets the bound" if bounds else "no setting could be compared")
        return comparison
    comparison.optimum = min(eligible, key=lambda p: p.joules_per_unit)
    comparison.tied = [p.setting for p in eligible if p is not comparison.optimum and _overlap(p, comparison.optimum)]
    if comparison.default is None:
        comparison.notes.append("no default record: the saving and slowdown against it are unknown")
    else:
        comparison.compare_to_default()
    return comparison


def compare_settings(frame: pd.DataFrame, workload: str | None = None, max_latency_ms: float | None = None,
                     max_ttft_ms: float | None = None, max_tpot_ms: float | None = None) -> list[Comparison]:
    """A Comparison per benchmark (GROUP) that ran at more than one setting, from `setting_rows`' frame: of the
    latest record of each setting, interpreted ones left out (their timing means nothing). The optimum is the
    lowest energy per unit among the settings that held and meet every bound given."""
    bounds = check_bounds({"max_latency_ms": max_latency_ms, "max_ttft_ms": max_ttft_ms, "max_tpot_ms": max_tpot_ms})
    if workload is not None:
        check_workload(frame, workload)
        frame = frame[frame["workload"] == workload]
    latest = frame[~frame["interpreted"]].sort_values("run_started", kind="stable") \
        .drop_duplicates([*GROUP, "setting"], keep="last")
    comparisons = []
    for key, rows in latest.groupby(GROUP, sort=True, dropna=False):
        if rows["setting"].nunique() > 1:
            comparisons.append(_compare_group(dict(zip(GROUP, key)), rows, bounds))
    return comparisons


def _change(pct: float, uncertainty_pct: float, up: str, down: str) -> str:
    """`12.0% ± 1.1% slower`, or `3.0% ± 1.1% faster` for a negative change."""
    return f"{abs(pct):.1f}% ± {format_number(uncertainty_pct, '.2g')}% {up if pct >= 0 else down}"


def format_comparison(comparison: Comparison) -> str:
    """The comparison as `select` and the report print it: a table of settings (the frontier marked), the optimum
    with its saving and slowdown against the default, then warnings and notes."""
    group, unit = comparison.group, comparison.unit
    title = (f"{group['workload']} {group['impl']} {group['precision']} {group['size']} on {group['device_name']} "
             f"({group['host']}): {len(comparison.points)} setting(s)")
    lines = [title + (f", {bound_words(comparison.bounds)}" if comparison.bounds else "")]
    llm = [column for column, words in (("ttft_p50_ms", "TTFT p50 ms"), ("tpot_p50_ms", "TPOT p50 ms"))
           if any(math.isfinite(getattr(p, column)) for p in comparison.points)]
    header = ["setting", f"J/{unit}", "±95%", f"{unit}/s", "median ms", "±95%",
              *[{"ttft_p50_ms": "TTFT p50 ms", "tpot_p50_ms": "TPOT p50 ms"}[c] for c in llm], "frontier", ""]
    rows = [[p.setting, format_number(p.joules_per_unit), format_number(p.energy_uncertainty_pct, ".2g", "%"),
             format_number(p.units_per_s), format_number(p.median_ms),
             format_number(p.time_uncertainty_pct, ".2g", "%"),
             *[format_number(getattr(p, c)) for c in llm], "yes" if p.on_frontier else "",
             "optimum" if p is comparison.optimum else ""] for p in comparison.points]
    if rows:
        lines += aligned_lines(header, rows)
    optimum = comparison.optimum
    if optimum is not None and optimum is comparison.default:
        lines.append(f"energy-optimal: default (no other setting uses less energy per {unit}"
                     + (" within the bound)" if comparison.bounds else ")"))
    elif optimum is not None and comparison.default is not None:
        energy = _change(comparison.saving_pct, comparison.saving_uncertainty_pct, "less", "more")
        speed = _change(comparison.slowdown_pct, comparison.slowdown_uncertainty_pct, "slower", "faster")
        lines.append(f"energy-optimal: {optimum.setting}: {energy} energy per {unit} than default, {speed} per call")
    elif optimum is not None:
        lines.append(f"energy-optimal: {optimum.setting}")
    if comparison.within_uncertainty:
        lines.append(f"warning: the {comparison.saving_pct:.1f}% saving of {optimum.setting} is within the measurement "
                     f"uncertainty (±{comparison.saving_uncertainty_pct:.2g}%): it may be no saving at all, so "
                     "default is as good")
    elif optimum is not comparison.default and comparison.default is not None and optimum is not None \
            and comparison.within_uncertainty is None:
        lines.append(f"warning: the uncertainty of {optimum.setting} or default is unknown, so the "
                     f"{comparison.saving_pct:.1f}% saving may not be real")
    if comparison.tied:
        lines.append(f"note: {', '.join(comparison.tied)} cannot be told from {optimum.setting} on energy per {unit} "
                     "(their 95% intervals overlap)")
    lines += [f"note: {note}" for note in comparison.notes]
    return "\n".join(lines)
