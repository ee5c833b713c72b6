"""The comparison a run ends with: training vs prefill vs decode work per joule for each model,
and Triton vs torch time and energy for each op.

Records produced through Triton's interpreter never enter a comparison. Without energy the
model comparison falls back to work per second, and says so.
"""

from __future__ import annotations

from collections import defaultdict

PHASES = (("train", "llm.train"), ("prefill", "llm.prefill"), ("decode", "llm.decode"))


def _comparable(run: dict) -> list[dict]:
    return [b["extra_info"] for b in run["benchmarks"] if not b["extra_info"].get("interpreted")]


def _per_joule(info: dict) -> float | None:
    return (info.get("energy") or {}).get("units_per_joule")


def _model_phases(records: list[dict]) -> dict:
    """Per model preset: the best record of each phase, by work per joule (else work per second)."""
    by_model = defaultdict(dict)
    for info in records:
        phase = next((name for name, workload in PHASES if info.get("workload") == workload), None)
        if phase is None or not info.get("units_per_s"):
            continue
        model = (info.get("shape") or {}).get("model", "?")
        by_model[model].setdefault(phase, []).append(info)
    summary = {}
    for model, phases in by_model.items():
        measured = all(_per_joule(i) for infos in phases.values() for i in infos)

        def value(info):
            return _per_joule(info) if measured else info["units_per_s"]

        best = {phase: max(infos, key=value) for phase, infos in phases.items()}
        entry = {"metric": "tokens_per_joule" if measured else "tokens_per_s", "phases": {
            phase: {"value": value(info), "impl": info["impl"], "precision": info["precision"], "size": info["size"]}
            for phase, info in best.items()}}
        if "train" in best:
            entry["ratio_to_train"] = {phase: value(info) / value(best["train"]) for phase, info in best.items()
                                       if phase != "train"}
        entry["energy_measured"] = measured
        summary[model] = entry
    return summary


def _triton_vs_torch(records: list[dict]) -> list[dict]:
    """Per case measured both ways: torch time / Triton time (above 1: Triton faster), and energy likewise."""
    pairs = defaultdict(dict)
    for info in records:
        if info.get("impl") in ("triton", "torch") and info.get("median_s"):
            key = (info["workload"], info["precision"], info["size"])
            pairs[key][info["impl"]] = info
    rows = []
    for (workload, precision, size), impls in sorted(pairs.items()):
        if len(impls) < 2:
            continue
        triton, torch = impls["triton"], impls["torch"]
        energy = None
        if (triton.get("energy") or {}).get("joules_per_call") and (torch.get("energy") or {}).get("joules_per_call"):
            energy = torch["energy"]["joules_per_call"] / triton["energy"]["joules_per_call"]
        rows.append({"workload": workload, "precision": precision, "size": size,
                     "speedup": torch["median_s"] / triton["median_s"], "energy_ratio": energy})
    return rows


def summarize(run: dict) -> dict:
    records = _comparable(run)
    interpreted = sum(1 for b in run["benchmarks"] if b["extra_info"].get("interpreted"))
    return {"models": _model_phases(records), "triton_vs_torch": _triton_vs_torch(records),
            "excluded_interpreted": interpreted}


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
