"""`wattbench report`: the CSV, the plots, a Markdown summary and one self-contained HTML page."""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wattbench.errors import UsageError
from wattbench.report import plots
from wattbench.report.load import Loaded, check_problems, energy_reasons, load_runs, load_trace
from wattbench.report.select import METRICS, rank_devices
from wattbench.report.select import format_number as _num
from wattbench.report.specs import SpecTable, load_specs
from wattbench.results import run_environment

INTERPRETED_NOTE = ("`*` interpreted: Triton ran through its interpreter on a CPU. Results are correct but the "
                    "timing means nothing, so these records are listed here and left out of every comparison.")


@dataclass
class Section:
    title: str
    table: pd.DataFrame | None = None
    lines: tuple[str, ...] = ()
    bullets: bool = False  # lines as a list rather than paragraphs


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


def benchmarks_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every record, interpreted ones marked with `*` (listed, never compared)."""
    rows = []
    for r in frame.sort_values(["workload", "device_name", "impl", "precision", "size"], kind="stable").itertuples():
        unit = str(r.unit or "unit")
        rows.append({
            "workload": r.workload, "style": r.style, "impl": f"{r.impl}*" if r.interpreted else r.impl,
            "precision": r.precision, "size": r.size, "device": r.device_name, "host": r.host,
            "median ms": _num(r.median_ms), "p99 ms": _num(r.p99_s * 1e3),
            "±time 95%": _num(r.time_uncertainty_pct, ".2g", "%"),
            "throughput": f"{_num(r.units_per_s)} {unit}/s",
            "J/unit": _num(r.joules_per_unit), "units/J": _num(r.units_per_joule), "avg W": _num(r.avg_power_w, ".4g"),
            "±energy 95%": _num(r.energy_uncertainty_pct, ".2g", "%"), "TFLOP/s": _num(r.tflops),
            "% peak FLOP/s (MFU if train)": _num(r.pct_peak_flops, ".3g"), "% roofline": _num(r.pct_roofline, ".3g")})
    return pd.DataFrame(rows)


def _tie(within_uncertainty: bool | None) -> str:
    return {True: "yes: treat as tied", False: "no", None: "unknown"}[within_uncertainty]


def ranking_sections(frame: pd.DataFrame) -> list[Section]:
    """One ranking per workload by work per joule (or throughput when energy was not measured)."""
    sections = []
    for workload in sorted(set(frame["workload"].dropna())):
        ranking = rank_devices(frame, workload, None, "units_per_joule")
        metric = METRICS[ranking.metric]
        table = pd.DataFrame([{
            "rank": i, "device": e.device_name, "host": e.host, "impl": e.impl, "precision": e.precision,
            "size": e.size, ranking.metric: _num(e.value), "±95%": _num(e.uncertainty_pct, ".2g", "%"),
            "median ms": _num(e.median_ms), "margin to next": _num(e.margin_pct, "+.1f", "%"),
            "lead within uncertainty": _tie(e.within_uncertainty) if i < len(ranking.entries) else "-"}
            for i, e in enumerate(ranking.entries, start=1)])
        order = "higher" if metric.higher_is_better else "lower"
        lines = (*([f"Note: {ranking.fallback}: ranked by units_per_s instead."] if ranking.fallback else []),
                 f"Ranked by {ranking.metric} ({metric.label}, {order} is better), best configuration per device.",
                 *ranking.notes)
        sections.append(Section(f"Devices for {workload}", table if not table.empty else None, lines))
    return sections


def pairs_table(frame: pd.DataFrame) -> pd.DataFrame:
    pairs = plots.triton_vs_torch_pairs(frame)
    return pd.DataFrame([{"workload": p.workload, "precision": p.precision, "size": p.size, "device": p.device_name,
                          "speed ratio (torch t / Triton t)": _num(p.speed_ratio, ".3g"),
                          "energy ratio (torch J / Triton J)": _num(p.energy_ratio, ".3g")}
                         for p in pairs.itertuples()])


def notes(frame: pd.DataFrame, loaded: Loaded, specs: SpecTable, skipped_plots: dict[str, str]) -> list[str]:
    lines = []
    if frame["interpreted"].any():
        lines.append(INTERPRETED_NOTE)
    for reason in energy_reasons(frame):
        lines.append(f"energy not measured: {reason}")
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


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_markdown(sections: list[Section], figures: dict[str, str]) -> str:
    parts = ["# wattbench report"]
    for section in sections:
        parts.append(f"## {section.title}")
        if section.bullets:
            parts.append("\n".join(f"- {line}" for line in section.lines))
        else:
            parts += list(section.lines)
        if section.table is not None:
            parts.append(_markdown_table(section.table))
    if figures:
        parts.append("## Plots")
        parts += [f"![{title}](plots/{name}.png)" for name, title in figures.items()]
    return "\n\n".join(parts) + "\n"


def to_html(sections: list[Section], figures: dict[str, str], plot_dir: Path) -> str:
    """One page with every table and figure inside it (PNGs as data URIs): it can be mailed or attached."""
    body = ["<h1>wattbench report</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.bullets:
            body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in section.lines) + "</ul>")
        else:
            body += [f"<p>{html.escape(line)}</p>" for line in section.lines]
        if section.table is not None:
            body.append(section.table.to_html(index=False, escape=True, border=0))
    if figures:
        body.append("<h2>Plots</h2>")
        for name, title in figures.items():
            data = base64.b64encode((plot_dir / f"{name}.png").read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px;"
             "margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}"
             "img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>wattbench report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def draw_plots(loaded: Loaded, specs: SpecTable, trace: pd.DataFrame | None, plot_dir: Path) -> tuple[dict, dict]:
    """Save each figure as PNG and SVG; (name -> title) of those drawn, (name -> reason) of those skipped."""
    frame = loaded.frame
    makers = {
        "work_per_joule": ("Work per joule by workload, training vs inference", lambda: plots.work_per_joule(frame)),
        "latency_vs_energy": ("Inference latency vs energy per unit, with Pareto frontiers",
                              lambda: plots.latency_vs_energy(frame)),
        "roofline": ("Roofline per device", lambda: plots.roofline(frame, specs)),
        "power_over_time": ("Power over time with benchmark windows",
                            lambda: plots.power_over_time(trace, loaded.runs[0][1])),
        "triton_vs_torch": ("Triton vs torch: speed and energy ratios", lambda: plots.triton_vs_torch(frame)),
        "history": ("History across runs", lambda: plots.history(frame)),
    }
    drawn, skipped = {}, {}
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, (title, make) in makers.items():
        try:
            figure = make()
        except plots.Skipped as reason:
            skipped[name] = str(reason)
            continue
        for suffix in ("png", "svg"):
            figure.savefig(plot_dir / f"{name}.{suffix}", dpi=110)
        drawn[name] = title
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


def write_report(runs: list[Path], out: Path | None = None, specs: Path | None = None, trace: Path | None = None,
                 skip_bad: bool = False, force: bool = False) -> int:
    """Write benchmarks.csv (+ .parquet with pyarrow), plots/*.png|svg, summary.md and report.html to `out`
    (default: `default_report_dir(runs)`).

    `trace` is the power trace CSV of the first run file (PowerMonitor.write_trace). A run file that cannot
    be used is an error unless `skip_bad`; a folder holding another report is refused unless `force`.
    Returns 0; bad input raises UsageError before anything is written.
    """
    if not isinstance(runs, (list, tuple)):
        raise TypeError(f"runs must be a list of run file paths, got {type(runs).__name__}")
    runs = [Path(p) for p in runs]
    table = load_specs(Path(specs) if specs is not None else None)
    power_trace = load_trace(Path(trace)) if trace is not None else None
    loaded = load_runs(runs, table)
    check_problems(loaded, skip_bad)
    if loaded.frame.empty:
        raise UsageError("none of the run files holds a benchmark record")
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
    drawn, skipped = draw_plots(loaded, table, power_trace, out / "plots")
    frame = loaded.frame
    sections = [Section("Runs", runs_table(loaded))]
    sections += ranking_sections(frame)
    pairs = pairs_table(frame)
    if not pairs.empty:
        sections.append(Section("Triton vs torch", pairs, ("Ratios above 1 mean the Triton kernel is faster "
                                                           "or uses less energy per call.",)))
    sections.append(Section("Benchmarks", benchmarks_table(frame)))
    sections.append(Section("Notes", None, tuple(notes(frame, loaded, table, skipped)), bullets=True))
    (out / "summary.md").write_text(to_markdown(sections, drawn))
    (out / "report.html").write_text(to_html(sections, drawn, out / "plots"))
    written += [out / "plots" / f"{name}.{suffix}" for name in drawn for suffix in ("png", "svg")]
    written += [out / "summary.md", out / "report.html"]
    for name, why in skipped.items():
        print(f"wattbench: plot {name} skipped: {why}")
    print(f"wattbench: report of {len(frame)} record(s) from {len(loaded.runs)} run file(s) in {out}:")
    for path in written:
        print(f"  {path}")
    return 0
