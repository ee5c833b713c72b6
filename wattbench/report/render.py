"""`wattbench report`: the CSV, the plots, a Markdown summary and one self-contained HTML page.

Both documents answer first: the verdict (the best device and configuration per workload by work per joule, with
its lead and uncertainty), the per-watt comparison of the model phases, what could not be measured (said once),
cost and carbon when their inputs are given, and a device x workload matrix; then the plots; then every record and
note, collapsed in the page.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wattbench.errors import UsageError
from wattbench.report import cost as costs
from wattbench.report import page, plots
from wattbench.report import verdict as answers
from wattbench.report.crossover import crossover_maps, crossover_table, summary as crossover_summary
from wattbench.report.document import Report, Section
from wattbench.report.load import Loaded, load_trace, load_usable
from wattbench.report.select import rank_devices
from wattbench.report.select import format_number as _num
from wattbench.report.settings import compare_settings, format_comparison, setting_rows
from wattbench.specs import SpecTable, load_specs
from wattbench.results import run_environment

INTERPRETED_NOTE = ("Triton ran through its interpreter on a CPU: results are correct but the timing means nothing, "
                    "so these records are listed here and left out of every comparison.")


def _lead_words(found: answers.Verdict) -> str:
    if found.runner_up is None:
        return "only one configuration"
    other = found.runner_up
    against = f"{other.device_name}: " if found.against == "device" else ""
    return f"{found.lead_pct:+.1f}% over {against}{other.configuration} ({_num(other.value)})"


def _confidence(found: answers.Verdict) -> str:
    if found.runner_up is None:
        return "-"
    return {True: "tied within uncertainty", False: "clear lead", None: "uncertainty unknown"}[found.tied]


def verdict_section(found: list[answers.Verdict], parts: tuple[Section, ...]) -> Section:
    """The answer: one row per workload, the lines that say how it was ranked and who wins where, then `parts`
    (the model phases, what could not be measured)."""
    by_throughput = [v.workload for v in found if v.metric == answers.PER_SECOND]
    mixed = 0 < len(by_throughput) < len(found)
    devices = sorted({d for v in found for d in [v.best.device_name, *v.unranked_devices]})
    rows = []
    for v in found:
        value = (f"{_num(v.best.value)} {answers.metric_words(v.metric, v.unit)} "
                 f"±{_num(v.best.uncertainty_pct, '.2g')}%")
        if mixed and v.metric == answers.PER_SECOND:
            value += " (throughput: no energy)"
        rows.append({"workload": v.workload, **({"best device": v.best.device_name} if len(devices) > 1 else {}),
                     "configuration": v.best.configuration, "best value (±95%)": value, "lead": _lead_words(v),
                     "confidence": _confidence(v)})
    lines = []
    if found and not by_throughput:
        lines.append("Best device, implementation, precision, size and setting for each workload by work per joule "
                     "(higher is better); the lead is over the best other device (with one device, over the next "
                     "configuration), and it is tied when the two 95% intervals overlap.")
    elif found and not mixed:
        lines.append("Energy was measured on no device, so every workload is ranked by throughput (units/s), not "
                     "per joule (see what could not be measured, below the table).")
    elif mixed:
        lines.append("Best configuration per workload by work per joule (higher is better); ranked by throughput "
                     f"instead, their energy measured on no device: {', '.join(by_throughput)}.")
    if len(devices) == 1:
        lines.append(f"One device, {devices[0]}: the verdict compares its implementations, precisions and sizes, "
                     "each lead over the next configuration.")
    else:
        wins = pd.Series([v.best.device_name for v in found]).value_counts()
        tied = sum(1 for v in found if v.tied)
        lines.append("Wins: " + ", ".join(f"{device} {count} of {len(found)}" for device, count in wins.items())
                     + (f"; {tied} lead(s) within the measurement uncertainty" if tied else "") + ".")
    return Section("Verdict", "verdict", tuple(lines), pd.DataFrame(rows) if rows else None, sortable=False,
                   subsections=parts)


def _phase_cell(comparison: answers.PhaseComparison, phase: str) -> str:
    best = comparison.phases.get(phase)
    if best is None:
        return "-"
    ratio = comparison.ratio_to_train.get(phase)
    times = f" (x{ratio:.3g} of train)" if ratio is not None else ""
    return f"{_num(best['value'])}{times}: {best['impl']} {best['precision']} {best['size']}"


def phases_section(phases: list[answers.PhaseComparison]) -> Section:
    """The README's headline question: training vs prefill vs decode work per watt, per model and device."""
    if not phases:
        return Section("Train vs prefill vs decode, per watt", "phases",
                       ("No model record (llm.train, llm.prefill, llm.decode) to compare.",))
    rows = [{"model": c.model, "device": c.device_name + ("" if c.setting == "default" else f" at {c.setting}"),
             "metric": "tokens/J" if c.metric == "tokens_per_joule" else "tokens/s (energy not measured)",
             **{phase: _phase_cell(c, phase) for phase in ("train", "prefill", "decode")}} for c in phases]
    lines = ("Each phase's best record (by tokens per joule where every phase's energy was measured, else tokens "
             "per second), and its value relative to training's: the end-of-run comparison, per device and "
             "setting.",)
    return Section("Train vs prefill vs decode, per watt", "phases", lines, pd.DataFrame(rows), sortable=False)


def unmeasured_section(missing: answers.Unmeasured) -> Section:
    """Everything the verdict could not rest on, each reason once."""
    lines = [f"Energy not measured on {', '.join(devices)} ({count} compared record(s)): {reason}"
             for reason, devices, count in missing.energy]
    if missing.interpreted:
        lines.append(f"{missing.interpreted} interpreted Triton record(s), listed apart in Details (Interpreted "
                     f"records): {INTERPRETED_NOTE}")
    lines += [f"{len(cases)} benchmark(s) {what}: {reason}: {', '.join(cases)}"
              for what, reason, cases in missing.not_run]
    lines += [f"setting {setting}: left out, it did not hold ({why or 'no reason recorded'})"
              for setting, why in missing.settings_not_held]
    return Section("What could not be measured", "unmeasured", tuple(lines or ["Nothing: every compared record has "
                                                                               "its energy."]), bullets=True)


def _money(inputs: costs.CostInputs) -> str:
    return f" ({inputs.currency})" if inputs.currency else ""


def cost_section(rows: pd.DataFrame, inputs: costs.CostInputs) -> Section:
    """Devices ranked per workload by total cost (CO2e without a price) per 1M units, labelled as derived."""
    money, table, notes = _money(inputs), [], []
    for ranking in costs.rank_costs(rows, inputs):
        notes += [f"{ranking.workload}: {note}" for note in ranking.notes]
        for rank, entry in enumerate(ranking.entries, start=1):
            line = {"workload": ranking.workload, "rank": rank, "device": entry.pick.device_name,
                    "configuration": entry.pick.configuration, "per 1M": ranking.unit}
            if inputs.electricity_per_kwh is not None or inputs.carbon_g_per_kwh is not None:
                line["facility kWh"] = _num(entry.facility_kwh)
            if inputs.electricity_per_kwh is not None:
                line[f"energy cost{money}"] = _num(entry.energy_cost)
            if inputs.device_per_hour:
                line[f"hardware cost{money}"] = _num(entry.hardware_cost)
            if inputs.priced:
                line[f"total cost{money}"] = _num(entry.total_cost)
            if inputs.carbon_g_per_kwh is not None:
                line["kg CO2e"] = _num(entry.co2e_kg)
            line["median ms"] = _num(entry.pick.median_ms)
            table.append(line)
    key = "total cost" if inputs.priced else "CO2e"
    lines = (f"DERIVED, not measured: {key} per million units of work, from the measured energy per unit and "
             f"throughput and these inputs: {inputs.describe()}. Each device's cheapest configuration, ranked.",
             "facility kWh = J/unit x 1e6 / 3.6e6 x PUE; energy cost = facility kWh x price per kWh; kg CO2e = "
             "facility kWh x gCO2e/kWh / 1000; hardware cost = price per hour x the hours 1M units take at the "
             "measured throughput.", *notes)
    return Section("Cost and carbon per 1M units (derived)", "cost", lines, pd.DataFrame(table) if table else None)


#: The matrix shades a cell by how far under its row's best it is, on a log scale: lightest this many decades under.
MATRIX_DECADES = 1


def matrix_section(rows: pd.DataFrame) -> Section:
    """Device x workload: each device's best value, shaded against its row's best (log scale: darker is better)."""
    devices, lines = answers.matrix(rows)
    if len(devices) < 2:
        return Section("Device x workload", "matrix", (f"One device ({', '.join(devices) or 'none'}): its best value "
                                                       "per workload is the verdict's.",))
    table, shades = [], []
    for line in lines:
        values = [line.values[d] for d in devices]
        high = max((v for v in values if math.isfinite(v) and v > 0), default=math.nan)
        shade = [max(0.0, 1 + math.log10(v / high) / MATRIX_DECADES) if math.isfinite(v) and v > 0 else math.nan
                 for v in values]
        metric = answers.metric_words(line.metric, line.unit)
        table.append({"workload": line.workload,
                      "metric": metric if line.metric == answers.PER_JOULE else f"{metric} (no energy)",
                      **{d: _num(line.values[d]) if d not in line.missing else line.missing[d] for d in devices}})
        shades.append([math.nan, math.nan, *shade])
    lines_text = ("Each cell: the device's best configuration of the workload, in units of work per joule where the "
                  "workload's energy was measured on some device, else per second (marked 'no energy'). Shading is "
                  "per row, against the row's best (darkest, in bold) on a log scale, lightest at "
                  f"{10 ** MATRIX_DECADES:g}x under it or further.",)
    frame = pd.DataFrame(table)
    return Section("Device x workload", "matrix", lines_text, frame,
                   shades=pd.DataFrame(shades, columns=frame.columns) if table else None, sortable=False)


def runs_table(loaded: Loaded) -> pd.DataFrame:
    rows = []
    for path, run in loaded.runs:
        block = run["wattbench"]
        records = [b["extra_info"] for b in run["benchmarks"]]
        measured = sum(1 for r in records if (r.get("energy") or {}).get("joules_per_call") is not None)
        env = run_environment(run)
        rows.append({"run file": path.name, "host": env.get("host", "-"), "device": block.get("device_name", "-"),
                     "started (UTC)": block.get("started_utc", "-"),
                     "complete": "yes" if block.get("complete") else "no",
                     "records": len(records), "energy measured": f"{measured}/{len(records)}",
                     "note": block.get("test_fixture", "")})
    return pd.DataFrame(rows)


def benchmarks_table(frame: pd.DataFrame, inputs: costs.CostInputs | None = None) -> pd.DataFrame:
    """Every record of `frame` (setting_rows' columns); with cost inputs, the derived figures per 1M units."""
    ordered = frame.sort_values(["workload", "device_name", "impl", "precision", "size"], kind="stable")
    derived = costs.derive(ordered, inputs) if inputs is not None else None
    show_setting = set(frame["setting"]) != {"default"}
    show_host = bool(frame["gpu_plus_host_joules_per_unit"].notna().any())  # both boundaries, where both exist
    rows = []
    for r in ordered.itertuples():
        unit = str(r.unit or "unit")
        row = {"workload": r.workload, "style": r.style, "impl": r.impl, "precision": r.precision, "size": r.size,
               **({"setting": r.setting} if show_setting else {}), "device": r.device_name, "host": r.host,
               "median ms": _num(r.median_ms), "p99 ms": _num(r.p99_s * 1e3),
               "±time 95%": _num(r.time_uncertainty_pct, ".2g", "%"), "throughput": f"{_num(r.units_per_s)} {unit}/s",
               "J/unit": _num(r.joules_per_unit), "J/unit above idle": _num(r.dynamic_joules_per_unit),
               **({"J/unit GPU + host": _num(r.gpu_plus_host_joules_per_unit)} if show_host else {}),
               "energy covers": r.energy_boundary or "-", "units/J": _num(r.units_per_joule),
               "avg W": _num(r.avg_power_w, ".4g"), "±energy 95%": _num(r.energy_uncertainty_pct, ".2g", "%"),
               "TFLOP/s": _num(r.tflops), "% peak FLOP/s (MFU if train)": _num(r.pct_peak_flops, ".3g"),
               "% roofline": _num(r.pct_roofline, ".3g"), "accuracy": _accuracy_cell(r)}
        if derived is not None:
            money = _money(inputs)
            row.update({f"derived: energy cost/1M{money}": _num(derived.at[r.Index, "energy_cost"]),
                        f"derived: hardware cost/1M{money}": _num(derived.at[r.Index, "hardware_cost"]),
                        "derived: kg CO2e/1M": _num(derived.at[r.Index, "co2e_kg"])})
        rows.append(row)
    return pd.DataFrame(rows)


def _accuracy_cell(r) -> str:
    """A record's accuracy guard in a few words, "outside budget" first where it is (wattbench.accuracy)."""
    parts = []
    if math.isfinite(r.accuracy):
        parts.append(f"error {r.accuracy:.2%}")
    if math.isfinite(r.top1_agreement):
        parts.append(f"top-1 {r.top1_agreement:.1%}, KL {r.kl_divergence:.2g}")
    if r.within_budget is False:
        parts.insert(0, "OUTSIDE BUDGET")
    return "; ".join(parts) or "-"


def crossover_section(records: pd.DataFrame) -> Section | None:
    """Which precision does the most work per joule at each batch size, inside the accuracy budget."""
    maps = crossover_maps(records)
    if not maps:
        return None
    lines = ("For each inference workload, size and device: the precision with the least energy per unit at each "
             "batch size among those inside the accuracy budget (time per unit where energy was not measured, as "
             "the table says); precisions outside the budget are listed, never chosen.",
             *(crossover_summary(found) + "." for found in maps))
    return Section("Crossover: which precision wins at each batch size", "crossover", lines, crossover_table(maps),
                   filterable=True)


def rankings_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every device per workload, as `wattbench select` ranks them (work per joule, else throughput)."""
    rows = []
    for workload in sorted(set(frame["workload"].dropna()), key=answers.workload_order):
        ranking = rank_devices(frame, workload, None, "units_per_joule")
        for i, e in enumerate(ranking.entries, start=1):
            rows.append({"workload": workload, "metric": ranking.metric, "rank": i, "device": e.device_name,
                         "host": e.host, "impl": e.impl, "precision": e.precision, "size": e.size,
                         "value": _num(e.value), "±95%": _num(e.uncertainty_pct, ".2g", "%"),
                         "median ms": _num(e.median_ms), "margin to next": _num(e.margin_pct, "+.1f", "%"),
                         "lead within uncertainty": {True: "yes: tied", False: "no", None: "unknown"}[
                             e.within_uncertainty] if i < len(ranking.entries) else "-"})
    return pd.DataFrame(rows)


def pairs_table(frame: pd.DataFrame) -> pd.DataFrame:
    pairs = plots.triton_vs_torch_pairs(frame)
    return pd.DataFrame([{"workload": p.workload, "precision": p.precision, "size": p.size, "device": p.device_name,
                          "speed ratio (torch t / Triton t)": _num(p.speed_ratio, ".3g"),
                          "energy ratio (torch J / Triton J)": _num(p.energy_ratio, ".3g")}
                         for p in pairs.itertuples()])


def history_table(records: pd.DataFrame) -> pd.DataFrame:
    changes = plots.history_changes(records)
    show_setting = not changes.empty and set(changes["setting"]) != {"default"}
    return pd.DataFrame([{"workload": c.workload, "impl": c.impl, "precision": c.precision, "size": c.size,
                          **({"setting": c.setting} if show_setting else {}), "device": c.device_name,
                          "runs": c.runs, "first units/s": _num(c.first), "last units/s": _num(c.last),
                          "change": _num(c.change_pct, "+.1f", "%")} for c in changes.itertuples()])


def notes(frame: pd.DataFrame, loaded: Loaded, specs: SpecTable, skipped_plots: dict[str, str]) -> list[str]:
    lines = []
    for device in sorted(set(frame["device_name"])):
        spec = specs.find(device)
        if spec is None:
            lines.append(f"no device spec matches {device!r}: no % of peak or roofline ceilings "
                         "(add it with --specs FILE)")
        else:
            lines += [f"spec {spec.name}: {note}" for note in spec.notes]
    lines += [f"run file skipped: {path}: {why}" for path, why in loaded.problems]
    lines += [f"plot skipped: {name}: {why}" for name, why in skipped_plots.items()]
    return lines


def details_sections(loaded: Loaded, records: pd.DataFrame, specs: SpecTable, skipped: dict[str, str],
                     inputs: costs.CostInputs | None) -> list[Section]:
    frame = loaded.frame
    details = [Section("Runs", "runs", table=runs_table(loaded)),
               Section("Device rankings per workload", "rankings",
                       ("Every device's best configuration per workload, as `wattbench select` ranks them; "
                        "interpreted records left out.",), rankings_table(frame), filterable=True)]
    pairs = pairs_table(frame)
    if not pairs.empty:
        details.append(Section("Triton vs torch", "pairs", ("Ratios above 1 mean the Triton kernel is faster or uses "
                                                            "less energy per call.",), pairs))
    comparisons = compare_settings(records)
    if comparisons:
        details.append(Section("Settings compared", "settings",
                               ("Energy per unit against latency at each power limit or clock setting of a sweep.",),
                               preformatted=tuple(format_comparison(c) for c in comparisons)))
    history = history_table(records)
    if not history.empty:
        details.append(Section("History", "history", ("Every benchmark run more than once: its throughput in the "
                                                       "first and the last run.",), history, filterable=True))
    measured = records[~records["interpreted"]]
    details.append(Section("Compared records", "records", ("Every record that enters a comparison.",),
                           benchmarks_table(measured, inputs), filterable=True))
    interpreted = records[records["interpreted"]]
    if not interpreted.empty:
        details.append(Section("Interpreted records (not compared)", "interpreted", (INTERPRETED_NOTE,),
                               benchmarks_table(interpreted), filterable=True))
    details.append(Section("Notes", "notes", tuple(notes(frame, loaded, specs, skipped)) or ("none",), bullets=True))
    return details


def _lead(loaded: Loaded, rows: pd.DataFrame) -> list[str]:
    frame = loaded.frame
    devices = sorted(set(frame["device_name"]))
    started = frame["run_started"].dropna()
    when = "" if started.empty else f"; started {started.min():%Y-%m-%d %H:%M} UTC"
    if not started.empty and started.max() != started.min():
        when = f"; runs started {started.min():%Y-%m-%d %H:%M} to {started.max():%Y-%m-%d %H:%M} UTC"
    return [f"{len(frame)} record(s) ({len(rows)} compared, {int(frame['interpreted'].sum())} interpreted) from "
            f"{len(loaded.runs)} run file(s) on {len(devices)} device(s): {', '.join(devices)}{when}."]


def _banner(loaded: Loaded) -> list[str]:
    """Synthetic test fixtures among the inputs, said first so their numbers never pass for measurements."""
    notes = [run["wattbench"]["test_fixture"] for _, run in loaded.runs if run["wattbench"].get("test_fixture")]
    return [f"{notes.count(note)} of {len(loaded.runs)} run file(s): {note}" for note in sorted(set(notes))]


def build_report(loaded: Loaded, records: pd.DataFrame, specs: SpecTable, drawn: list[plots.Plot],
                 skipped: dict[str, str], inputs: costs.CostInputs | None) -> Report:
    """The document both files write; `records` are `settings.setting_rows` of the runs."""
    rows = answers.compared(records)
    parts = (phases_section(answers.phase_comparisons(loaded.runs)),
             unmeasured_section(answers.unmeasured(records, loaded.runs)))
    top = [verdict_section(answers.verdicts(rows), parts)]
    if inputs is not None:
        top.append(cost_section(rows, inputs))
    top.append(matrix_section(rows))
    crossover = crossover_section(records)
    if crossover is not None:
        top.append(crossover)
    plot_notes = [f"Not drawn: {name}: {why}" for name, why in skipped.items()]
    return Report("wattbench report", _lead(loaded, rows), _banner(loaded), top, drawn, plot_notes,
                  details_sections(loaded, records, specs, skipped, inputs))


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _markdown_section(section: Section, level: str) -> list[str]:
    parts = [f"{level} {section.title}"]
    if section.bullets:
        parts.append("\n".join(f"- {line}" for line in section.lines))
    else:
        parts += list(section.lines)
    if section.table is not None:
        table = section.table
        if section.shades is not None:  # the row's best in bold, as the page shades it darkest
            table = table.copy()
            best = section.shades.to_numpy(dtype=float) == 1.0
            for i, j in zip(*np.nonzero(best)):
                table.iat[i, j] = f"**{table.iat[i, j]}**"
        parts.append(_markdown_table(table))
    parts += [f"```\n{block}\n```" for block in section.preformatted]
    for part in section.subsections:
        parts += _markdown_section(part, level + "#")
    return parts


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}", *report.lead, *[f"> **{line}**" for line in report.banner]]
    for section in report.top:
        parts += _markdown_section(section, "##")
    parts.append("## Plots")
    parts += report.plot_notes
    for plot in report.plots:
        parts.append(f"![{plot.title}](plots/{plot.name}.png)\n\n*{plot.title}.* {plot.caption}")
    # Collapsed where Markdown renders HTML (GitHub, GitLab); plain text elsewhere.
    parts += ["## Details", f"<details><summary>Every record and note: {', '.join(s.title for s in report.details)}"
                            "</summary>"]
    for section in report.details:
        parts += _markdown_section(section, "###")
    parts.append("</details>")
    return "\n\n".join(parts) + "\n"


def traced_run(loaded: Loaded, trace: Path | None) -> dict:
    """The run a power trace belongs to: the one it was saved beside (`wattbench run --save-trace` writes
    RUN.trace.csv next to RUN.json), else the first run file."""
    if trace is not None:
        for path, run in loaded.runs:
            if Path(path).with_suffix(".trace.csv").name == Path(trace).name:
                return run
    return loaded.runs[0][1]


def draw_plots(loaded: Loaded, records: pd.DataFrame, specs: SpecTable, trace: pd.DataFrame | None, traced: dict,
               plot_dir: Path) -> tuple[list[plots.Plot], dict[str, str]]:
    """Save each figure as PNG and SVG; the figures drawn, and (name -> reason) of those skipped. `records` are
    `settings.setting_rows` of the runs; `traced` is the run the power `trace` belongs to."""
    frame = loaded.frame
    makers = {
        "work_per_joule": lambda: plots.work_per_joule(frame),
        "latency_vs_energy": lambda: plots.latency_vs_energy(frame),
        "batch_curve": lambda: plots.batch_curve(frame),
        "roofline": lambda: plots.roofline(frame, specs),
        "power_over_time": lambda: plots.power_over_time(trace, traced),
        "triton_vs_torch": lambda: plots.triton_vs_torch(frame),
        "history": lambda: plots.history(records),
        "crossover": lambda: plots.crossover(records),
    }
    drawn, skipped = [], {}
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, make in makers.items():
        try:
            plot = make()
        except plots.Skipped as reason:
            skipped[name] = str(reason)
            continue
        for suffix in ("png", "svg"):
            plot.figure.savefig(plot_dir / f"{plot.name}.{suffix}", dpi=110)
        drawn.append(plot)
    return drawn, skipped


#: The file in a report folder that names the run files the report was made from.
INPUTS_FILE = "report-inputs.json"
REPORTS = Path("results") / "reports"


def _inputs(runs: list[Path]) -> list[str]:
    return sorted(str(Path(run).resolve()) for run in runs)


def default_report_dir(runs: list[Path]) -> Path:
    """results/reports/RUN for one run file; for several, a folder named by a digest of their paths, so that
    reports of different inputs never share a folder."""
    if len(runs) == 1:
        return REPORTS / Path(runs[0]).stem
    digest = hashlib.sha1("\n".join(_inputs(runs)).encode()).hexdigest()[:10]
    return REPORTS / f"combined-{len(runs)}-runs-{digest}"


def check_report_dir(out: Path, runs: list[Path], force: bool) -> None:
    """Refuse to write over a folder holding something else than a report of these same run files."""
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / INPUTS_FILE).read_text())["runs"]
    except (OSError, ValueError, TypeError, KeyError):
        previous = None
    if not isinstance(previous, list):
        raise UsageError(f"report folder {str(out)!r} is not empty and holds no report of wattbench's: "
                         "choose another --out, or pass --force to write into it")
    if previous != _inputs(runs):
        raise UsageError(f"report folder {str(out)!r} holds the report of other run files ({len(previous)} "
                         "of them): choose another --out, or pass --force to replace it")


@dataclass(frozen=True)
class WrittenReport:
    """What `write_report` wrote, for the command to show (cli.show_report): the folder and its files, the
    plots left out (name -> why), and the notes on the run files left out or without a record."""

    out: Path
    records: int
    runs: int
    files: tuple[Path, ...]
    skipped_plots: dict[str, str]
    notes: tuple[str, ...]


def write_report(runs: list[Path], out: Path | None = None, specs: SpecTable | None = None,
                 trace: Path | None = None, skip_bad: bool = False, force: bool = False, cost: dict | None = None,
                 config_root: Path = Path(".")) -> WrittenReport:
    """Write benchmarks.csv (+ .parquet with pyarrow), plots/*.png|svg, summary.md and report.html to `out`
    (default: `default_report_dir(runs)`).

    `specs` is the device spec table, loaded once by the caller (a run's `RunConfig.specs`, the command's
    `--specs`); None: the shipped one. `trace` is a power trace CSV (PowerMonitor.write_trace) of the run file it
    was saved beside, else of the first run file. `cost` holds the command line's cost options
    (wattbench.report.cost.KEYS), over `[tool.wattbench.cost]` of the pyproject.toml nearest `config_root`;
    without either, no cost or carbon figure appears. A run file that cannot be used is an error unless
    `skip_bad`; a folder holding another report is refused unless `force`.
    Returns what it wrote; bad input raises UsageError before anything is written.
    """
    if not isinstance(runs, (list, tuple)):
        raise TypeError(f"runs must be a list of run file paths, got {type(runs).__name__}")
    runs = [Path(p) for p in runs]
    table = specs or load_specs()
    power_trace = load_trace(Path(trace)) if trace is not None else None
    inputs = costs.load_cost(config_root, cost)
    loaded, notes = load_usable(runs, skip_bad, table)
    records = setting_rows(loaded.runs, table)
    out = Path(out) if out is not None else default_report_dir(runs)
    check_report_dir(out, runs, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"report folder {str(out)!r} cannot be created: {exc.strerror or exc}") from None
    (out / INPUTS_FILE).write_text(json.dumps({"runs": _inputs(runs)}, indent=1) + "\n")
    written = [out / "benchmarks.csv"]
    loaded.frame.to_csv(written[0], index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        written.append(out / "benchmarks.parquet")
        loaded.frame.to_parquet(written[-1], index=False)
    drawn, skipped = draw_plots(loaded, records, table, power_trace, traced_run(loaded, trace), out / "plots")
    report = build_report(loaded, records, table, drawn, skipped, inputs)
    (out / "summary.md").write_text(to_markdown(report))
    (out / "report.html").write_text(page.to_html(report, out / "plots"))
    written += [out / "plots" / f"{plot.name}.{suffix}" for plot in drawn for suffix in ("png", "svg")]
    written += [out / "summary.md", out / "report.html"]
    return WrittenReport(out, len(loaded.frame), len(loaded.runs), tuple(written), skipped, tuple(notes))
