"""Every figure has a title, labelled axes and the series it should; missing data is said, not blank."""

import json
from pathlib import Path

import pandas as pd
import pytest

from wattbench.report import plots
from wattbench.report.load import load_runs, load_trace
from wattbench.report.specs import load_specs

DATA = Path(__file__).parent / "data" / "report"
CPU, H100, L4 = DATA / "cpu_run.json", DATA / "fixture_h100.json", DATA / "fixture_l4.json"
TRACE = DATA / "fixture_h100_trace.csv"
H100_NAME, L4_NAME = "TEST-FIXTURE NVIDIA H100 80GB HBM3", "TEST-FIXTURE NVIDIA L4"


@pytest.fixture(scope="module")
def frame():
    return load_runs([CPU, H100, L4]).frame


def visible_axes(figure):
    return [ax for ax in figure.axes if ax.get_visible()]


def assert_labelled(figure):
    assert figure._suptitle is not None and figure._suptitle.get_text()
    for ax in visible_axes(figure):
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def legend_texts(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def notes(ax):
    return " ".join(t.get_text() for t in ax.texts)


def test_work_per_joule_has_a_bar_per_measured_device_and_says_where_energy_is_missing(frame):
    figure = plots.work_per_joule(frame)
    assert_labelled(figure)
    train, infer = visible_axes(figure)
    assert (train.get_title(), infer.get_title()) == ("training-style", "inference-style")
    for ax, workload in ((train, "gemm.train"), (infer, "gemm.infer")):
        assert legend_texts(ax) == [workload]
        heights = [bar.get_height() for bar in ax.containers[0]]
        expected = [frame[(frame["device_name"] == d) & (frame["workload"] == workload)]["units_per_joule"].max()
                    for d in sorted(set(frame["device_name"]))]
        assert heights == pytest.approx(expected, nan_ok=True)
        assert "energy not\nmeasured" in notes(ax)
        assert "AMD EPYC" in [t.get_text() for t in ax.get_xticklabels()]


def test_work_per_joule_without_energy_says_so_in_each_panel():
    figure = plots.work_per_joule(load_runs([CPU]).frame)
    assert_labelled(figure)
    for ax in visible_axes(figure):
        assert "energy not measured: no power source" in notes(ax)
        assert not ax.containers


def test_latency_vs_energy_plots_every_inference_point_and_a_frontier_per_device(frame):
    figure = plots.latency_vs_energy(frame)
    assert_labelled(figure)
    (ax,) = visible_axes(figure)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    measured = frame[(frame["style"] == "infer") & frame["energy_measured"] & ~frame["interpreted"]]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(measured)
    labels = " ".join(legend_texts(ax)).replace("\n", " ")
    assert f"{H100_NAME} (Pareto frontier)" in labels and f"{L4_NAME} (Pareto" in labels
    assert len(ax.get_lines()) == 2  # one frontier per device with energy
    assert "AMD EPYC" not in labels


def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({"ms": [1.0, 2.0, 3.0, 2.5, 4.0], "j": [5.0, 3.0, 1.0, 4.0, 1.0]})
    front = plots.pareto_front(points, "ms", "j")
    assert list(zip(front["ms"], front["j"])) == [(1.0, 5.0), (2.0, 3.0), (3.0, 1.0)]


def test_roofline_draws_spec_ceilings_and_notes_devices_without_a_spec(frame):
    figure = plots.roofline(frame, load_specs())
    assert_labelled(figure)
    axes = {ax.get_title().replace("\n", " "): ax for ax in visible_axes(figure)}
    assert len(axes) == 3
    h100 = next(ax for title, ax in axes.items() if title.startswith(H100_NAME))
    spec = load_specs().find(H100_NAME)
    ceilings = [text for text in legend_texts(h100) if "ceiling" in text]
    assert sorted(ceilings) == sorted(f"{p} ceiling: {spec.peak_for(p):g} TFLOP/s, {spec.memory_bandwidth_gbps:g} GB/s"
                                      for p in ("bf16", "fp32"))
    assert max(h100.get_lines()[0].get_ydata()) == pytest.approx(max(spec.peak_for(p) for p in ("bf16", "fp32")))
    cpu = axes["AMD EPYC"]
    assert "no spec matches 'AMD EPYC'" in notes(cpu) and not cpu.get_lines()
    points = frame[(frame["device_name"] == "AMD EPYC") & ~frame["interpreted"]]
    assert sum(len(c.get_offsets()) for c in cpu.collections) == len(points)


def test_power_over_time_shades_each_benchmarks_windows():
    run = json.loads(H100.read_text())
    figure = plots.power_over_time(load_trace(TRACE), run)
    assert_labelled(figure)
    (ax,) = visible_axes(figure)
    assert sorted(legend_texts(ax)) == ["gpu0:energy (counter, ΔJ/Δt)", "gpu0:power (instant)"]
    spans = sum(len(b["extra_info"]["energy"]["window_spans_s"]) for b in run["benchmarks"])
    assert len(ax.patches) == spans
    first = run["benchmarks"][0]["extra_info"]
    assert f"{first['workload']} {first['impl']} {first['precision']} {first['size']}" in notes(ax)


def test_power_over_time_without_window_times_says_so(tmp_path):
    run = json.loads(H100.read_text())
    for bench in run["benchmarks"]:
        del bench["extra_info"]["energy"]["window_spans_s"]
    figure = plots.power_over_time(load_trace(TRACE), run)
    (ax,) = visible_axes(figure)
    assert "windows not shaded" in notes(ax) and not ax.patches


@pytest.mark.parametrize("content, reason", [
    (None, "no power trace given"),
    ("timestamp_s,source,channel,method,watts,joules\n", "holds no readings"),
    ("timestamp_s,source,channel,method,watts,joules\n0,nvml,gpu0:energy,counter,,4.4\n", "no power readings"),
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
    figure = plots.triton_vs_torch(frame)
    assert_labelled(figure)
    speed, energy = visible_axes(figure)
    assert [b.get_x() + b.get_width() for b in speed.patches] == pytest.approx(pairs["speed_ratio"].tolist())
    assert [b.get_x() + b.get_width() for b in energy.patches] == pytest.approx(pairs["energy_ratio"].tolist())
    assert len(speed.get_yticklabels()) == len(pairs)
    assert sorted(legend_texts(energy)) == [H100_NAME, L4_NAME]


def test_triton_vs_torch_is_skipped_when_every_triton_record_was_interpreted():
    with pytest.raises(plots.Skipped, match="6 Triton record"):
        plots.triton_vs_torch(load_runs([CPU]).frame)


def test_history_draws_a_line_per_repeated_benchmark(tmp_path):
    later = json.loads(H100.read_text())
    later["wattbench"]["started_utc"] = "2026-12-01T00:00:00+00:00"
    (tmp_path / "later.json").write_text(json.dumps(later))
    frame = load_runs([H100, tmp_path / "later.json", CPU]).frame
    figure = plots.history(frame)
    assert_labelled(figure)
    (ax,) = visible_axes(figure)
    assert len(ax.get_lines()) == len(later["benchmarks"])
    assert all(len(line.get_xdata()) == 2 for line in ax.get_lines())
    assert all(H100_NAME in text for text in legend_texts(ax))
    with pytest.raises(plots.Skipped, match="two or more runs"):
        plots.history(load_runs([H100, CPU]).frame)
    with pytest.raises(ValueError, match="metric"):
        plots.history(frame, "speed")
