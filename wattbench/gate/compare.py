"""Compare two runs benchmark by benchmark: median time, energy per unit and work per joule."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from wattbench import stats
from wattbench.errors import UsageError
from wattbench.gate.config import GateConfig
from wattbench.gate.match import match, refusals
from wattbench.record import EnergyRecord, Record, case_label

SKIPPED = "skipped"
EXCLUDED = "excluded"
MIN_ROUNDS = 5
#: Worst first: the verdict a benchmark gets from its metrics.
SEVERITY = (stats.REGRESSION, stats.INCONCLUSIVE, stats.IMPROVEMENT, stats.UNCHANGED, SKIPPED, EXCLUDED)


@dataclass
class MetricResult:
    metric: str  # "time", "energy" (J/unit) or "work_per_joule" (units/J)
    label: str
    threshold: float
    verdict: str
    baseline: float | None = None
    current: float | None = None
    interval: stats.Interval | None = None
    note: str = ""


@dataclass
class BenchmarkResult:
    id: str
    device_name: str
    metrics: list[MetricResult] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> str:
        verdicts = [m.verdict for m in self.metrics] or [EXCLUDED]
        return min(verdicts, key=SEVERITY.index)


@dataclass
class GateResult:
    benchmarks: list[BenchmarkResult]
    new: list[str]
    missing: list[tuple[str, str]]  # (benchmark id, what the current run says about it)
    method: list[str]
    notes: list[str]
    baseline_label: str
    current_label: str
    strict: bool = False

    def with_verdict(self, verdict: str) -> list[BenchmarkResult]:
        return [b for b in self.benchmarks if any(m.verdict == verdict for m in b.metrics)]

    @property
    def failed(self) -> bool:
        return bool(self.with_verdict(stats.REGRESSION)) or (self.strict and bool(self.missing))

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def headline(self) -> str:
        regressions, improvements = self.with_verdict(stats.REGRESSION), self.with_verdict(stats.IMPROVEMENT)
        excluded = sum(b.verdict == EXCLUDED for b in self.benchmarks)
        parts = [f"{len(regressions)} regression{'s' * (len(regressions) != 1)}",
                 f"{len(improvements)} improvement{'s' * (len(improvements) != 1)}",
                 f"{len(self.benchmarks) - excluded} compared"]
        if excluded:
            parts.append(f"{excluded} excluded")
        if self.new:
            parts.append(f"{len(self.new)} new")
        if self.missing:
            parts.append(f"{len(self.missing)} missing{' (strict: fails)' if self.strict else ''}")
        return f"{'FAIL' if self.failed else 'PASS'}: " + ", ".join(parts)


def describe_method(config: GateConfig) -> list[str]:
    drift = f", widened by a run-to-run drift of {config.drift:.1%} (lognormal)" if config.drift else ""
    return [
        f"time: ratio of median times current/baseline, {config.confidence:.0%} CI by circular block bootstrap "
        f"of the per-round samples (blocks of ceil(rounds^(1/3)) rounds, {config.resamples} resamples, "
        f"seed {config.seed}){drift}",
        "energy: ratio of joules per unit current/baseline, 95% CI from each record's 95% uncertainty combined "
        "in quadrature on a log scale; work per joule is its reciprocal",
        "a regression (improvement) is declared only when the whole CI lies beyond the threshold t: "
        "worse than 1+t (better than 1/(1+t))",
    ]


def compare_runs(baseline: dict, current: dict, config: GateConfig, *, force: bool = False,
                 strict: bool = False, baseline_label: str = "baseline", current_label: str = "current") -> GateResult:
    """Compare every benchmark both runs hold; UsageError when they must not or cannot be compared."""
    reasons = refusals(baseline, current)
    if reasons and not force:
        raise UsageError(f"refusing to compare: {'; '.join(reasons)} (pass --force to compare anyway)")
    notes = [f"forced: {reason}" for reason in reasons]
    matching = match(baseline, current, with_device=not reasons)
    if matching.ignored:
        notes.append(f"ignored {matching.ignored} record(s) without wattbench fields")
    if not matching.pairs:
        raise UsageError(f"nothing comparable: no benchmark in common (baseline has {len(matching.missing)}, "
                         f"current has {len(matching.new)}); are they runs of the same suites?")
    results = [compare_benchmark(name, base, cur, config) for name, base, cur in matching.pairs]
    if all(b.verdict in (SKIPPED, EXCLUDED) for b in results):
        why = sorted({b.note for b in results if b.note} | {m.note for b in results for m in b.metrics if m.note})
        raise UsageError(f"nothing comparable: all {len(results)} common benchmarks were excluded or skipped "
                         f"({'; '.join(why)})")
    status = _current_status(current)
    missing = [(name, status[name]) for name in matching.missing]
    return GateResult(results, matching.new, missing, describe_method(config), notes, baseline_label,
                      current_label, strict)


def compare_benchmark(name: str, base: Record, cur: Record, config: GateConfig) -> BenchmarkResult:
    result = BenchmarkResult(name, cur.device_name)
    why = base.not_comparable or cur.not_comparable
    if why:
        result.note = f"excluded: {why}"
        return result
    result.metrics.append(compare_time(name, base, cur, config))
    result.metrics.extend(compare_energy(name, base, cur, config))
    return result


def compare_time(name: str, base: Record, cur: Record, config: GateConfig) -> MetricResult:
    threshold = config.threshold(cur.name, "time")
    result = MetricResult("time", "median time", threshold, SKIPPED)
    base_timing, cur_timing = base.timing or {}, cur.timing or {}
    if base_timing.get("method") != cur_timing.get("method"):
        result.note = f"timing methods differ: {base_timing.get('method')} vs {cur_timing.get('method')}"
        return result
    samples = []
    for side, timing in (("baseline", base_timing), ("current", cur_timing)):
        values = timing.get("samples_s")
        if not isinstance(values, list) or len(values) < MIN_ROUNDS:
            result.note = f"{side} has {len(values) if isinstance(values, list) else 'no'} per-round samples " \
                          f"(needs {MIN_ROUNDS})"
            return result
        samples.append(values)
    try:
        interval = stats.median_ratio_interval(*samples, confidence=config.confidence, resamples=config.resamples,
                                               seed=config.seed, drift=config.drift)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"benchmark {name}: bad timing samples: {exc}") from None
    result.baseline, result.current = float(np.median(samples[0])), float(np.median(samples[1]))
    result.interval = interval
    result.verdict = stats.verdict(interval, threshold)
    return result


def compare_energy(name: str, base: Record, cur: Record, config: GateConfig) -> list[MetricResult]:
    """J/unit and units/J, or one skipped row with the reason when the two sides did not measure energy alike."""
    threshold = config.threshold(cur.name, "energy")
    unit = cur.unit or "unit"
    per_unit = MetricResult("energy", f"J/{unit.rstrip('s') or unit}", threshold, SKIPPED)
    per_joule = MetricResult("work_per_joule", f"{unit}/J", threshold, SKIPPED)
    base_energy, cur_energy = base.energy_or_none, cur.energy_or_none
    note = _energy_problem(base, cur)
    if note:
        return [MetricResult("energy", "energy", threshold, SKIPPED, note=note)]
    try:
        interval = stats.uncertainty_ratio_interval(base_energy.joules_per_unit, base_energy.uncertainty_pct,
                                                    cur_energy.joules_per_unit, cur_energy.uncertainty_pct)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"benchmark {name}: bad energy record: {exc}") from None
    per_unit.baseline, per_unit.current = base_energy.joules_per_unit, cur_energy.joules_per_unit
    per_unit.interval = interval
    per_unit.verdict = stats.verdict(interval, threshold)
    per_joule.baseline, per_joule.current = 1 / per_unit.baseline, 1 / per_unit.current
    per_joule.interval = stats.Interval(1 / interval.ratio, 1 / interval.high, 1 / interval.low)
    per_joule.verdict = stats.verdict(per_joule.interval, threshold, higher_is_better=True)
    per_unit.note = per_joule.note = (
        f"{cur_energy.method}, windows {_window(base_energy)} vs {_window(cur_energy)}, "
        f"±{base_energy.uncertainty_pct:.2g}% vs ±{cur_energy.uncertainty_pct:.2g}%")
    return [per_unit, per_joule]


def _energy_problem(base: Record, cur: Record) -> str:
    for side, energy in (("baseline", base.energy_or_none), ("current", cur.energy_or_none)):
        if not energy.measured:
            return f"no energy in {side}: {energy.why_not_measured}"
        if energy.uncertainty_pct is None:
            return f"{side} energy has no uncertainty"
    if base.energy.method != cur.energy.method:
        return f"energy methods differ: {base.energy.method} vs {cur.energy.method}"
    if base.units_per_call != cur.units_per_call:
        return f"units per call differ: {base.units_per_call} vs {cur.units_per_call}"
    return ""


def _window(energy: EnergyRecord) -> str:
    window = energy.window_s
    count = energy.valid_windows or energy.windows
    if window is None:
        return "?"
    return f"{count}x{window:.3g} s" if count else f"{window:.3g} s"


def _current_status(current: dict) -> dict[str, str]:
    """What the current run says about cases it did not record: failed or skipped, and why."""
    block = current["wattbench"]
    selected = block.get("select")
    status = defaultdict(lambda: f"not in the current run, which ran with -k {selected!r}" if selected
                         else "not in the current run")
    status.update({case_label(entry.get("case"), entry.get("setting")): f"skipped: {entry.get('reason')}"
                   for entry in block.get("skipped") or []})
    status.update({case_label(entry.get("case"), entry.get("setting")):
                   f"FAILED ({entry.get('phase')}): {entry.get('error')}" for entry in block.get("failed") or []})
    return status
