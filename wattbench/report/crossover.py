"""The crossover map: for each op or model, phase and batch size, which precision does the most work per joule.

Quantisation's energy effect flips with batch size (ML.ENERGY's FP8 against BF16: it never won at batch 8-16, won
11 of 12 at 64-256), so the answer is a map, not a number. One map per workload (its phase: gemm.infer,
llm.prefill, llm.decode), implementation, device, setting and the size without its batch (`K4096-N4096`,
`125m-P512-T64`): each precision's energy per unit at each batch size, relative to the dense baseline (bf16; fp32
where no bf16 ran, as on a CPU), and the winner at each batch among the precisions inside the accuracy budget
(wattbench.accuracy). A precision outside the budget keeps its cell, marked, and never wins. Where energy was not
measured for every cell of a map, the map compares time per unit instead (throughput) and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from wattbench.report.verdict import latest_comparable

ENERGY, TIME = "joules_per_unit", "seconds_per_unit"
BASELINES = ("bf16", "fp32")
#: The map's keys besides the batch size.
KEYS = ["workload", "impl", "device_name", "setting", "family"]


@dataclass
class Cell:
    """One precision at one batch size: its energy (or time) per unit, that over the baseline's, the ratio's 95%
    uncertainty (the two records' in quadrature), and why it cannot win when it is outside the accuracy budget."""

    value: float
    relative: float
    uncertainty_pct: float
    outside_budget: str | None = None


@dataclass
class Crossover:
    """One map: its keys, the measure compared (ENERGY or TIME), the baseline, and per batch size the cells by
    precision and the winner (None where no precision inside the budget has a figure)."""

    workload: str
    impl: str
    device_name: str
    setting: str
    family: str
    unit: str
    measure: str
    baseline: str | None
    batches: list[float]
    precisions: list[str]
    cells: dict[tuple[str, float], Cell] = field(default_factory=dict)
    winners: dict[float, str | None] = field(default_factory=dict)

    @property
    def title(self) -> str:
        setting = "" if self.setting == "default" else f" at {self.setting}"
        return f"{self.workload} {self.family} ({self.impl}) on {self.device_name}{setting}"

    def saving_pct(self, batch: float) -> tuple[float, float]:
        """How much less energy (time) per unit the winner at `batch` takes than the baseline, in %, and its ±95%."""
        cell = self.cells.get((self.winners.get(batch), batch))
        if cell is None or not math.isfinite(cell.relative):
            return math.nan, math.nan
        return 100 * (1 - cell.relative), 100 * cell.relative * cell.uncertainty_pct / 100


def _family(size: str, batch: float) -> str:
    """The size without its batch token: 'M16-K512-N512' -> 'K512-N512', 'tiny-B4-P32' -> 'tiny-P32'."""
    whole = int(batch) if math.isfinite(batch) and batch == int(batch) else batch
    return "-".join(part for part in str(size).split("-") if part not in (f"M{whole}", f"B{whole}")) or str(size)


def _per_unit(rows: pd.DataFrame, measure: str) -> tuple[pd.Series, pd.Series]:
    if measure == ENERGY:
        return rows["joules_per_unit"], rows["energy_uncertainty_pct"]
    return 1.0 / rows["units_per_s"], rows["time_uncertainty_pct"]


def crossover_maps(records: pd.DataFrame) -> list[Crossover]:
    """The maps of every inference workload run at more than one precision (`records`: settings.setting_rows or
    load_runs' frame; interpreted records and settings that did not hold left out, the latest run of each)."""
    rows = records[records["style"] == "infer"]
    if "setting_held" not in rows:
        rows = rows.assign(setting_held=True)
    rows = latest_comparable(rows)  # every record, inside the budget or not, gets its cell
    rows = rows.loc[rows["batch_size"].notna()].copy()
    if rows.empty:
        return []
    rows["family"] = [_family(size, batch) for size, batch in zip(rows["size"], rows["batch_size"])]
    maps = []
    for key, part in rows.groupby(KEYS, sort=True):
        if part["precision"].nunique() < 2:
            continue
        measure = ENERGY if part["energy_measured"].all() else TIME
        maps.append(_crossover(dict(zip(KEYS, key)), part, measure))
    return maps


def _crossover(key: dict, part: pd.DataFrame, measure: str) -> Crossover:
    precisions = sorted(set(part["precision"]), key=_precision_order)
    baseline = next((b for b in BASELINES if b in precisions), None)
    units = sorted(set(part["unit"].dropna()))
    found = Crossover(**key, unit=units[0] if len(units) == 1 else "unit", measure=measure, baseline=baseline,
                      batches=sorted(set(part["batch_size"])), precisions=precisions)
    values, uncertainty = _per_unit(part, measure)
    for batch, at_batch in part.groupby("batch_size"):
        base = at_batch[at_batch["precision"] == baseline]
        base_value = float(values[base.index[0]]) if not base.empty else math.nan
        base_u = float(uncertainty[base.index[0]]) if not base.empty else math.nan
        best, best_value = None, math.inf
        for index, row in at_batch.iterrows():
            value = float(values[index])
            u = math.hypot(float(uncertainty[index]), base_u) if row["precision"] != baseline else float(
                uncertainty[index])
            outside = None if row["within_budget"] is not False else (row["accuracy_note"] or "outside the budget")
            found.cells[(row["precision"], batch)] = Cell(value, value / base_value if base_value > 0 else math.nan,
                                                          u, outside)
            if outside is None and math.isfinite(value) and value < best_value:
                best, best_value = row["precision"], value
        found.winners[batch] = best
    return found


def _precision_order(precision: str) -> tuple[int, str]:
    """Dense first (fp32, bf16, fp16), then fp8, int8w, int4w, sp24."""
    order = ("fp32", "bf16", "fp16", "fp8", "int8w", "int4w", "sp24")
    return next((i for i, p in enumerate(order) if precision.startswith(p)), len(order)), precision


def _batch(value: float) -> str:
    return f"{value:g}"


def summary(found: Crossover) -> str:
    """One sentence: 'fp8 wins from batch 32 on NVIDIA H100, by 11% ± 3% (at batch 32) to 25% ± 2% (at 256)'; the
    baseline winning everywhere; or each batch's winner where no precision holds the larger batches."""
    measure = "energy per unit" if found.measure == ENERGY else "time per unit (energy not measured)"
    batches = [b for b in found.batches if found.winners.get(b)]
    if not batches:
        return f"{found.title}: no precision inside the accuracy budget has a figure"
    last = found.winners[batches[-1]]
    tail = []
    for batch in reversed(batches):
        if found.winners[batch] != last:
            break
        tail.insert(0, batch)
    where = f"{found.title}, by {measure}"
    if found.baseline is None:
        listed = ", ".join(f"{_batch(b)}: {found.winners[b]}" for b in batches)
        return f"{where}: no dense baseline ({' or '.join(BASELINES)}) ran; the least per unit by batch: {listed}"
    if last == found.baseline and len(tail) == len(batches):
        return f"{where}: {last} wins at every batch ({_batch(batches[0])}-{_batch(batches[-1])})"
    if last == found.baseline or len(tail) < 2 and len(batches) > 1:
        listed = ", ".join(f"{_batch(b)}: {found.winners[b]}" for b in batches)
        return f"{where}: the winner changes with batch ({listed})"
    low, high = tail[0], tail[-1]
    first = _saving_words(found, low)
    span = f"{first} (at batch {_batch(low)})" if low == high else \
        f"{first} (at batch {_batch(low)}) to {_saving_words(found, high)} (at {_batch(high)})"
    start = "at every batch" if len(tail) == len(batches) else f"from batch {_batch(low)}"
    return f"{where}: {last} wins {start} on this device, by {span} against {found.baseline}"


def _saving_words(found: Crossover, batch: float) -> str:
    saving, plus_minus = found.saving_pct(batch)
    if not math.isfinite(saving):
        return "an unknown margin (no baseline at that batch)"
    return f"{saving:.0f}%" + (f" ± {plus_minus:.0f}%" if math.isfinite(plus_minus) else " (uncertainty unknown)")


def crossover_table(maps: list[Crossover]) -> pd.DataFrame:
    """One row per map and batch size: the winner, its saving against the baseline, what was compared, and the
    precisions left out for their accuracy."""
    rows = []
    for found in maps:
        for batch in found.batches:
            saving, plus_minus = found.saving_pct(batch) if found.winners[batch] != found.baseline else (math.nan,) * 2
            outside = [p for p in found.precisions if (cell := found.cells.get((p, batch))) and cell.outside_budget]
            rows.append({"workload": found.workload, "size": found.family, "impl": found.impl,
                         "device": found.device_name, "batch": _batch(batch), "winner": found.winners[batch] or "-",
                         "saving vs baseline": "-" if not math.isfinite(saving) else
                         f"{saving:+.1f}%" + (f" ± {plus_minus:.1f}%" if math.isfinite(plus_minus) else ""),
                         "baseline": found.baseline or "-",
                         "compared by": "J/unit" if found.measure == ENERGY else "s/unit (energy not measured)",
                         "outside accuracy budget": ", ".join(outside) or "-"})
    return pd.DataFrame(rows)
