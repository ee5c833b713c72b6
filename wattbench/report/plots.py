"""The report's figures, drawn on matplotlib's Agg canvas (no display, no pyplot global state).

Each function returns a Figure, or raises `Skipped` with the reason the figure cannot be
drawn. Figures that need energy but got none say so inside the axes rather than being blank.
Interpreted records never enter a speed or energy comparison.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from wattbench.report.load import IDENTITY, comparable, energy_reasons
from wattbench.report.specs import SpecTable

#: Okabe & Ito's colour-blind-safe palette, yellow last (weak on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
PRECISION_COLOURS = {"fp32": "#0072B2", "tf32": "#56B4E9", "bf16": "#D55E00", "fp16": "#E69F00",
                     "fp8": "#009E73", "int8": "#CC79A7"}
IMPL_MARKERS = {"torch": "o", "triton": "s"}
PRECISION_MARKERS = {"fp32": "o", "tf32": "D", "bf16": "s", "fp16": "^", "fp8": "v", "int8": "P"}
RATIO_TICKS = (0.01, 0.1, 0.2, 0.5, 0.8, 1, 1.25, 2, 5, 10, 100)
HISTORY_LABELS = {"units_per_s": "throughput (units/s)", "units_per_joule": "work per joule (units/J)",
                  "joules_per_unit": "energy per unit (J)", "median_ms": "median latency per call (ms)",
                  "tflops": "achieved TFLOP/s"}
STYLE_TITLES = {"train": "training-style", "infer": "inference-style"}


class Skipped(Exception):
    """A figure that cannot be drawn from these runs; the message says why."""


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _wrap(text: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _note(ax, text: str) -> None:
    """A message in the middle of an axes that has nothing to plot, so the figure is never blank."""
    ax.text(0.5, 0.5, _wrap(text, 48), transform=ax.transAxes, ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": "#999999"})


def device_colours(frame: pd.DataFrame) -> dict[str, str]:
    """The same colour for a device in every figure."""
    names = sorted(set(frame["device_name"]))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _marker(impl: str) -> str:
    return IMPL_MARKERS.get(impl, "^")


def _precision_marker(precision: str) -> str:
    return PRECISION_MARKERS.get(precision, "X")


def _log_axes(ax, y: bool = True) -> None:
    """Log axes labelled in plain numbers; 2s and 5s labelled too on an axis spanning few decades
    (matplotlib's own minor labels, like 3x10^-2, collide)."""
    ax.set_xscale("log")
    if y:
        ax.set_yscale("log")
    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim()))[:2 if y else 1]:
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        decades = math.log10(max(limits) / min(limits)) if min(limits) > 0 else math.inf
        axis.set_minor_formatter(FuncFormatter(_two_and_five) if decades < 2.5 else NullFormatter())


def _two_and_five(value: float, _) -> str:
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if leading in (2, 5) else ""


def _unit_label(rows: pd.DataFrame) -> str:
    units = sorted(set(rows["unit"].dropna()))
    return units[0] if len(units) == 1 else "units"


def _energy_reason(frame: pd.DataFrame) -> str:
    reasons = energy_reasons(frame)
    return "energy not measured" + (f": {reasons[0]}" if reasons else "")


def work_per_joule(frame: pd.DataFrame) -> Figure:
    """Best work per joule per workload and device, training and inference side by side."""
    rows = comparable(frame)
    if rows.empty:
        raise Skipped("no record can be compared: every one was interpreted")
    measured = rows[rows["energy_measured"]]
    ops = sorted(set(rows["op"].dropna()) | set(rows["workload"].dropna().str.split(".").str[0]))
    op_colours = {op: PALETTE[i % len(PALETTE)] for i, op in enumerate(ops)}
    figure = _figure(12, 5)
    axes = figure.subplots(1, 2, sharey=True)
    figure.suptitle("Work per joule by workload (best configuration of each device; higher is better)")
    if not measured.empty:
        # Bars on a log axis start at its bottom: put it a decade under the smallest bar so heights compare.
        best_values = measured.groupby(["device_name", "workload"])["units_per_joule"].max()
        axes[0].set_yscale("log")
        axes[0].set_ylim(10 ** math.floor(math.log10(best_values.min()) - 0.5), best_values.max() * 3)
    for ax, style in zip(axes, ("train", "infer")):
        ax.set_title(STYLE_TITLES[style])
        ax.set_xlabel("device")
        ax.set_ylabel(f"work per joule ({_unit_label(rows)}/J, log scale)")
        styled_rows = rows[rows["style"] == style]
        styled = measured[measured["style"] == style]
        if styled.empty:
            _note(ax, _energy_reason(styled_rows) if not styled_rows.empty else f"no {STYLE_TITLES[style]} records")
            ax.set_xticks([])
            if measured.empty:  # the y axis is shared: clear it only when no panel has bars
                ax.set_yticks([])
            continue
        best = styled.groupby(["device_name", "workload"], as_index=False).agg(
            units_per_joule=("units_per_joule", "max"), op=("op", "first"))
        devices, workloads = sorted(set(styled_rows["device_name"])), sorted(set(best["workload"]))
        width = 0.8 / len(workloads)
        for j, workload in enumerate(workloads):
            part = best[best["workload"] == workload].set_index("device_name").reindex(devices)
            op = part["op"].dropna().iloc[0] if part["op"].notna().any() else workload.split(".")[0]
            x = np.arange(len(devices)) - 0.4 + width * (j + 0.5)
            bars = ax.bar(x, part["units_per_joule"].to_numpy(dtype=float), width, label=workload,
                          color=op_colours.get(op, PALETTE[j % len(PALETTE)]), edgecolor="black", linewidth=0.5)
            ax.bar_label(bars, labels=[_fmt_si(v) for v in part["units_per_joule"]], fontsize=8, padding=2)
        for i, device in enumerate(devices):
            if device not in set(best["device_name"]):
                ax.text(i, 0.04, "energy not\nmeasured", transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=9, color="#555555")
        ax.set_xticks(np.arange(len(devices)), [_wrap(d) for d in devices], fontsize=8)
        ax.legend(title="workload", fontsize=8)
    return figure


def _fmt_si(value: float) -> str:
    if not math.isfinite(value):
        return ""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats on both x and y (lower is better on both)."""
    ordered = points.sort_values([x, y])
    keep, best = [], math.inf
    for index, value in zip(ordered.index, ordered[y]):
        if value < best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def latency_vs_energy(frame: pd.DataFrame) -> Figure:
    """Inference: median latency per call against energy per unit, each device's Pareto frontier drawn."""
    rows = comparable(frame)
    infer = rows[rows["style"] == "infer"]
    if infer.empty:
        raise Skipped("no inference-style record that can be compared (none, or all interpreted)")
    colours = device_colours(rows)
    workloads = sorted(set(infer["workload"]))
    figure = _figure(8.5 * min(len(workloads), 2), 5 * math.ceil(len(workloads) / 2))
    axes = np.atleast_1d(figure.subplots(math.ceil(len(workloads) / 2), min(len(workloads), 2))).ravel()
    figure.suptitle("Inference: latency vs energy per unit across batch sizes (lower-left is better)")
    for ax, workload in zip(axes, workloads):
        part = infer[infer["workload"] == workload]
        unit = _unit_label(part).rstrip("s")
        ax.set_title(workload)
        ax.set_xlabel("median latency per call (ms)")
        ax.set_ylabel(f"energy per {unit} (J)")
        measured = part[part["energy_measured"]]
        if measured.empty:
            _note(ax, _energy_reason(part))
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for device, points in measured.groupby("device_name"):
            for (precision, impl), group in points.groupby(["precision", "impl"]):
                filled = impl == "torch"
                ax.scatter(group["median_ms"], group["joules_per_unit"], marker=_precision_marker(precision), s=40,
                           color=colours[device] if filled else "white", edgecolor=colours[device], zorder=3)
            for _, point in points.drop_duplicates(["precision", "batch"]).iterrows():
                ax.annotate(f"b={point['batch']:g}", (point["median_ms"], point["joules_per_unit"]), fontsize=7,
                            xytext=(5, -3), textcoords="offset points", ha="left", va="top")
            front = pareto_front(points, "median_ms", "joules_per_unit")
            ax.step(front["median_ms"], front["joules_per_unit"], where="post", color=colours[device],
                    linestyle="--", linewidth=1.2)
        _log_axes(ax)
        handles = [Line2D([], [], color=colours[d], linestyle="--", label=_wrap(f"{d} (Pareto frontier)", 34))
                   for d in sorted(set(measured["device_name"]))]
        handles += [Line2D([], [], color="grey", marker=_precision_marker(p), linestyle="", label=p)
                    for p in sorted(set(measured["precision"]))]
        handles += [Line2D([], [], color="grey", marker="o", linestyle="", label="filled: torch"),
                    Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="",
                           label="hollow: Triton / other")]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in axes[len(workloads):]:
        ax.set_visible(False)
    return figure


def roofline(frame: pd.DataFrame, specs: SpecTable) -> Figure:
    """Per device: achieved TFLOP/s against arithmetic intensity, under its compute and bandwidth ceilings."""
    rows = comparable(frame)
    rows = rows[(rows["flops"] > 0) & (rows["bytes"] > 0) & (rows["tflops"] > 0)]
    if rows.empty:
        raise Skipped("no comparable record with FLOPs and bytes per call")
    devices = sorted(set(rows["device_name"]))
    columns = min(len(devices), 2)
    figure = _figure(max(9.0, 6.5 * columns), 5 * math.ceil(len(devices) / columns))
    axes = np.atleast_1d(figure.subplots(math.ceil(len(devices) / columns), columns)).ravel()
    figure.suptitle("Roofline: achieved FLOP/s vs arithmetic intensity (dense peaks from the spec table)")
    for ax, device in zip(axes, devices):
        points = rows[rows["device_name"] == device]
        spec = specs.find(device)
        ax.set_title(_wrap(device + (f"  [spec: {spec.name}]" if spec else ""), 60), fontsize=10)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved TFLOP/s")
        low, high = points["arithmetic_intensity"].min() / 4, points["arithmetic_intensity"].max() * 4
        if spec and spec.memory_bandwidth_gbps:
            high = max(high, max(spec.peak_tflops.values(), default=0) * 1e3 / spec.memory_bandwidth_gbps * 4)
        intensity = np.logspace(math.log10(low), math.log10(high), 200)
        for precision in sorted(set(points["precision"])):
            colour = PRECISION_COLOURS.get(precision, "grey")
            peak = spec.peak_for(precision) if spec else None
            if peak and spec.memory_bandwidth_gbps:
                ceiling = np.minimum(peak, intensity * spec.memory_bandwidth_gbps / 1e3)
                ax.plot(intensity, ceiling, color=colour, linewidth=1.5,
                        label=f"{precision} ceiling: {peak:g} TFLOP/s, {spec.memory_bandwidth_gbps:g} GB/s")
            group = points[points["precision"] == precision]
            for impl, part in group.groupby("impl"):
                ax.scatter(part["arithmetic_intensity"], part["tflops"], color=colour, marker=_marker(impl),
                           edgecolor="black", linewidth=0.5, s=40, zorder=3, label=f"{precision} {impl}")
        if spec is None:
            _note(ax, f"no spec matches {device!r}: ceilings not drawn (add the device with --specs FILE)")
        elif not spec.memory_bandwidth_gbps or not any(spec.peak_for(p) for p in set(points["precision"])):
            _note(ax, f"spec {spec.name!r} has no peak for these precisions: ceilings not drawn")
        _log_axes(ax)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[len(devices):]:
        ax.set_visible(False)
    return figure


def _trace_power(trace: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Watts over time per channel: instant readings as they are, counters differentiated."""
    channels = {}
    for (channel, method), rows in trace.groupby(["channel", "method"], sort=True):
        rows = rows.sort_values("timestamp_s")
        if method == "counter":
            seconds, joules = rows["timestamp_s"].to_numpy(float), rows["joules"].to_numpy(float)
            step = np.diff(seconds)
            watts = np.divide(np.diff(joules), step, out=np.full(step.shape, np.nan), where=step > 0)
            channels[f"{channel} (counter, ΔJ/Δt)"] = pd.DataFrame({"t": seconds[1:], "w": watts})
        else:
            channels[f"{channel} ({method})"] = pd.DataFrame({"t": rows["timestamp_s"], "w": rows["watts"]})
    return {name: part.dropna() for name, part in channels.items() if not part.dropna().empty}


def power_over_time(trace: pd.DataFrame | None, run: dict) -> Figure:
    """The run's power trace (wattbench.report.load.load_trace) with each benchmark's energy windows shaded
    and labelled."""
    if trace is None:
        raise Skipped("no power trace given (record one with `wattbench run --save-trace`)")
    if trace.empty:
        raise Skipped("the power trace holds no readings (no power source was sampled)")
    channels = _trace_power(trace)
    if not channels:
        raise Skipped("the power trace has no power readings to plot")
    figure = _figure(13, 6.5)
    ax = figure.subplots()
    device = run["wattbench"].get("device_name", "device")
    figure.suptitle(f"Power over time: {device} (shaded: each benchmark's energy windows)")
    ax.set_xlabel("time since the power monitor started (s)")
    ax.set_ylabel("power (W)")
    for i, (name, series) in enumerate(channels.items()):
        ax.plot(series["t"], series["w"], color=PALETTE[i % len(PALETTE)], linewidth=1, label=name)
    top = max(series["w"].max() for series in channels.values())
    ax.set_ylim(0, top * 1.8)  # headroom for the window labels
    shaded = 0
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        spans = (info.get("energy") or {}).get("window_spans_s") or []
        label = f"{info.get('workload')} {info.get('impl')} {info.get('precision')} {info.get('size')}"
        colour = PALETTE[shaded % 2 + 4]
        for start, end in spans:
            ax.axvspan(start, end, color=colour, alpha=0.25, linewidth=0)
        if spans:
            ax.text(spans[0][0], top * 1.03, label, rotation=90, fontsize=6, va="bottom", ha="left", clip_on=True)
            shaded += 1
    if not shaded:
        _note(ax, "benchmark windows not shaded: the run file's energy records carry no window_spans_s")
    ax.legend(loc="lower right", fontsize=8)
    return figure


def triton_vs_torch_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """Triton and torch records of the same case on the same device, with speed and energy ratios (>1: Triton wins)."""
    rows = comparable(frame)
    keys = [k for k in IDENTITY if k != "impl"]
    columns = keys + ["median_s", "joules_per_call"]
    torch_rows = rows.loc[rows["impl"] == "torch", columns + ["batch"]]
    triton_rows = rows.loc[rows["impl"] == "triton", columns]
    pairs = torch_rows.merge(triton_rows, on=keys, suffixes=("_torch", "_triton"))
    pairs["speed_ratio"] = pairs["median_s_torch"] / pairs["median_s_triton"]
    pairs["energy_ratio"] = pairs["joules_per_call_torch"] / pairs["joules_per_call_triton"]
    order = ["workload", "precision", "batch", "size", "device_name"]
    return pairs.sort_values(order, kind="stable").reset_index(drop=True)


def triton_vs_torch(frame: pd.DataFrame) -> Figure:
    """Per case: how much faster and how much less energy the Triton kernel takes than torch."""
    pairs = triton_vs_torch_pairs(frame)
    if pairs.empty:
        interpreted = int(((frame["impl"] == "triton") & frame["interpreted"]).sum())
        why = f" ({interpreted} Triton record(s) ran interpreted and cannot be compared)" if interpreted else ""
        raise Skipped(f"no Triton/torch pair of the same case on the same device{why}")
    colours = device_colours(pairs)
    labels = [f"{r.workload} {r.precision} {r.size}" for r in pairs.itertuples()]
    figure = _figure(13, 1.2 + 0.32 * len(pairs))
    axes = figure.subplots(1, 2, sharey=True)
    figure.suptitle("Triton vs torch per case (ratio > 1: Triton is better)")
    y = np.arange(len(pairs))
    for ax, column, title, xlabel in (
            (axes[0], "speed_ratio", "speed", "speed ratio: torch time / Triton time (log scale)"),
            (axes[1], "energy_ratio", "energy", "energy ratio: torch J / Triton J per call (log scale)")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("case (workload, precision, size)")
        values = pairs[column].to_numpy(dtype=float)
        if not np.isfinite(values).any():
            _note(ax, _energy_reason(comparable(frame)))
            ax.set_xticks([])
            continue
        # Bars grow from 1 (parity) so a slower or hungrier Triton kernel points left on the log axis.
        ax.barh(y, np.nan_to_num(values - 1, nan=0.0), left=1.0, color=[colours[d] for d in pairs["device_name"]],
                edgecolor="black", linewidth=0.5)
        ax.axvline(1.0, color="black", linewidth=1)
        finite = values[np.isfinite(values) & (values > 0)]
        half = max(math.log10(2.2), 1.2 * float(np.max(np.abs(np.log10(finite)))))
        _log_axes(ax, y=False)
        ax.set_xlim(10 ** -half, 10 ** half)
        ax.set_xticks([t for t in RATIO_TICKS if 10 ** -half <= t <= 10 ** half])
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    handles = [Line2D([], [], color=c, linewidth=6, label=_wrap(d, 40)) for d, c in colours.items()]
    axes[1].legend(handles=handles, title="device", fontsize=7, loc="lower right")
    return figure


def history(frame: pd.DataFrame, metric: str = "units_per_s") -> Figure:
    """A metric of each benchmark across runs in time order (for CI dashboards)."""
    if metric not in frame.columns:
        raise ValueError(f"metric must be a column of the run table, got {metric!r}")
    rows = frame[~frame["interpreted"] & frame[metric].notna() & frame["run_started"].notna()]
    runs_per_case = rows.groupby(IDENTITY)["run_started"].nunique()
    repeated = runs_per_case[runs_per_case >= 2].index
    if repeated.empty:
        raise Skipped(f"history needs two or more runs of the same benchmark with {metric}; none is repeated")
    figure = _figure(12, 5.5)
    ax = figure.subplots()
    figure.suptitle(f"History: {metric} of each benchmark across runs")
    ax.set_xlabel("run start (UTC)")
    ax.set_ylabel(f"{HISTORY_LABELS.get(metric, metric)} (log scale)")
    indexed = rows.set_index(IDENTITY)
    for i, key in enumerate(repeated):
        series = indexed.loc[[key]].sort_values("run_started")
        workload, impl, style, precision, size, device = key
        ax.plot(series["run_started"], series[metric], marker="o", color=PALETTE[i % len(PALETTE)],
                linestyle="-" if i < len(PALETTE) else "--", label=f"{workload} {impl} {precision} {size} · {device}")
    ax.set_yscale("log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.autofmt_xdate()
    return figure
