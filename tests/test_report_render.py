"""`wattbench report`: every artefact written, from many devices or from one CPU run without energy."""

import importlib.util
import json
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from wattbench.errors import UsageError
from wattbench.report import write_report

DATA = Path(__file__).parent / "data" / "report"
CPU, H100, L4 = DATA / "cpu_run.json", DATA / "fixture_h100.json", DATA / "fixture_l4.json"
TRACE = DATA / "fixture_h100_trace.csv"
ALL_PLOTS = {"work_per_joule", "latency_vs_energy", "roofline", "power_over_time", "triton_vs_torch", "history"}


def records(*paths):
    return sum(len(json.loads(p.read_text())["benchmarks"]) for p in paths)


def drawn_plots(out: Path) -> set[str]:
    pngs = {p.stem for p in (out / "plots").glob("*.png")}
    assert pngs == {p.stem for p in (out / "plots").glob("*.svg")}
    return pngs


@pytest.fixture(scope="module")
def many_devices(tmp_path_factory):
    """A report over a real CPU run and two synthetic GPU fixtures, with the H100 fixture's trace."""
    out = tmp_path_factory.mktemp("report") / "many"
    status = write_report([H100, CPU, L4], out, trace=TRACE)
    return status, out


def test_report_over_several_devices_writes_every_artefact(many_devices, capsys):
    status, out = many_devices
    assert status == 0
    table = pd.read_csv(out / "benchmarks.csv")
    assert len(table) == records(H100, CPU, L4)
    assert (out / "benchmarks.parquet").exists() == (importlib.util.find_spec("pyarrow") is not None)
    assert drawn_plots(out) == ALL_PLOTS - {"history"}  # one run per device: no history yet
    for png in (out / "plots").glob("*.png"):
        assert matplotlib.image.imread(png).shape[0] > 100
    assert (out / "summary.md").exists() and (out / "report.html").exists()


def test_summary_has_rankings_pairs_and_marks_interpreted_records(many_devices):
    _, out = many_devices
    summary = (out / "summary.md").read_text()
    for heading in ("## Runs", "## Devices for gemm.infer", "## Devices for gemm.train", "## Triton vs torch",
                    "## Benchmarks", "## Notes", "## Plots"):
        assert heading in summary
    assert "| rank | device |" in summary
    assert "| triton* |" in summary and "interpreted: Triton ran through its interpreter" in summary
    assert "TEST FIXTURE: synthetic numbers" in summary
    assert "plot skipped: history" in summary
    assert "![Roofline per device](plots/roofline.png)" in summary


def test_html_page_is_self_contained(many_devices):
    _, out = many_devices
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(drawn_plots(out))
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "<table" in page and "TEST-FIXTURE NVIDIA L4" in page


def test_single_cpu_run_without_energy_still_reports(tmp_path, capsys):
    out = tmp_path / "reports" / CPU.stem
    assert write_report([CPU], out) == 0
    printed = capsys.readouterr().out
    assert "plot power_over_time skipped: no power trace given" in printed
    assert "plot triton_vs_torch skipped" in printed and "interpreted" in printed
    assert str(out / "summary.md") in printed
    assert drawn_plots(out) == {"work_per_joule", "latency_vs_energy", "roofline"}
    summary = (out / "summary.md").read_text()
    assert "energy was not measured for gemm.infer on any device" in summary
    assert "energy not measured: no power source" in summary
    assert len(pd.read_csv(out / "benchmarks.csv")) == records(CPU)


def test_a_bad_or_missing_run_file_is_an_error_unless_bad_files_are_skipped(tmp_path, capsys):
    broken, missing = tmp_path / "broken.json", tmp_path / "missing.json"
    broken.write_text("{")
    with pytest.raises(UsageError, match=rf"^{broken}: not valid JSON .*\(1 other file\(s\) too\); pass --skip-bad"):
        write_report([CPU, broken, missing], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert write_report([broken, CPU, missing], tmp_path / "out", skip_bad=True) == 0
    captured = capsys.readouterr()
    assert f"wattbench: skipped {broken}: not valid JSON" in captured.err
    assert f"wattbench: skipped {missing}: cannot read" in captured.err and "wattbench: skipped" not in captured.out
    assert f"run file skipped: {broken}" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("content, pattern", [
    (None, r"absent\.csv: cannot read: No such file"),
    ("", r"trace\.csv: is empty"),
    ("time,watts\n0,1\n", r"trace\.csv: not a power trace: no column timestamp_s, source, channel, method, joules"),
    ("timestamp_s,source,channel,method,watts,joules\n0,nvml,g,instant,abc,\n",
     r"trace\.csv: row 1: watts: expected a finite number, got 'abc'"),
    ("timestamp_s,source,channel,method,watts,joules\n0,nvml,g,instant,1,\nnan,nvml,g,instant,1,\n",
     r"trace\.csv: row 2: timestamp_s: expected a finite number"),
])
def test_a_trace_that_cannot_be_read_is_refused_before_anything_is_written(tmp_path, content, pattern):
    trace = tmp_path / ("absent.csv" if content is None else "trace.csv")
    if content is not None:
        trace.write_text(content)
    with pytest.raises(UsageError, match=pattern):
        write_report([H100], tmp_path / "out", trace=trace)
    assert not (tmp_path / "out").exists()


def test_an_empty_trace_skips_the_plot_with_the_reason(tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp_s,source,channel,method,watts,joules\n")
    assert write_report([H100], tmp_path / "out", trace=trace) == 0
    assert "plot power_over_time skipped: the power trace holds no readings" in capsys.readouterr().out


def test_a_report_is_named_after_its_inputs_and_never_replaces_another_unasked(tmp_path, monkeypatch, capsys):
    from wattbench.report.render import default_report_dir

    monkeypatch.chdir(tmp_path)
    assert default_report_dir([CPU]) == Path("results/reports") / CPU.stem
    pair = default_report_dir([CPU, H100])
    assert pair == default_report_dir([H100, CPU]) and pair.name.startswith("combined-2-runs-")
    assert pair != default_report_dir([CPU, L4])
    out = tmp_path / "out"
    assert write_report([CPU], out) == 0
    assert write_report([CPU], out) == 0  # the same inputs: brought up to date
    with pytest.raises(UsageError, match=r"'.*out' holds the report of other run files \(1 of them\): choose another "
                                         r"--out, or pass --force"):
        write_report([H100], out)
    assert write_report([H100], out, force=True) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a report")
    with pytest.raises(UsageError, match=r"is not empty and holds no report of wattbench's"):
        write_report([CPU], tmp_path / "mine")


def test_no_usable_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no run files"):
        write_report([], tmp_path / "out")
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": [], "wattbench": {}}))
    with pytest.raises(UsageError, match="none of the run files"):
        write_report([tmp_path / "empty.json"], tmp_path / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot be created"):
        write_report([CPU], tmp_path / "file" / "out")
