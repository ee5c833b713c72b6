"""The report's figures, drawn on matplotlib's Agg canvas (no display, no pyplot global state).

Each function returns a `Plot` (the figure and a one-line caption saying how to read it), or raises `Skipped`
with the reason the figure cannot be drawn. A figure never shows an empty frame: where energy was measured on no
device, a figure about energy draws throughput instead and its title says so. Notes go in titles and captions,
never over the data. Interpreted records never enter a speed or energy comparison.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from datetime import datetime

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

from wattbench.report.load import IDENTITY, comparable, energy_reasons
from wattbench.specs import SpecTable

#: Okabe & Ito's colour-blind-safe palette, yellow last (weak on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
IMPL_MARKERS = {"torch": "o", "triton": "s"}
PRECISION_MARKERS = {"fp32": "o", "tf32": "D", "bf16": "s", "fp16": "^", "fp8": "v", "int8": "P"}
CEILING_STYLES = ["-", "--", ":", "-."]
RATIO_TICKS = (0.01, 0.1, 0.2, 0.5, 0.8, 1, 1.25, 2, 5, 10, 100)
HISTORY_LABELS = {"units_per_s": "throughput (units/s)", "units_per_joule": "work per joule (units/J)",
                  "joules_per_unit": "energy per unit (J)", "median_ms": "median latency per call (ms)",
                  "tflops": "achieved TFLOP/s"}
STYLE_TITLES = {"train": "training-style", "infer": "inference-style"}
#: The history figure draws this many benchmarks, those that changed most; the report's table lists them all.
HISTORY_PANELS = 12


class Skipped(Exception):
    """A figure that cannot be drawn from these runs; the message says why."""


@dataclass
class Plot:
    """A figure, the file name and title it is shown under (which say what it shows: work per joule, or
    throughput where energy is missing), and the one-line caption saying how to read it."""

    name: str
    title: str
    figure: Figure
    caption: str


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _wrap(text: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def category_colours(names) -> dict[str, str]:
    """A colour per name, the same for the same set of names: the colour-blind-safe palette while it lasts."""
    names = sorted(set(names))
    colours = PALETTE if len(names) <= len(PALETTE) else [matplotlib.colors.to_hex(c)
                                                          for c in matplotlib.colormaps["tab20"].colors]
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def device_colours(frame: pd.DataFrame) -> dict[str, str]:
    """The same colour for a device in every figure."""
    return category_colours(frame["device_name"])


def _marker(impl: str) -> str:
    return IMPL_MARKERS.get(impl, "^")


def _precision_marker(precision: str) -> str:
    return PRECISION_MARKERS.get(precision, "X")


#: The minor ticks labelled on a log axis by the decades it spans (fewer than each bound): more where the axis is
#: short, never the 7s and 9s, whose labels run into the next tick's (matplotlib's own minor labels, like 3x10^-2,
#: collide too).
MINOR_LABELS = ((0.4, (2, 3, 4, 5, 6, 8)), (0.8, (2, 3, 5)), (2.5, (2, 5)))


def _log_axes(ax, x: bool = True, y: bool = True) -> None:
    """Log axes labelled in plain numbers, their minor ticks too where the axis spans few decades, so that every
    axis has labels however short it is."""
    if x:
        ax.set_xscale("log")
    if y:
        ax.set_yscale("log")
    for axis, limits, wanted in ((ax.xaxis, ax.get_xlim(), x), (ax.yaxis, ax.get_ylim(), y)):
        if not wanted:
            continue
        axis.set_major_formatter(FuncFormatter(lambda value, _: _fmt_si(value)))
        decades = math.log10(max(limits) / min(limits)) if min(limits) > 0 else math.inf
        digits = next((digits for bound, digits in MINOR_LABELS if decades < bound), ())
        axis.set_minor_formatter(FuncFormatter(lambda value, _, digits=digits: _minor_label(value, digits))
                                 if digits else NullFormatter())
        low, high = min(limits), max(limits)
        majors = [t for t in axis.get_majorticklocs() if low <= t <= high]
        minors = [t for t in axis.get_minorticklocs() if low <= t <= high and _minor_label(t, digits)]
        if digits and len(majors) + len(minors) < 2:
            # Shorter than the gap between two whole digits: matplotlib's finer ticks (0.012, 0.014), all named.
            axis.set_minor_formatter(FuncFormatter(lambda value, _: _fmt_si(value)))


def _minor_label(value: float, digits: tuple[int, ...]) -> str:
    """The tick's number where it is a whole digit (2 of 0.02; never 1.6 of 0.016) among `digits`."""
    if value <= 0:
        return ""
    leading = value / 10 ** math.floor(math.log10(value))
    return _fmt_si(value) if round(leading) in digits and math.isclose(leading, round(leading)) else ""


def _unit_label(rows: pd.DataFrame) -> str:
    units = sorted(set(rows["unit"].dropna()))
    return units[0] if len(units) == 1 else "units"


def _energy_reason(frame: pd.DataFrame) -> str:
    reasons = energy_reasons(frame)
    return "energy not measured" + (f": {_short(reasons[0])}" if reasons else "")


def _short(text: str, limit: int = 90) -> str:
    """A reason cut to fit a title (the report's Not measured list has it in full)."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _fmt_si(value: float) -> str:
    if not math.isfinite(value):
        return ""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _device_handles(colours: dict[str, str], missing: list[str] = ()) -> list[Line2D]:
    handles = [Line2D([], [], color=colour, linewidth=6, label=device) for device, colour in colours.items()
               if device not in missing]
    handles += [Line2D([], [], color="#bbbbbb", linewidth=6, label=f"{device}: energy not measured (no bar)")
                for device in missing]
    return handles


def work_per_joule(frame: pd.DataFrame) -> Plot:
    """Each device's best work per joule for each workload, training and inference side by side; throughput
    where energy was measured on no device."""
    rows = comparable(frame)
    if rows.empty:
        raise Skipped("no record can be compared: every one was interpreted")
    per_joule = bool(rows["energy_measured"].any())
    metric = "units_per_joule" if per_joule else "units_per_s"
    colours = device_colours(rows)
    missing = sorted(set(rows["device_name"]) - set(rows.loc[rows["energy_measured"], "device_name"])) \
        if per_joule else []
    styles = [style for style in STYLE_TITLES if style in set(rows["style"])]
    best = rows[rows[metric].notna()].groupby(["style", "workload", "device_name"])[metric].max()
    devices = sorted(colours)
    drawn_devices = [d for d in devices if d not in missing]
    tallest = max(rows.loc[rows["style"] == style, "workload"].nunique() for style in styles)
    bar = 0.8 / len(drawn_devices)
    figure = _figure(13, 2.6 + tallest * (0.25 + 0.18 * len(drawn_devices)))
    axes = np.atleast_1d(figure.subplots(1, len(styles)))
    what = "Work per joule" if per_joule else "Throughput, not per joule (energy measured on no device)"
    figure.suptitle(f"{what}: each device's best configuration per workload (longer is better)")
    low, high = best.min(), best.max()
    for ax, style in zip(axes, styles):
        part = rows[rows["style"] == style]
        workloads = sorted(set(part["workload"]), key=lambda w: (w.split(".")[0], w))
        units = part.groupby("workload")["unit"].first()
        y = np.arange(len(workloads))
        for j, device in enumerate(drawn_devices):
            values = [best.get((style, w, device), math.nan) for w in workloads]
            bars = ax.barh(y - 0.4 + bar * (j + 0.5), np.nan_to_num(values, nan=0.0), bar, color=colours[device],
                           edgecolor="black", linewidth=0.4)
            ax.bar_label(bars, labels=[_fmt_si(v) for v in values], fontsize=7, padding=2)
        ax.set_yticks(y, [f"{w} ({units[w]})" for w in workloads], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(STYLE_TITLES[style])
        ax.set_xlabel(f"{'work per joule (units/J' if per_joule else 'throughput (units/s'}, log scale)")
        ax.set_ylabel("workload (unit)")
        ax.set_xlim(10 ** math.floor(math.log10(low) - 0.3), high * 6)  # bars start a decade under the shortest
        _log_axes(ax, y=False)
    figure.legend(handles=_device_handles({d: colours[d] for d in devices}, missing), loc="outside lower center",
                  ncols=min(len(devices), 3), fontsize=8, title="device")
    caption = (f"Each bar is a device's best {'units per joule' if per_joule else 'units per second'} for a "
               "workload over its implementations, precisions and sizes; compare bars within a workload, whose "
               "unit its label names.")
    if not per_joule:
        caption += " Energy was measured on no device, so this shows throughput instead of work per joule."
    elif missing:
        caption += f" No bar for {', '.join(missing)}: energy not measured there."
    if per_joule:
        return Plot("work_per_joule", "Work per joule by workload, training vs inference", figure, caption)
    return Plot("throughput", "Throughput by workload, training vs inference (energy measured on no device)", figure,
                caption)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats on both x and y (lower is better on both)."""
    ordered = points.sort_values([x, y])
    keep, best = [], math.inf
    for index, value in zip(ordered.index, ordered[y]):
        if value < best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def _batch_labels(points: pd.DataFrame, metric: str, near: float = 0.15) -> list[tuple[float, float, float]]:
    """(batch, x, y) to label: one per batch size and place, so that points within `near` decades of a labelled
    point of the same batch (its other implementations and precisions) share its label instead of overlapping."""
    placed = []
    for point in points.sort_values(["batch", "median_ms"]).itertuples():
        x, y = point.median_ms, getattr(point, metric)
        if not any(batch == point.batch and abs(math.log10(x / px)) < near and abs(math.log10(y / py)) < near
                   for batch, px, py in placed):
            placed.append((point.batch, x, y))
    return placed


def latency_vs_energy(frame: pd.DataFrame) -> Plot:
    """Inference workloads run at several sizes: median latency per call against energy per unit (throughput
    where energy was measured on no device), each device's Pareto frontier drawn."""
    rows = comparable(frame)
    infer = rows[rows["style"] == "infer"]
    if infer.empty:
        raise Skipped("no inference-style record that can be compared (none, or all interpreted)")
    sizes = infer.groupby("workload")["size"].nunique()
    workloads = sorted(sizes[sizes >= 2].index)
    if not workloads:
        raise Skipped("no inference workload ran at more than one size, so there is no latency trade-off to draw")
    drawn = infer[infer["workload"].isin(workloads)]
    per_joule = bool(drawn["energy_measured"].any())
    if per_joule:
        drawn = drawn[drawn["energy_measured"]]
        workloads = sorted(set(drawn["workload"]))
    metric = "joules_per_unit" if per_joule else "units_per_s"
    colours = device_colours(drawn)
    columns = min(len(workloads), 3)
    figure = _figure(4.8 * columns + 0.5, 3.8 * math.ceil(len(workloads) / columns) + 1.0)
    axes = np.atleast_1d(figure.subplots(math.ceil(len(workloads) / columns), columns)).ravel()
    if per_joule:
        figure.suptitle("Inference: latency vs energy per unit across batch sizes (lower-left is better)")
    else:
        figure.suptitle("Inference: latency vs throughput across batch sizes (upper-left is better; energy "
                        "measured on no device)")
    for ax, workload in zip(axes, workloads):
        part = drawn[drawn["workload"] == workload]
        unit = _unit_label(part)
        ax.set_title(workload, fontsize=10)
        ax.set_xlabel("median latency per call (ms)")
        ax.set_ylabel(f"energy per {unit.rstrip('s')} (J)" if per_joule else f"throughput ({unit}/s)")
        for device, points in part.groupby("device_name"):
            for (precision, impl), group in points.groupby(["precision", "impl"]):
                ax.scatter(group["median_ms"], group[metric], marker=_precision_marker(precision), s=40,
                           color=colours[device] if impl == "torch" else "white", edgecolor=colours[device], zorder=3)
            for batch, x, y in _batch_labels(points, metric):
                ax.annotate(f"b={batch:g}", (x, y), fontsize=7, xytext=(5, -3), textcoords="offset points",
                            ha="left", va="top")
            sign = 1 if per_joule else -1  # the frontier minimises energy, or maximises throughput
            front = pareto_front(points.assign(_y=sign * points[metric]), "median_ms", "_y")
            ax.plot(front["median_ms"], front[metric], color=colours[device], linestyle="--", linewidth=1.2)
        _log_axes(ax)
    for ax in axes[len(workloads):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, linestyle="--", label=f"{d} (Pareto frontier)") for d, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=_precision_marker(p), linestyle="", label=p)
                for p in sorted(set(drawn["precision"]))]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="", label="filled: torch"),
                Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="",
                       label="hollow: Triton / other")]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    left_out = sorted(set(infer["workload"]) - set(workloads))
    caption = ("Each point is one configuration (b = batch per call); the dashed line joins each device's "
               "configurations that no other of its configurations beats on both axes.")
    if not per_joule:
        caption += " Energy was measured on no device, so this shows throughput instead of energy per unit."
    if left_out:
        caption += (f" Not drawn ({'one size only or no energy' if per_joule else 'one size only'}): "
                    f"{', '.join(left_out)}.")
    if per_joule:
        return Plot("latency_vs_energy", "Inference latency vs energy per unit, with Pareto frontiers", figure, caption)
    return Plot("latency_vs_throughput", "Inference latency vs throughput, with Pareto frontiers (energy measured on "
                "no device)", figure, caption)


#: The model-level workloads whose batch curves are drawn, and how each implementation's line is dashed.
BATCH_CURVE_WORKLOADS = ("llm.prefill", "llm.decode")
IMPL_LINES = {"torch": "-", "triton": "--", "compiled": ":"}
#: The workload whose inter-token latency (the record's `itl_ms`) is drawn beside the batch curves.
ITL_WORKLOAD = "llm.decode"


def batch_curve(frame: pd.DataFrame) -> Plot:
    """Prefill and decode: energy per token against the batch size, a line per device, precision and
    implementation (throughput where energy was measured on no device), as ML.ENERGY draws its curves; beside
    them decode's inter-token latency at the same points (p50, a band to p99), the price of each batch's
    energy saving."""
    rows = comparable(frame)
    rows = rows[rows["workload"].isin(BATCH_CURVE_WORKLOADS) & rows["batch_size"].notna()]
    batches = rows.groupby("workload")["batch_size"].nunique()
    workloads = [w for w in BATCH_CURVE_WORKLOADS if batches.get(w, 0) >= 2]
    if not workloads:
        raise Skipped("no prefill or decode record that can be compared ran at two or more batch sizes")
    drawn = rows[rows["workload"].isin(workloads)]
    per_joule = bool(drawn["energy_measured"].any())
    if per_joule:
        drawn = drawn[drawn["energy_measured"]]
        workloads = [w for w in workloads if drawn.loc[drawn["workload"] == w, "batch_size"].nunique() >= 2]
        if not workloads:
            raise Skipped("energy was measured at one batch size only, so there is no curve to draw")
        drawn = drawn[drawn["workload"].isin(workloads)]
    metric = "joules_per_unit" if per_joule else "units_per_s"
    colours = device_colours(drawn)
    itl = drawn[(drawn["workload"] == ITL_WORKLOAD) & drawn["itl_p50_ms"].notna()]
    panels = len(workloads) + (not itl.empty)
    figure = _figure(5.2 * panels + 0.5, 4.6)
    axes = np.atleast_1d(figure.subplots(1, panels))
    if per_joule:
        figure.suptitle("Energy per token vs batch size (lower is better): prefill and decode")
    else:
        figure.suptitle("Throughput vs batch size (higher is better; energy measured on no device)")
    for ax, workload in zip(axes, workloads):
        part = drawn[drawn["workload"] == workload]
        unit = _unit_label(part)
        for (device, precision, impl), line in part.groupby(["device_name", "precision", "impl"]):
            line = line.groupby("batch_size")[metric].median().sort_index()
            ax.plot(line.index, line.values, color=colours[device], linestyle=IMPL_LINES.get(impl, "-."),
                    marker=_precision_marker(precision), markersize=5, linewidth=1.3)
        ax.set_title(f"{workload} ({', '.join(sorted(set(part['size'].str.split('-').str[0])))})", fontsize=10)
        ax.set_xlabel("batch size (sequences per call)")
        ax.set_ylabel(f"energy per {unit.rstrip('s')} (J)" if per_joule else f"throughput ({unit}/s)")
        _log_axes(ax)
    if not itl.empty:
        _itl_panel(axes[-1], itl, colours)
    handles = [Line2D([], [], color=c, linewidth=3, label=d) for d, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=_precision_marker(p), linestyle="", label=p)
                for p in sorted(set(drawn["precision"]))]
    handles += [Line2D([], [], color="grey", linestyle=IMPL_LINES.get(i, "-."), label=i)
                for i in sorted(set(drawn["impl"]))]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=8)
    caption = ("Each line is one device, precision (marker) and implementation (dash) across batch sizes; the "
               "panel titles name the models. On a GPU, energy per token falls steeply from small batches and "
               "flattens by 256-512 (ML.ENERGY's Llama-3.1-8B curve on an H100: 0.455 J/token at batch 8, "
               "0.0702 at 512).")
    if not itl.empty:
        caption += (f" The right-hand panel is {ITL_WORKLOAD}'s inter-token latency at the same points: the time of "
                    "one decode step, which makes a token for every sequence of the batch (line: p50; band: up to "
                    "p99 of the timed rounds' steps; CUDA events between steps on a GPU, the host clock on a CPU).")
    if not per_joule:
        caption += " Energy was measured on no device, so this shows throughput instead of energy per token."
        return Plot("batch_curve_throughput", "Throughput vs batch size, prefill and decode (energy measured on "
                    "no device)", figure, caption)
    return Plot("batch_curve", "Energy per token vs batch size, prefill and decode", figure, caption)


def _itl_panel(ax, rows: pd.DataFrame, colours: dict[str, str]) -> None:
    """ITL against batch size: p50 a line per device, precision and implementation, shaded up to p99."""
    for (device, precision, impl), line in rows.groupby(["device_name", "precision", "impl"]):
        line = line.groupby("batch_size")[["itl_p50_ms", "itl_p99_ms"]].median().sort_index()
        ax.plot(line.index, line["itl_p50_ms"], color=colours[device], linestyle=IMPL_LINES.get(impl, "-."),
                marker=_precision_marker(precision), markersize=5, linewidth=1.3)
        ax.fill_between(line.index, line["itl_p50_ms"], line["itl_p99_ms"], color=colours[device], alpha=0.15,
                        linewidth=0)
    ax.set_title(f"{ITL_WORKLOAD}: inter-token latency (p50, band to p99)", fontsize=10)
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("ITL: time per decode step (ms)")
    _log_axes(ax)


def _ceiling_styles(precisions) -> dict[str, str]:
    return {p: CEILING_STYLES[i % len(CEILING_STYLES)] for i, p in enumerate(sorted(precisions))}


def roofline(frame: pd.DataFrame, specs: SpecTable) -> Plot:
    """Per device: achieved TFLOP/s against arithmetic intensity, under its compute and bandwidth ceilings;
    points coloured by op, shaped by precision, hollow for Triton."""
    rows = comparable(frame)
    rows = rows[(rows["flops"] > 0) & (rows["bytes"] > 0) & (rows["tflops"] > 0)]
    if rows.empty:
        raise Skipped("no comparable record with FLOPs and bytes per call")
    rows = rows.assign(op=rows["op"].fillna(rows["workload"].str.split(".").str[0]))
    op_colours = category_colours(rows["op"])
    devices = sorted(set(rows["device_name"]))
    columns = min(len(devices), 2)
    figure = _figure(7.5 * columns + 2.5, 5 * math.ceil(len(devices) / columns))
    axes = np.atleast_1d(figure.subplots(math.ceil(len(devices) / columns), columns)).ravel()
    figure.suptitle("Roofline: achieved TFLOP/s vs arithmetic intensity (dense peaks from the spec table)")
    styles = _ceiling_styles(set(rows["precision"]))
    without_spec, ceilings_drawn = [], set()
    for ax, device in zip(axes, devices):
        points = rows[rows["device_name"] == device]
        spec = specs.find(device)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved TFLOP/s")
        low, high = points["arithmetic_intensity"].min() / 4, points["arithmetic_intensity"].max() * 4
        if spec and spec.memory_bandwidth_gbps:
            high = max(high, max(spec.peak_tflops.values(), default=0) * 1e3 / spec.memory_bandwidth_gbps * 4)
        intensity = np.logspace(math.log10(low), math.log10(high), 200)
        peaks = []
        for precision in sorted(set(points["precision"])):
            peak = spec.peak_for(precision) if spec else None
            if peak and spec.memory_bandwidth_gbps:
                ceiling = np.minimum(peak, intensity * spec.memory_bandwidth_gbps / 1e3)
                ax.plot(intensity, ceiling, color="#444444", linestyle=styles[precision], linewidth=1.3)
                peaks.append(f"{precision} {peak:g}")
                ceilings_drawn.add(precision)
        for (op, precision, impl), part in points.groupby(["op", "precision", "impl"]):
            colour = op_colours[op]
            ax.scatter(part["arithmetic_intensity"], part["tflops"], marker=_precision_marker(precision), s=40,
                       color=colour if impl == "torch" else "white", edgecolor=colour, linewidth=1.0, zorder=3)
        # The ceilings' figures go in the title, never over the data.
        if spec is None:
            why = "no spec matches: ceilings not drawn (add the device with --specs FILE)"
            without_spec.append(device)
        elif not peaks:
            why = f"spec {spec.name!r} has no peak for these precisions: ceilings not drawn"
        else:
            why = f"spec {spec.name}: ceilings {', '.join(peaks)} TFLOP/s, {spec.memory_bandwidth_gbps:g} GB/s"
        ax.set_title(f"{_wrap(device, 60)}\n{_wrap(why, 90)}", fontsize=9)
        _log_axes(ax)
    for ax in axes[len(devices):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=op) for op, c in op_colours.items()]
    handles += [Line2D([], [], color="grey", marker=_precision_marker(p), linestyle="", label=p)
                for p in sorted(set(rows["precision"]))]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="", label="filled: torch"),
                Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="",
                       label="hollow: Triton")]
    handles += [Line2D([], [], color="#444444", linestyle=styles[p], label=f"{p} ceiling")
                for p in sorted(ceilings_drawn)]
    figure.legend(handles=handles, loc="outside right center", fontsize=8, title="op, precision, impl")
    caption = ("Each point is one benchmark, coloured by op and shaped by precision; a point near its ceiling "
               "runs near the device's peak, one under the sloped part is bound by memory bandwidth.")
    if without_spec:
        caption += f" No spec for {', '.join(without_spec)}: no ceilings there."
    return Plot("roofline", "Roofline per device", figure, caption)


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


def _seconds_between(start, end) -> float | None:
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return None


def run_span(run: dict) -> tuple[float, float] | None:
    """The run's span on the trace's clock (seconds since the power monitor started): from the start to the end
    of its last energy window, else to the run's recorded duration; None when neither is known."""
    spans = [span for bench in run["benchmarks"]
             for span in (bench["extra_info"].get("energy") or {}).get("window_spans_s") or []]
    if spans:
        return min(0.0, min(s for s, _ in spans)), max(e for _, e in spans)
    block = run["wattbench"]
    duration = _seconds_between(block.get("started_utc"), block.get("ended_utc"))
    return (0.0, duration) if duration and duration > 0 else None


def power_over_time(trace: pd.DataFrame | None, run: dict) -> Plot:
    """The run's power trace (wattbench.report.load.load_trace), cropped to the run, with each benchmark's
    energy windows shaded and labelled."""
    if trace is None:
        raise Skipped("no power trace given (record one with `wattbench run --save-trace`)")
    if trace.empty:
        raise Skipped("the power trace holds no readings (no power source was sampled)")
    channels = _trace_power(trace)
    if not channels:
        raise Skipped("the power trace has no power readings to plot")
    first = min(series["t"].min() for series in channels.values())
    last = max(series["t"].max() for series in channels.values())
    span = run_span(run)
    cropped = ""
    if span is not None:
        pad = 0.02 * (span[1] - span[0])
        start, end = span[0] - pad, span[1] + pad
        channels = {name: series[(series["t"] >= start) & (series["t"] <= end)] for name, series in channels.items()}
        channels = {name: series for name, series in channels.items() if not series.empty}
        if not channels:
            raise Skipped(f"the power trace ({first:.4g} to {last:.4g} s) holds no reading within the run "
                          f"({span[0]:.4g} to {span[1]:.4g} s)")
        if first < start or last > end:
            cropped = (f" Cropped to the run ({span[0]:.4g} to {span[1]:.4g} s) from a trace of {first:.4g} to "
                       f"{last:.4g} s.")
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
    if span is not None:
        ax.set_xlim(start, end)
    shaded = 0
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        spans = (info.get("energy") or {}).get("window_spans_s") or []
        label = f"{info.get('workload')} {info.get('impl')} {info.get('precision')} {info.get('size')}"
        colour = PALETTE[shaded % 2 + 4]
        for window_start, window_end in spans:
            ax.axvspan(window_start, window_end, color=colour, alpha=0.25, linewidth=0)
        if spans:
            ax.text(spans[0][0], top * 1.03, label, rotation=90, fontsize=6, va="bottom", ha="left", clip_on=True)
            shaded += 1
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(channels), fontsize=8,
                  title="channel")
    caption = ("Power of each channel the monitor sampled; each shaded band is one energy window of the benchmark "
               "named above it, whose joules per call come from those windows." + cropped)
    if not shaded:
        caption += " No band: the run file's energy records carry no window times (window_spans_s)."
    return Plot("power_over_time", f"Power over time of {device}, with benchmark windows", figure, caption)


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


def triton_vs_torch(frame: pd.DataFrame) -> Plot:
    """Per case: how much faster and how much less energy the Triton kernel takes than torch (the energy panel
    only where energy was measured)."""
    pairs = triton_vs_torch_pairs(frame)
    if pairs.empty:
        interpreted = int(((frame["impl"] == "triton") & frame["interpreted"]).sum())
        why = f" ({interpreted} Triton record(s) ran interpreted and cannot be compared)" if interpreted else ""
        raise Skipped(f"no Triton/torch pair of the same case on the same device{why}")
    colours = device_colours(pairs)
    labels = [f"{r.workload} {r.precision} {r.size}" for r in pairs.itertuples()]
    panels = [("speed_ratio", "speed", "speed ratio: torch time / Triton time (log scale)")]
    if np.isfinite(pairs["energy_ratio"].to_numpy(dtype=float)).any():
        panels.append(("energy_ratio", "energy", "energy ratio: torch J / Triton J per call (log scale)"))
    figure = _figure(6.5 * len(panels) + 2, 1.8 + 0.32 * len(pairs))
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    energy_words = "" if len(panels) == 2 else f"; {_energy_reason(comparable(frame))}, so speed only"
    figure.suptitle(f"Triton vs torch per case (ratio > 1: Triton is better{energy_words})")
    y = np.arange(len(pairs))
    for ax, (column, title, xlabel) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("case (workload, precision, size)")
        values = pairs[column].to_numpy(dtype=float)
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
    figure.legend(handles=_device_handles(colours), title="device", fontsize=8, loc="outside lower center",
                  ncols=min(len(colours), 3))
    caption = ("Each bar is one case measured both ways on one device: right of 1, the Triton kernel is faster "
               "(or uses fewer joules per call) than torch; left of 1, slower.")
    return Plot("triton_vs_torch", "Triton vs torch: speed" + (" and energy ratios" if len(panels) == 2 else
                                                              " ratios (energy measured on no pair)"), figure, caption)


def history_changes(frame: pd.DataFrame, metric: str = "units_per_s") -> pd.DataFrame:
    """Each benchmark (at each setting, where `frame` has them) run two or more times: its first and last value
    of `metric`, the change, and its runs, biggest change (either way) first."""
    if metric not in frame.columns:
        raise ValueError(f"metric must be a column of the run table, got {metric!r}")
    rows = frame[~frame["interpreted"] & frame[metric].notna() & frame["run_started"].notna()]
    rows = rows.sort_values("run_started", kind="stable")
    changes = []
    for key, series in rows.groupby(IDENTITY, sort=True):  # a sweep's settings apart (the setting is in IDENTITY)
        if series["run_started"].nunique() < 2:
            continue
        first, last = series[metric].iloc[0], series[metric].iloc[-1]
        changes.append({**dict(zip(IDENTITY, key)), "unit": series["unit"].iloc[-1] or "units",
                        "runs": series["run_started"].nunique(), "first": first,
                        "last": last, "change_pct": 100 * (last / first - 1) if first else math.nan,
                        "when": list(series["run_started"]), "values": list(series[metric])})
    table = pd.DataFrame(changes)
    if table.empty:
        return table
    size = np.abs(np.log(table["last"] / table["first"]).replace([np.inf, -np.inf], np.nan)).fillna(0)
    return table.assign(_size=size).sort_values("_size", ascending=False, kind="stable") \
        .drop(columns="_size").reset_index(drop=True)


def history(frame: pd.DataFrame, metric: str = "units_per_s") -> Plot:
    """Small multiples of a metric across runs: the benchmarks that changed most, one panel each (the report's
    table lists every benchmark), so the figure stays readable however many benchmarks there are."""
    changes = history_changes(frame, metric)
    if changes.empty:
        raise Skipped(f"history needs two or more runs of the same benchmark with {metric}; none is repeated")
    shown = changes.head(HISTORY_PANELS)
    columns = min(len(shown), 4)
    figure = _figure(3.4 * columns + 0.6, 2.6 * math.ceil(len(shown) / columns) + 1.0)
    axes = np.atleast_1d(figure.subplots(math.ceil(len(shown) / columns), columns)).ravel()
    runs = frame.loc[~frame["interpreted"], "run_started"].nunique()
    which = (f"the {len(shown)} of {len(changes)} repeated benchmarks that changed most"
             if len(changes) > len(shown) else f"all {len(changes)} repeated benchmarks")
    label = HISTORY_LABELS.get(metric, metric)
    figure.suptitle(f"History over {runs} runs: {label} of {which}")
    colours = category_colours(frame["device_name"])
    for ax, change in zip(axes, shown.itertuples()):
        ax.plot(change.when, change.values, marker="o", color=colours[change.device_name])
        setting = "" if change.setting == "default" else f" at {change.setting}"
        ax.set_title(_wrap(f"{change.workload} {change.impl} {change.precision} {change.size}{setting} · "
                           f"{change.device_name}", 44) + f"\n{change.change_pct:+.1f}% first to last", fontsize=7)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=2, maxticks=5))
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _fmt_si(value)))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("run start (UTC)", fontsize=7)
        ax.set_ylabel(label.replace("units", change.unit), fontsize=7)
        low, high = min(change.values), max(change.values)
        margin = 0.15 * ((high - low) or abs(high) or 1.0)  # a flat series gets a band around it, not a line at 0
        ax.set_ylim(low - margin, high + margin)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    caption = (f"One panel per benchmark ({which}), its {label} in each run, oldest left; each panel has its own "
               "y scale, and its title gives the change from the first run to the last.")
    if len(changes) > len(shown):
        caption += " The History table lists every repeated benchmark."
    return Plot("history", f"History across {runs} runs", figure, caption)


#: The crossover figure draws at most this many maps; the report's crossover table lists them all.
CROSSOVER_PANELS = 6


def crossover(records: pd.DataFrame) -> Plot:
    """The crossover map (wattbench.report.crossover): per map a precision x batch heatmap of energy per unit
    relative to the dense baseline (blue: less, red: more, on a log scale), the winner at each batch boxed, the
    precisions outside the accuracy budget hatched; time per unit where energy is missing, as the panel says."""
    from wattbench.report.crossover import ENERGY, crossover_maps

    maps = crossover_maps(records)
    if not maps:
        raise Skipped("no inference workload that can be compared ran at two or more precisions")
    shown = maps[:CROSSOVER_PANELS]
    columns = min(len(shown), 2)
    panel_rows = math.ceil(len(shown) / columns)
    tallest = max(len(m.precisions) for m in shown)
    figure = _figure(6.4 * columns, panel_rows * (1.4 + 0.45 * tallest) + 0.8)
    axes = np.atleast_1d(figure.subplots(panel_rows, columns, squeeze=False)).ravel()
    figure.suptitle("Crossover map: energy per unit over the dense baseline's\n(lower is better; winner boxed)")
    colours = matplotlib.colormaps["RdBu_r"]
    limit = math.log(4)
    image = None
    for ax, found in zip(axes, shown):
        grid = np.full((len(found.precisions), len(found.batches)), np.nan)
        for i, precision in enumerate(found.precisions):
            for j, batch in enumerate(found.batches):
                cell = found.cells.get((precision, batch))
                if cell is not None and cell.relative > 0:
                    grid[i, j] = math.log(cell.relative)
        image = ax.imshow(np.clip(grid, -limit, limit), cmap=colours, vmin=-limit, vmax=limit, aspect="auto")
        for i, precision in enumerate(found.precisions):
            for j, batch in enumerate(found.batches):
                cell = found.cells.get((precision, batch))
                if cell is None:
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=6, color="0.4")
                    continue
                text = f"{cell.relative:.2f}x" if math.isfinite(cell.relative) else _fmt_si(cell.value)
                if cell.outside_budget:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                                              edgecolor="0.35", linewidth=0))
                    text += "\noutside budget"
                won = found.winners.get(batch) == precision
                ax.text(j, i, text, ha="center", va="center", fontsize=7, fontweight="bold" if won else "normal")
                if won:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                                              edgecolor="black", linewidth=2))
        ax.set_xticks(range(len(found.batches)), [f"{b:g}" for b in found.batches], fontsize=8)
        ax.set_yticks(range(len(found.precisions)), found.precisions, fontsize=8)
        ax.set_xlabel("batch size")
        measure = "J/unit" if found.measure == ENERGY else "s/unit (energy not measured)"
        ax.set_title(_wrap(f"{found.title}: {measure} vs {found.baseline or 'no baseline'}", 64), fontsize=8)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    bar = figure.colorbar(image, ax=axes[:len(shown)].tolist(), shrink=0.8, label="relative to the baseline")
    ticks = [0.25, 0.5, 1, 2, 4]
    bar.set_ticks([math.log(t) for t in ticks], labels=[f"{t:g}x" for t in ticks])
    caption = ("Each cell is a precision's energy per unit at a batch size over the dense baseline's at that batch "
               "(under 1x: less energy); the boxed cell in each column is the winner among the precisions inside the "
               "accuracy budget; hatched cells are outside it and never win.")
    if any(m.measure != ENERGY for m in shown):
        caption += " A panel saying s/unit compares time per unit: energy was not measured for all its cells."
    if len(maps) > len(shown):
        caption += f" {len(maps) - len(shown)} more map(s) in the Crossover table."
    return Plot("crossover", "Crossover map: which precision wins at each batch size", figure, caption)
