"""`wattbench select`: which device (and, where a power sweep ran, which setting) gives the most work per joule for
a workload, under latency bounds: the median per call, and the TTFT and TPOT p50 of LLM cases."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wattbench.errors import UsageError
from wattbench.report.load import comparable, energy_reasons, load_usable
from wattbench.results import aligned_lines
from wattbench.schema import is_finite_number


@dataclass(frozen=True)
class Metric:
    column: str
    higher_is_better: bool
    needs_energy: bool
    uncertainty_column: str
    label: str


#: A bound on each latency a record may carry: the option's name, the column, and the words for it.
BOUNDS = {"max_latency_ms": ("median_ms", "median latency per call"),
          "max_ttft_ms": ("ttft_p50_ms", "TTFT p50"), "max_tpot_ms": ("tpot_p50_ms", "TPOT p50")}

RANKING_METRICS = {
    "units_per_joule": Metric("units_per_joule", True, True, "energy_uncertainty_pct", "work per joule"),
    "joules_per_unit": Metric("joules_per_unit", False, True, "energy_uncertainty_pct", "energy per unit of work"),
    "units_per_s": Metric("units_per_s", True, False, "time_uncertainty_pct", "throughput"),
    "median_ms": Metric("median_ms", False, False, "time_uncertainty_pct", "median latency per call"),
    "tflops": Metric("tflops", True, False, "time_uncertainty_pct", "achieved TFLOP/s"),
}


@dataclass
class Entry:
    """A device's best configuration for the workload, and how far ahead of the next device it is."""

    device_name: str
    host: str
    impl: str
    precision: str
    size: str
    #: The power sweep's setting (record.DEFAULT_SETTING: the host's own).
    setting: str
    unit: str
    value: float
    uncertainty_pct: float
    median_ms: float
    margin_pct: float = math.nan
    within_uncertainty: bool | None = None


@dataclass
class Ranking:
    workload: str
    metric: str
    #: The latency bounds given (BOUNDS' names), in milliseconds.
    bounds: dict
    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Why the ranking is by units_per_s, not the metric asked for (energy not measured anywhere), else None.
    fallback: str | None = None
    #: The run files left out or without a record (load.check_problems), for the command to show on stderr.
    file_notes: list[str] = field(default_factory=list)


def check_workload(frame: pd.DataFrame, workload: str) -> None:
    """UsageError naming the close matches when `workload` is in none of the runs."""
    known = sorted(set(frame["workload"].dropna()))
    if workload in known:
        return
    close = difflib.get_close_matches(workload, known, n=3, cutoff=0.5)
    close += [w for w in known if workload and workload in w and w not in close]
    hint = f"close matches: {', '.join(close)}" if close else f"workloads in these runs: {', '.join(known)}"
    raise UsageError(f"no workload {workload!r} in the run files; {hint}")


def check_bounds(bounds: dict) -> dict:
    """The bounds given (BOUNDS' names), each a positive number of milliseconds; those that are None left out."""
    for name, value in bounds.items():
        if name not in BOUNDS:
            raise UsageError(f"unknown bound {name!r}: choose among {', '.join(BOUNDS)}")
        if value is not None and (not is_finite_number(value) or value <= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number of milliseconds, got {value!r}")
    return {name: value for name, value in bounds.items() if value is not None}


def bound_words(bounds: dict) -> str:
    return ", ".join(f"{BOUNDS[name][1]} <= {value:g} ms" for name, value in bounds.items())


def check_options(metric: str, bounds: dict) -> tuple[Metric, dict]:
    if metric not in RANKING_METRICS:
        raise UsageError(f"unknown metric {metric!r}: choose one of {', '.join(RANKING_METRICS)}")
    return RANKING_METRICS[metric], check_bounds(bounds)


def _intervals_overlap(first: Entry, second: Entry, higher_is_better: bool) -> bool | None:
    """Whether the two 95% intervals overlap; None when either uncertainty is unknown."""
    if not (math.isfinite(first.uncertainty_pct) and math.isfinite(second.uncertainty_pct)):
        return None
    a_low, a_high = first.value * (1 - first.uncertainty_pct / 100), first.value * (1 + first.uncertainty_pct / 100)
    b_low, b_high = second.value * (1 - second.uncertainty_pct / 100), second.value * (1 + second.uncertainty_pct / 100)
    return a_low <= b_high if higher_is_better else a_high >= b_low


def rank_devices(frame: pd.DataFrame, workload: str, max_latency_ms: float | None = None,
                 metric: str = "units_per_joule", max_ttft_ms: float | None = None,
                 max_tpot_ms: float | None = None) -> Ranking:
    """Devices ranked by `metric` (best configuration and setting each) among those meeting every latency bound.

    Interpreted records are left out, and so are a sweep's records whose setting did not hold (`frame` from
    settings.setting_rows; load_runs' frame has no such column). When an energy metric was not measured on any
    device, the ranking falls back to throughput and says so.
    """
    chosen, bounds = check_options(metric, {"max_latency_ms": max_latency_ms, "max_ttft_ms": max_ttft_ms,
                                            "max_tpot_ms": max_tpot_ms})
    check_workload(frame, workload)
    ranking = Ranking(workload, metric, bounds)
    rows = frame[frame["workload"] == workload]
    interpreted = int(rows["interpreted"].sum())
    if interpreted:
        ranking.notes.append(f"left out {interpreted} interpreted record(s): Triton ran through its interpreter, "
                             "so their timing means nothing")
    rows = comparable(rows)
    if "setting_held" in rows.columns:
        for row in rows[rows["setting_held"].isin([False])].itertuples():
            ranking.notes.append(f"left out: {row.device_name} at {row.setting} ({row.impl} {row.precision} "
                                 f"{row.size}): the setting did not hold ({row.setting_reasons})")
        rows = rows[~rows["setting_held"].isin([False])]
    outside = rows[rows["within_budget"].isin([False])]
    for row in outside.itertuples():
        ranking.notes.append(f"left out: {row.device_name} {row.impl} {row.precision} {row.size}: {row.accuracy_note}")
    rows = rows[~rows["within_budget"].isin([False])]
    if rows.empty:
        ranking.notes.append(f"no record of {workload} can be compared: every one was interpreted")
        return ranking
    if chosen.needs_energy:
        measured = rows[rows["energy_measured"]]
        reasons = energy_reasons(rows)
        if measured.empty:
            ranking.fallback = (f"energy was not measured for {workload} on any device "
                                f"({'; '.join(reasons) or 'no reason recorded'})")
            ranking.metric, chosen = "units_per_s", RANKING_METRICS["units_per_s"]
        else:
            for device in sorted(set(rows["device_name"]) - set(measured["device_name"])):
                why = "; ".join(sorted(set(rows.loc[rows["device_name"] == device, "energy_reason"].dropna())))
                ranking.notes.append(f"not ranked: {device}: energy not measured ({why or 'no reason recorded'})")
            rows = measured
    rows = rows[rows[chosen.column].notna()]
    for name, bound in bounds.items():
        column, words = BOUNDS[name]
        values = rows[column] if column in rows.columns else pd.Series(math.nan, index=rows.index)
        fast = rows[values <= bound]
        for device in sorted(set(rows["device_name"]) - set(fast["device_name"])):
            best = values[rows["device_name"] == device].min()
            why = f"fastest {words} {best:.4g} ms is over" if math.isfinite(best) else f"no {words} to check against"
            ranking.notes.append(f"not ranked: {device}: {why} the {bound:g} ms bound")
        rows = fast
    best_rows = rows.sort_values(chosen.column, ascending=not chosen.higher_is_better, kind="stable") \
        .drop_duplicates("device_name", keep="first")
    ranking.entries = [Entry(r.device_name, r.host, r.impl, r.precision, r.size, r.setting, r.unit,
                             getattr(r, chosen.column),
                             getattr(r, chosen.uncertainty_column), r.median_ms)
                       for r in best_rows.itertuples()]
    for first, second in zip(ranking.entries, ranking.entries[1:]):
        ratio = first.value / second.value if chosen.higher_is_better else second.value / first.value
        first.margin_pct = 100 * (ratio - 1)
        first.within_uncertainty = _intervals_overlap(first, second, chosen.higher_is_better)
    return ranking


def format_number(value, digits: str = ".4g", suffix: str = "") -> str:
    """A table cell: "-" for a figure that is missing (None, NaN, inf or text), else the number formatted."""
    if value is None or isinstance(value, str) or not math.isfinite(value):
        return "-"
    return f"{value:{digits}}{suffix}"


def format_ranking(ranking: Ranking) -> str:
    """The ranking as the table `wattbench select` prints, warnings after it (a fallback is said on stderr)."""
    metric = RANKING_METRICS[ranking.metric]
    bound = f", {bound_words(ranking.bounds)}" if ranking.bounds else ""
    order = "higher" if metric.higher_is_better else "lower"
    lines = [f"{ranking.workload}: {len(ranking.entries)} device(s) ranked by {ranking.metric} "
                 f"({metric.label}, {order} is better){bound}"]
    header = ["rank", "device", "host", "impl", "precision", "size", "setting", ranking.metric, "±95%",
              "median ms", "margin to next"]
    rows = [[str(i), e.device_name, e.host, e.impl, e.precision, e.size, e.setting, format_number(e.value),
             format_number(e.uncertainty_pct, ".2g", "%"), format_number(e.median_ms),
             format_number(e.margin_pct, "+.1f", "%")]
            for i, e in enumerate(ranking.entries, start=1)]
    if rows:
        lines += aligned_lines(header, rows)
    for i, (first, second) in enumerate(zip(ranking.entries, ranking.entries[1:]), start=1):
        if first.within_uncertainty:
            lines.append(f"warning: #{i} {first.device_name} leads #{i + 1} {second.device_name} by "
                         f"{first.margin_pct:.1f}%, within the measurement uncertainty (±{first.uncertainty_pct:.2g}% "
                         f"and ±{second.uncertainty_pct:.2g}%): treat them as tied")
        elif first.within_uncertainty is None:
            lines.append(f"warning: #{i} {first.device_name} vs #{i + 1} {second.device_name}: uncertainty unknown, "
                         f"so a {first.margin_pct:.1f}% margin may not be real")
    lines += ranking.notes
    if not ranking.entries:
        lines.append("no device meets the bound" if ranking.bounds else "no device could be ranked")
    return "\n".join(lines)


def select_devices(runs: list[Path], workload: str, max_latency_ms: float | None = None,
                   metric: str = "units_per_joule", skip_bad: bool = False, max_ttft_ms: float | None = None,
                   max_tpot_ms: float | None = None) -> Ranking:
    """The ranking of `workload`'s devices and settings over the run files (bad input, unusable files without
    `skip_bad`: UsageError). Its `fallback` says when the metric asked for was not measured and throughput stands
    in."""
    from wattbench.report.settings import setting_rows

    check_options(metric, {"max_latency_ms": max_latency_ms, "max_ttft_ms": max_ttft_ms, "max_tpot_ms": max_tpot_ms})
    if not isinstance(workload, str) or not workload:
        raise UsageError("give the workload to rank devices for, e.g. --workload gemm.infer")
    loaded, file_notes = load_usable(runs, skip_bad)
    ranking = rank_devices(setting_rows(loaded.runs), workload, max_latency_ms, metric, max_ttft_ms, max_tpot_ms)
    ranking.file_notes = file_notes
    return ranking


def select_precisions(runs: list[Path], workload: str, skip_bad: bool = False) -> tuple[list, list[str]]:
    """`workload`'s crossover maps over the run files (wattbench.report.crossover: per device, implementation and
    size, the precision with the most work per joule at each batch size, inside the accuracy budget), and the
    notes on the run files left out or without a record (load.check_problems)."""
    from wattbench.report.crossover import crossover_maps
    from wattbench.report.settings import setting_rows

    if not isinstance(workload, str) or not workload:
        raise UsageError("give the workload to rank precisions for, e.g. --workload gemm.infer")
    loaded, file_notes = load_usable(runs, skip_bad)
    check_workload(loaded.frame, workload)
    return [found for found in crossover_maps(setting_rows(loaded.runs)) if found.workload == workload], file_notes


def format_precisions(maps: list, workload: str) -> str:
    """Each map's sentence ("fp8 wins from batch 32 on this device, by 11% ± 3% ..."), then its table."""
    from wattbench.report.crossover import crossover_table, summary

    if not maps:
        return (f"{workload}: no precisions to rank: no comparable inference records of it at two or more "
                "precisions (interpreted Triton records are never compared)")
    lines = []
    for found in maps:
        table = crossover_table([found]).drop(columns=["workload", "size", "impl", "device"])
        lines += [summary(found), *aligned_lines(list(table.columns), table.astype(str).values.tolist()), ""]
    return "\n".join(lines).rstrip()
