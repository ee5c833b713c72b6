"""Every figure has a title, labelled axes, its devices named and a caption; none is an empty frame (missing
energy draws throughput instead), notes stay off the data, and matplotlib draws each without a layout warning."""

import io
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from wattbench.report import plots
from wattbench.report.load import load_runs, load_trace
from wattbench.specs import load_specs

DATA = Path(__file__).parent / "data" / "report"
CPU, H100, L4 = DATA / "cpu_run.json", DATA / "fixture_h100.json", DATA / "fixture_l4.json"
TRACE = DATA / "fixture_h100_trace.csv"
H100_NAME, L4_NAME = "TEST-FIXTURE NVIDIA H100 80GB HBM3", "TEST-FIXTURE NVIDIA L4"


@pytest.fixture(scope="module")
def frame():
    return load_runs([CPU, H100, L4]).frame


@pytest.fixture(scope="module")
def cpu_frame():
    return load_runs([CPU]).frame


def visible_axes(figure):
    return [ax for ax in figure.axes if ax.get_visible()]


def texts(artists) -> str:
    return " ".join(t.get_text() for t in artists).replace("\n", " ")


def legend_texts(figure) -> list[str]:
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend())]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def has_data(ax) -> bool:
    return bool(ax.patches or ax.get_lines() or any(len(c.get_offsets()) for c in ax.collections))


def check_plot(plot: plots.Plot, devices: list[str]):
    """A title, labelled axes with data in each, every device named, a caption, and a clean draw."""
    figure = plot.figure
    assert plot.name and plot.title and plot.caption
    assert figure._suptitle is not None and figure._suptitle.get_text()
    for ax in visible_axes(figure):
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
        assert has_data(ax), f"{plot.name}: an empty frame: {ax.get_title()}"
    named = " ".join([texts(ax.title for ax in figure.axes), figure._suptitle.get_text(), *legend_texts(figure)])
    for device in devices:
        assert device in named.replace("\n", " "), f"{plot.name} does not name {device}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied": a figure too small for its parts
        figure.savefig(io.BytesIO(), format="png", dpi=40)


def test_work_per_joule_has_a_bar_per_measured_device_and_names_those_without_energy(frame):
    plot = plots.work_per_joule(frame)
    check_plot(plot, ["AMD EPYC", H100_NAME, L4_NAME])
    assert plot.name == "work_per_joule" and "AMD EPYC" in plot.caption
    train, infer = visible_axes(plot.figure)
    assert (train.get_title(), infer.get_title()) == ("training-style", "inference-style")
    assert "AMD EPYC: energy not measured (no bar)" in legend_texts(plot.figure)
    for ax, workload in ((train, "gemm.train"), (infer, "gemm.infer")):
        assert [t.get_text() for t in ax.get_yticklabels()] == [f"{workload} (tokens)"]
        widths = [bar.get_width() for container in ax.containers for bar in container]
        expected = [frame[(frame["device_name"] == d) & (frame["workload"] == workload)]["units_per_joule"].max()
                    for d in (H100_NAME, L4_NAME)]
        assert widths == pytest.approx(expected)


def test_without_energy_the_work_figure_draws_throughput_and_says_so(cpu_frame):
    plot = plots.work_per_joule(cpu_frame)
    check_plot(plot, ["AMD EPYC"])
    assert plot.name == "throughput" and "energy measured on no device" in plot.title
    assert "Throughput, not per joule" in plot.figure._suptitle.get_text()
    assert "throughput (units/s" in visible_axes(plot.figure)[0].get_xlabel()
    compared = cpu_frame[~cpu_frame["interpreted"]]
    widths = sorted(bar.get_width() for ax in plot.figure.axes for c in ax.containers for bar in c)
    assert widths == pytest.approx(sorted(compared.groupby("workload")["units_per_s"].max()))


def test_latency_vs_energy_plots_every_inference_point_and_a_frontier_per_device(frame):
    plot = plots.latency_vs_energy(frame)
    check_plot(plot, [H100_NAME, L4_NAME])
    (ax,) = visible_axes(plot.figure)
    assert plot.name == "latency_vs_energy" and ax.get_xscale() == ax.get_yscale() == "log"
    measured = frame[(frame["style"] == "infer") & frame["energy_measured"] & ~frame["interpreted"]]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(measured)
    assert len(ax.get_lines()) == 2  # one frontier per device with energy
    assert "AMD EPYC" not in " ".join(legend_texts(plot.figure))


def test_without_energy_latency_is_drawn_against_throughput_for_workloads_of_several_sizes(cpu_frame):
    plot = plots.latency_vs_energy(cpu_frame)
    check_plot(plot, ["AMD EPYC"])
    assert plot.name == "latency_vs_throughput" and "energy measured on no device" in plot.title
    (ax,) = visible_axes(plot.figure)
    assert ax.get_title() == "gemm.infer" and ax.get_ylabel() == "throughput (tokens/s)"
    compared = cpu_frame[(cpu_frame["workload"] == "gemm.infer") & ~cpu_frame["interpreted"]]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(compared)


def test_batch_labels_are_shared_by_coinciding_points_and_never_stacked():
    points = pd.DataFrame({"batch": [16.0, 16.0, 16.0, 1.0], "median_ms": [1.0, 1.05, 3.0, 1.0],
                           "joules_per_unit": [0.5, 0.52, 0.5, 0.5]})
    # The first two are 2% apart (one label for both), the third 3x slower (its own); batch 1 has its own.
    assert plots._batch_labels(points, "joules_per_unit") == [(1.0, 1.0, 0.5), (16.0, 1.0, 0.5), (16.0, 3.0, 0.5)]


@pytest.mark.parametrize("low, high, expected", [
    (2.8e-4, 4.8e-4, {"0.0003", "0.0004"}),  # no 2 or 5 in the span: its 3 and 4 named
    (0.0098, 0.019, {"0.012", "0.014", "0.016", "0.018"}),  # no whole digit but 0.01: matplotlib's finer ticks
    (0.011, 0.1, {"0.02", "0.05"}),  # about a decade: 2s and 5s only, never a crowd of 7s, 8s and 9s
])
def test_an_axis_spanning_less_than_a_decade_still_has_labelled_ticks(tmp_path, low, high, expected):
    figure = plots._figure(4, 3)
    ax = figure.subplots()
    ax.scatter([1, 2], [low, high])
    plots._log_axes(ax)
    figure.savefig(tmp_path / "axis.png")
    bottom, top = ax.get_ylim()
    labels = {t.get_text() for t in ax.get_yticklabels(minor=True)
              if t.get_text() and bottom <= t.get_position()[1] <= top}
    assert labels == expected


def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({"ms": [1.0, 2.0, 3.0, 2.5, 4.0], "j": [5.0, 3.0, 1.0, 4.0, 1.0]})
    front = plots.pareto_front(points, "ms", "j")
    assert list(zip(front["ms"], front["j"])) == [(1.0, 5.0), (2.0, 3.0), (3.0, 1.0)]


def test_roofline_names_ceilings_and_a_missing_spec_in_titles_never_over_the_data(frame):
    plot = plots.roofline(frame, load_specs())
    check_plot(plot, ["AMD EPYC", H100_NAME, L4_NAME])
    axes = {ax.get_title().split("\n")[0]: ax for ax in visible_axes(plot.figure)}
    assert len(axes) == 3
    h100, spec = axes[H100_NAME], load_specs().find(H100_NAME)
    assert not h100.texts  # the ceilings' figures are in the title, not over the points
    assert (f"ceilings bf16 {spec.peak_for('bf16'):g}, fp32 {spec.peak_for('fp32'):g} TFLOP/s, "
            f"{spec.memory_bandwidth_gbps:g} GB/s") in h100.get_title().replace("\n", " ")
    assert sorted(max(line.get_ydata()) for line in h100.get_lines()) == pytest.approx(
        sorted(spec.peak_for(p) for p in ("bf16", "fp32")))
    assert {"bf16 ceiling", "fp32 ceiling"} <= set(legend_texts(plot.figure))
    cpu = axes["AMD EPYC"]
    assert "no spec matches" in cpu.get_title() and not cpu.texts and not cpu.get_lines()
    points = frame[(frame["device_name"] == "AMD EPYC") & ~frame["interpreted"]]
    assert sum(len(c.get_offsets()) for c in cpu.collections) == len(points)
    assert "gemm" in legend_texts(plot.figure)  # points coloured by op, named in the legend


def test_power_over_time_shades_each_benchmarks_windows():
    run = json.loads(H100.read_text())
    plot = plots.power_over_time(load_trace(TRACE), run)
    check_plot(plot, [H100_NAME])
    (ax,) = visible_axes(plot.figure)
    assert sorted(legend_texts(plot.figure)) == ["gpu0:energy (counter, ΔJ/Δt)", "gpu0:power (instant)"]
    spans = sum(len(b["extra_info"]["energy"]["window_spans_s"]) for b in run["benchmarks"])
    assert len(ax.patches) == spans
    first = run["benchmarks"][0]["extra_info"]
    assert f"{first['workload']} {first['impl']} {first['precision']} {first['size']}" in texts(ax.texts)
    assert "Cropped" not in plot.caption  # the trace spans the run


def test_a_replay_trace_longer_than_the_run_is_cropped_to_the_run(tmp_path):
    """A replay log covers far more than the run (here 1,000 s around it): the plot shows the run's span."""
    run = json.loads(H100.read_text())
    end = max(e for b in run["benchmarks"] for _, e in b["extra_info"]["energy"]["window_spans_s"])
    rows = ["timestamp_s,source,channel,method,watts,joules"]
    rows += [f"{t},replay,replay,replay,{300 + (t % 7)}," for t in range(-500, 501)]
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    plot = plots.power_over_time(load_trace(tmp_path / "trace.csv"), run)
    (ax,) = visible_axes(plot.figure)
    low, high = ax.get_xlim()
    assert -0.05 * end <= low <= 0 and end <= high <= 1.05 * end
    (line,) = ax.get_lines()
    assert min(line.get_xdata()) >= low and max(line.get_xdata()) <= high
    assert f"Cropped to the run (0 to {end:.4g} s) from a trace of -500 to 500 s" in plot.caption


def test_power_over_time_without_window_times_says_so_in_the_caption():
    run = json.loads(H100.read_text())
    for bench in run["benchmarks"]:
        del bench["extra_info"]["energy"]["window_spans_s"]
    run["wattbench"]["ended_utc"] = "2026-11-20T10:01:00+00:00"  # 60 s after its start: the span to show
    plot = plots.power_over_time(load_trace(TRACE), run)
    (ax,) = visible_axes(plot.figure)
    assert "No band" in plot.caption and not ax.patches
    assert ax.get_xlim()[1] == pytest.approx(61.2)


@pytest.mark.parametrize("content, reason", [
    (None, "no power trace given"),
    ("timestamp_s,source,channel,method,watts,joules\n", "holds no readings"),
    ("timestamp_s,source,channel,method,watts,joules\n0,nvml,gpu0:energy,counter,,4.4\n", "no power readings"),
    ("timestamp_s,source,channel,method,watts,joules\n900,nvml,gpu0:power,instant,80,\n", "no reading within the run"),
])
def test_power_over_time_is_skipped_with_a_reason(tmp_path, content, reason):
    trace = None
    if content is not None:
        (tmp_path / "trace.csv").write_text(content)
        trace = load_trace(tmp_path / "trace.csv")
    with pytest.raises(plots.Skipped, match=reason):
        plots.power_over_time(trace, json.loads(H100.read_text()))


def test_triton_vs_torch_has_a_bar_per_pair_with_its_ratios(frame):
    pairs = plots.triton_vs_torch_pairs(frame)
    assert set(pairs["device_name"]) == {H100_NAME, L4_NAME}  # the CPU's Triton records were interpreted
    plot = plots.triton_vs_torch(frame)
    check_plot(plot, [H100_NAME, L4_NAME])
    speed, energy = visible_axes(plot.figure)
    assert [b.get_x() + b.get_width() for b in speed.patches] == pytest.approx(pairs["speed_ratio"].tolist())
    assert [b.get_x() + b.get_width() for b in energy.patches] == pytest.approx(pairs["energy_ratio"].tolist())
    assert len(speed.get_yticklabels()) == len(pairs)


def test_triton_vs_torch_without_energy_draws_speed_alone(tmp_path):
    run = json.loads(H100.read_text())
    for bench in run["benchmarks"]:
        bench["extra_info"]["energy"] = {"reason": "no power source", "joules_per_call": None}
    (tmp_path / "run.json").write_text(json.dumps(run))
    plot = plots.triton_vs_torch(load_runs([tmp_path / "run.json"]).frame)
    check_plot(plot, [H100_NAME])
    (speed,) = visible_axes(plot.figure)
    assert speed.get_title() == "speed" and "speed only" in plot.figure._suptitle.get_text()


def test_triton_vs_torch_is_skipped_when_every_triton_record_was_interpreted(cpu_frame):
    with pytest.raises(plots.Skipped, match="6 Triton record"):
        plots.triton_vs_torch(cpu_frame)


def later_runs(tmp_path, count: int) -> list[Path]:
    """`count` runs of both GPU fixtures a day apart, one benchmark per device getting 10% faster each run."""
    paths = []
    for day in range(count):
        for source in (H100, L4):
            run = json.loads(source.read_text())
            run["wattbench"]["started_utc"] = f"2026-12-{day + 1:02d}T00:00:00+00:00"
            info = run["benchmarks"][0]["extra_info"]
            info["units_per_s"] *= 1.1 ** day
            paths.append(tmp_path / f"{source.stem}-{day}.json")
            paths[-1].write_text(json.dumps(run))
    return paths


def test_history_of_many_benchmarks_over_three_runs_draws_the_biggest_changes_as_small_multiples(tmp_path):
    frame = load_runs(later_runs(tmp_path, 3)).frame
    plot = plots.history(frame)
    check_plot(plot, [H100_NAME, L4_NAME])
    panels = visible_axes(plot.figure)
    assert len(panels) == plots.HISTORY_PANELS < frame["workload"].count() // 3  # 40 repeated benchmarks
    width, height = plot.figure.get_size_inches()
    assert width <= 15 and height <= 10  # sized by the panels shown, not by the benchmarks run
    assert all(len(ax.get_lines()[0].get_xdata()) == 3 for ax in panels)
    changed = [ax.get_title() for ax in panels[:2]]
    assert all("+21.0% first to last" in title for title in changed)  # the two that changed most come first
    assert "12 of 40 repeated benchmarks" in plot.caption and "History table" in plot.caption
    changes = plots.history_changes(frame)
    assert len(changes) == 40 and changes["change_pct"].iloc[0] == pytest.approx(21.0)


def test_history_needs_a_repeated_benchmark(frame):
    with pytest.raises(plots.Skipped, match="two or more runs"):
        plots.history(frame)
    with pytest.raises(ValueError, match="metric"):
        plots.history(frame, "speed")
