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


def test_bad_files_are_named_and_skipped(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert write_report([broken, CPU], tmp_path / "out") == 0
    assert f"skipped {broken}: not valid JSON" in capsys.readouterr().out
    assert f"run file skipped: {broken}" in (tmp_path / "out" / "summary.md").read_text()


def test_no_usable_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no run files"):
        write_report([], tmp_path / "out")
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": [], "wattbench": {}}))
    with pytest.raises(UsageError, match="none of the run files"):
        write_report([tmp_path / "empty.json"], tmp_path / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot be created"):
        write_report([CPU], tmp_path / "file" / "out")
