"""The report's answer, first: for each workload the best device and configuration by work per joule, its lead
over the runner-up with both records' 95% uncertainty; the model phases (train, prefill, decode) compared per
watt on each device; a device x workload matrix; and what could not be measured, said once.

Records come from `settings.setting_rows` (load.py's columns and each record's sweep setting). Interpreted Triton
records and records whose setting did not hold never enter a comparison; quantised records outside the accuracy
budget are never chosen. A workload whose energy was measured on no device is ranked by throughput, and every
figure says which of the two it is.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from wattbench.report.load import IDENTITY
from wattbench.results import run_environment
from wattbench.summary import summarize

#: A benchmark at one setting on one host: the latest run of each is compared.
GROUP = [*IDENTITY, "host"]

PER_JOULE, PER_SECOND = "units_per_joule", "units_per_s"
UNCERTAINTY = {PER_JOULE: "energy_uncertainty_pct", PER_SECOND: "time_uncertainty_pct"}


def latest_comparable(records: pd.DataFrame) -> pd.DataFrame:
    """The records fit to measure against each other: not interpreted, their setting held (or was not checked), the
    latest run of each benchmark at each setting on each host."""
    rows = records[~records["interpreted"] & ~records["setting_held"].isin([False])]
    return rows.sort_values("run_started", kind="stable").drop_duplicates(GROUP, keep="last")


def compared(records: pd.DataFrame) -> pd.DataFrame:
    """The records a "best" choice may name: `latest_comparable`'s inside the accuracy budget (wattbench.accuracy;
    a quantised case outside it is flagged in the tables and never chosen)."""
    rows = latest_comparable(records)
    return rows[~rows["within_budget"].isin([False])] if "within_budget" in rows else rows


def workload_order(workload: str) -> tuple[str, int, str]:
    """Workloads by family, training first: gemm.train, gemm.infer, llm.train, llm.prefill, llm.decode, ..."""
    family, _, phase = workload.partition(".")
    rank = {"train": 0, "prefill": 1, "decode": 2, "infer": 3}.get(phase, 4)
    return family, rank, phase


def metric_for(rows: pd.DataFrame) -> str:
    """Work per joule where some record of `rows` has energy, else throughput."""
    return PER_JOULE if rows["energy_measured"].any() else PER_SECOND


def unit_of(rows: pd.DataFrame) -> str:
    units = sorted(set(rows["unit"].dropna()))
    return units[0] if len(units) == 1 else "units"


def metric_words(metric: str, unit: str) -> str:
    """`tokens/J`, or `tokens/s` for a throughput ranking."""
    return f"{unit}/J" if metric == PER_JOULE else f"{unit}/s"


@dataclass
class Pick:
    """One record as a verdict names it."""

    device_name: str
    host: str
    impl: str
    precision: str
    size: str
    setting: str
    value: float
    uncertainty_pct: float
    median_ms: float

    @property
    def configuration(self) -> str:
        setting = "" if self.setting == "default" else f" at {self.setting}"
        return f"{self.impl} {self.precision} {self.size}{setting}"


@dataclass
class Verdict:
    """A workload's best record by `metric` and how far it leads the runner-up: the best record on another
    device when several devices ran the workload (`against` "device"), else the next configuration."""

    workload: str
    unit: str
    metric: str
    best: Pick
    runner_up: Pick | None = None
    against: str = "device"
    lead_pct: float = math.nan
    #: Whether the two 95% intervals overlap (treat as tied); None when either uncertainty is unknown.
    tied: bool | None = None
    #: Devices that ran the workload but could not be ranked by energy (ranked per joule elsewhere).
    unranked_devices: list[str] = field(default_factory=list)


def _pick(row: pd.Series, metric: str) -> Pick:
    return Pick(row["device_name"], row["host"], row["impl"], row["precision"], row["size"], row["setting"],
                float(row[metric]), float(row[UNCERTAINTY[metric]]), float(row["median_ms"]))


def intervals_overlap(first: Pick, second: Pick) -> bool | None:
    """Whether the better pick's 95% interval reaches the other's (higher is better); None when unknown."""
    if not (math.isfinite(first.uncertainty_pct) and math.isfinite(second.uncertainty_pct)):
        return None
    return bool(first.value * (1 - first.uncertainty_pct / 100) <= second.value * (1 + second.uncertainty_pct / 100))


def verdict_for(workload: str, rows: pd.DataFrame) -> Verdict | None:
    """The verdict over one workload's compared records; None when none has the metric."""
    metric = metric_for(rows)
    ranked = rows[rows[metric].notna()].sort_values(metric, ascending=False, kind="stable")
    if ranked.empty:
        return None
    best = ranked.iloc[0]
    verdict = Verdict(workload, unit_of(rows), metric, _pick(best, metric),
                      unranked_devices=sorted(set(rows["device_name"]) - set(ranked["device_name"])))
    others = ranked[ranked["device_name"] != best["device_name"]]
    if others.empty:
        others, verdict.against = ranked.iloc[1:], "configuration"
    if not others.empty:
        verdict.runner_up = _pick(others.iloc[0], metric)
        verdict.lead_pct = 100 * (verdict.best.value / verdict.runner_up.value - 1)
        verdict.tied = intervals_overlap(verdict.best, verdict.runner_up)
    return verdict


def verdicts(rows: pd.DataFrame) -> list[Verdict]:
    """One verdict per workload of `compared` rows, by family then phase."""
    found = (verdict_for(workload, part) for workload, part in rows.groupby("workload", sort=False))
    return sorted((v for v in found if v is not None), key=lambda v: workload_order(v.workload))


@dataclass
class PhaseComparison:
    """One model on one device at one setting: its best record per phase (train, prefill, decode) and each
    phase's value over training's, from the end-of-run comparison (wattbench.summary)."""

    device_name: str
    host: str
    model: str
    setting: str
    metric: str  # tokens_per_joule or tokens_per_s
    phases: dict[str, dict]
    ratio_to_train: dict[str, float]
    started: str


def _held(info: dict) -> bool:
    """Whether a record's setting held (or was not checked): one that did not is compared nowhere."""
    check = (info.get("energy") or {}).get("setting")
    return not (isinstance(check, dict) and check.get("held") is False)


def phase_comparisons(runs: list[tuple[object, dict]]) -> list[PhaseComparison]:
    """The per-watt comparison of each model on each device, from the latest run of each host and device.

    The comparison is made over each device's records at each setting apart (a run of several GPUs holds them
    all, a sweep every setting), with the same rules as at the end of a run."""
    latest: dict[tuple, PhaseComparison] = {}
    for _, run in runs:
        host = run_environment(run).get("host") or "unknown host"
        started = str(run["wattbench"].get("started_utc") or "")
        groups = defaultdict(list)
        for bench in run["benchmarks"]:
            info = bench["extra_info"]
            if _held(info):
                device = info.get("device_name") or run["wattbench"].get("device_name")
                groups[(device, info.get("setting") or "default")].append(bench)
        for (device, setting), benchmarks in groups.items():
            for model, entry in summarize({"benchmarks": benchmarks})["models"].items():
                key = (host, device, model, setting)
                if key not in latest or latest[key].started <= started:
                    latest[key] = PhaseComparison(device, host, model, setting, entry["metric"], entry["phases"],
                                                  entry.get("ratio_to_train", {}), started)
    return sorted(latest.values(), key=lambda c: (c.model, c.device_name, c.host, c.setting != "default",
                                                  c.setting))


@dataclass
class MatrixRow:
    """A workload's best value on each device (NaN where the device has none) and why a device has none."""

    workload: str
    unit: str
    metric: str
    values: dict[str, float]
    missing: dict[str, str]


def matrix(rows: pd.DataFrame) -> tuple[list[str], list[MatrixRow]]:
    """Devices (columns) and one row per workload of `compared` rows: units/J where the workload's energy was
    measured on some device, else units/s."""
    devices = sorted(set(rows["device_name"]))
    lines = []
    for workload, part in rows.groupby("workload", sort=False):
        metric = metric_for(part)
        best = part.groupby("device_name")[metric].max()
        values = {d: float(best.get(d, math.nan)) for d in devices}
        missing = {d: "energy not measured" if d in best.index else "not run"
                   for d, value in values.items() if not math.isfinite(value)}
        lines.append(MatrixRow(workload, unit_of(part), metric, values, missing))
    return devices, sorted(lines, key=lambda line: workload_order(line.workload))


@dataclass
class Unmeasured:
    """What the verdict could not rest on, each reason once."""

    #: (reason, devices, number of compared records) for each reason energy was not measured.
    energy: list[tuple[str, list[str], int]]
    interpreted: int
    #: (what: failed or skipped, reason, cases), one entry per distinct reason.
    not_run: list[tuple[str, str, list[str]]]
    #: (setting, why) of records left out because their setting did not hold.
    settings_not_held: list[tuple[str, str]]


def unmeasured(records: pd.DataFrame, runs: list[tuple[object, dict]]) -> Unmeasured:
    """Why energy is missing from compared records (grouped by reason), how many records were interpreted, the
    benchmarks the runs record as failed or skipped, and the sweep records whose setting did not hold."""
    rows = compared(records)
    missing = rows[~rows["energy_measured"]]
    energy = [(str(reason), sorted(set(part["device_name"])), len(part))
              for reason, part in missing.fillna({"energy_reason": "no reason recorded"}).groupby("energy_reason")]
    not_run = defaultdict(list)
    for _, run in runs:
        for what in ("failed", "skipped"):
            for entry in run["wattbench"].get(what) or []:
                reason = str(entry.get("reason") or entry.get("error") or "").strip().splitlines()
                not_run[(what, reason[0] if reason else "no reason recorded")].append(str(entry.get("case")))
    held = records[~records["interpreted"] & records["setting_held"].isin([False])]
    return Unmeasured(energy, int(records["interpreted"].sum()),
                      [(what, reason, cases) for (what, reason), cases in not_run.items()],
                      [(row.setting, row.setting_reasons) for row in held.itertuples()])
