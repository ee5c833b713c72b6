"""The batch curve: energy per token against batch size for prefill and decode, a line per device, precision and
implementation; throughput where energy was measured nowhere; skipped, with the reason, rather than an empty frame."""

import math
from pathlib import Path

import pytest

from wattbench.report import plots
from wattbench.report.load import load_runs

DATA = Path(__file__).parent / "data" / "report"


@pytest.fixture(scope="module")
def frame():
    return load_runs([DATA / "fixture_llm_h100.json", DATA / "fixture_llm_l4.json"]).frame


def test_a_line_per_device_precision_and_impl_across_the_batch_sizes(frame):
    plot = plots.batch_curve(frame)
    assert plot.name == "batch_curve" and "J" in plot.figure.axes[0].get_ylabel()
    decode = frame[(frame["workload"] == "llm.decode") & frame["energy_measured"]]
    panel = next(ax for ax in plot.figure.axes if ax.get_title().startswith("llm.decode"))
    lines = decode.groupby(["device_name", "precision", "impl"]).ngroups
    assert len(panel.get_lines()) == lines
    for line in panel.get_lines():
        assert sorted(line.get_xdata()) == sorted(set(decode["batch_size"]))
    assert "0.455 J/token at batch 8" in plot.caption


def test_throughput_where_energy_was_measured_nowhere(frame):
    unmeasured = frame.assign(energy_measured=False, joules_per_unit=math.nan)
    plot = plots.batch_curve(unmeasured)
    assert plot.name == "batch_curve_throughput" and "throughput" in plot.figure.axes[0].get_ylabel()


def test_one_batch_size_is_no_curve(frame):
    one = frame[frame["batch_size"] == frame["batch_size"].min()]
    with pytest.raises(plots.Skipped, match="two or more batch sizes"):
        plots.batch_curve(one)
