"""The comparison a run ends with: training vs prefill vs decode work per joule for each model,
and Triton vs torch time and energy for each op.

Records produced through Triton's interpreter never enter a comparison. Without energy the
model comparison falls back to work per second, and says so.
"""

from __future__ import annotations

from collections import defaultdict

from wattbench.record import Record, records

PHASES = (("train", "llm.train"), ("prefill", "llm.prefill"), ("decode", "llm.decode"))


def _per_joule(record: Record) -> float | None:
    return record.energy_or_none.units_per_joule


def _model_phases(found: list[Record]) -> dict:
    """Per model preset: the best record of each phase, by work per joule (else work per second)."""
    by_model = defaultdict(dict)
    for record in found:
        phase = next((name for name, workload in PHASES if record.workload == workload), None)
        if phase is None or not record.units_per_s or record.within_budget is False:  # outside the accuracy budget
            continue
        model = (record.shape or {}).get("model", "?")
        by_model[model].setdefault(phase, []).append(record)
    summary = {}
    for model, phases in by_model.items():
        measured = all(_per_joule(r) for found in phases.values() for r in found)

        def value(record):
            return _per_joule(record) if measured else record.units_per_s

        best = {phase: max(found, key=value) for phase, found in phases.items()}
        entry = {"metric": "tokens_per_joule" if measured else "tokens_per_s", "phases": {
            phase: {"value": value(r), "impl": r.impl, "precision": r.precision, "size": r.size}
            for phase, r in best.items()}}
        if "train" in best:
            entry["ratio_to_train"] = {phase: value(r) / value(best["train"]) for phase, r in best.items()
                                       if phase != "train"}
        entry["energy_measured"] = measured
        summary[model] = entry
    return summary


def _triton_vs_torch(found: list[Record]) -> list[dict]:
    """Per case measured both ways: torch time / Triton time (above 1: Triton faster), and energy likewise."""
    pairs = defaultdict(dict)
    for record in found:
        if record.impl in ("triton", "torch") and record.median_s:
            pairs[(record.workload, record.precision, record.size)][record.impl] = record
    rows = []
    for (workload, precision, size), impls in sorted(pairs.items()):
        if len(impls) < 2:
            continue
        triton, torch = impls["triton"], impls["torch"]
        triton_j, torch_j = triton.energy_or_none.joules_per_call, torch.energy_or_none.joules_per_call
        energy = torch_j / triton_j if triton_j and torch_j else None
        rows.append({"workload": workload, "precision": precision, "size": size,
                     "speedup": torch.median_s / triton.median_s, "energy_ratio": energy})
    return rows


def summarize(run: dict) -> dict:
    """The run's comparison, over its comparable records (record.Record.not_comparable)."""
    found = records(run)
    comparable = [record for record in found if record.not_comparable is None]
    return {"models": _model_phases(comparable), "triton_vs_torch": _triton_vs_torch(comparable),
            "excluded_interpreted": len(found) - len(comparable)}


def format_summary(summary: dict) -> str:
    lines = ["", "Per-watt comparison"]
    for model, entry in summary["models"].items():
        unit = "tokens/J" if entry["energy_measured"] else "tokens/s (energy not measured)"
        phases = ", ".join(f"{phase} {p['value']:.4g} ({p['impl']} {p['precision']} {p['size']})"
                           for phase, p in entry["phases"].items())
        lines.append(f"  model {model}, best {unit}: {phases}")
        ratios = entry.get("ratio_to_train")
        if ratios:
            lines.append("    relative to training: " + ", ".join(f"{phase} x{r:.3g}" for phase, r in ratios.items()))
    if not summary["models"]:
        lines.append("  models: no compiled (non-interpreted) model records to compare")
    if summary["triton_vs_torch"]:
        lines.append("  Triton vs torch (torch time / Triton time; energy likewise; above 1: Triton better):")
        for row in summary["triton_vs_torch"]:
            energy = f"{row['energy_ratio']:.3g}" if row["energy_ratio"] else "not measured"
            lines.append(f"    {row['workload']} {row['precision']} {row['size']}: speed x{row['speedup']:.3g}, "
                         f"energy x{energy}")
    if summary["excluded_interpreted"]:
        lines.append(f"  {summary['excluded_interpreted']} interpreted Triton record(s) excluded from every "
                     "comparison")
    return "\n".join(lines)
