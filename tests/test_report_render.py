"""`wattbench report`: the answer first (verdict, phases, what was not measured, matrix), then plots and details;
every artefact written, from many devices or from one CPU run without energy."""

import importlib.util
import json
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from wattbench import cli
from wattbench.errors import UsageError
from wattbench.report import write_report
from wattbench.specs import load_specs

DATA = Path(__file__).parent / "data" / "report"
CPU, H100, L4 = DATA / "cpu_run.json", DATA / "fixture_h100.json", DATA / "fixture_l4.json"
LLM_H100, LLM_L4 = DATA / "fixture_llm_h100.json", DATA / "fixture_llm_l4.json"
TRACE = DATA / "fixture_h100_trace.csv"
H100_NAME, L4_NAME = "TEST-FIXTURE NVIDIA H100 80GB HBM3", "TEST-FIXTURE NVIDIA L4"
ALL_PLOTS = {"work_per_joule", "latency_vs_energy", "batch_curve", "roofline", "power_over_time", "triton_vs_torch",
             "history", "crossover"}


def records(*paths):
    return sum(len(json.loads(p.read_text())["benchmarks"]) for p in paths)


def drawn_plots(out: Path) -> set[str]:
    pngs = {p.stem for p in (out / "plots").glob("*.png")}
    assert pngs == {p.stem for p in (out / "plots").glob("*.svg")}
    return pngs


@pytest.fixture(scope="module")
def many_devices(tmp_path_factory):
    """A report over a real CPU run and synthetic GPU fixtures (kernels, and a model a day later), with the H100
    kernel fixture's trace."""
    out = tmp_path_factory.mktemp("report") / "many"
    written = write_report([H100, CPU, L4, LLM_H100, LLM_L4], out, trace=TRACE)
    return written, out


def test_report_over_several_devices_writes_every_artefact(many_devices):
    written, out = many_devices
    assert written.out == out and written.records == records(H100, CPU, L4, LLM_H100, LLM_L4) and written.runs == 5
    assert set(written.files) == {p for p in out.rglob("*") if p.is_file()} - {out / "report-inputs.json"}
    table = pd.read_csv(out / "benchmarks.csv")
    assert len(table) == records(H100, CPU, L4, LLM_H100, LLM_L4)
    assert (out / "benchmarks.parquet").exists() == (importlib.util.find_spec("pyarrow") is not None)
    assert drawn_plots(out) == ALL_PLOTS - {"history"}  # one run per device and benchmark: no history yet
    for png in (out / "plots").glob("*.png"):
        assert matplotlib.image.imread(png).shape[0] > 100
    assert (out / "summary.md").exists() and (out / "report.html").exists()


def headings(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("#")]


def test_summary_answers_first_then_plots_then_details(many_devices):
    _, out = many_devices
    summary = (out / "summary.md").read_text()
    assert headings(summary) == [
        "# wattbench report", "## Verdict", "### Train vs prefill vs decode, per watt",
        "### What could not be measured", "## Device x workload", "## Crossover: which precision wins at each batch size",
        "## Plots", "## Details", "### Runs",
        "### Device rankings per workload", "### Triton vs torch", "### Settings compared", "### Compared records",
        "### Interpreted records (not compared)", "### Notes"]
    assert "TEST FIXTURE: synthetic numbers" in summary.split("## Verdict")[0]
    details = summary.split("## Details")[1]
    assert details.startswith("\n\n<details><summary>Every record and note: Runs, Device rankings per workload,")
    assert details.endswith("\n\n</details>\n")  # collapsed where the Markdown is rendered
    verdict = summary.split("## Verdict")[1].split("###")[0]
    assert "Wins: TEST-FIXTURE NVIDIA L4 4 of 5, TEST-FIXTURE NVIDIA H100 80GB HBM3 1 of 5." in verdict
    rows = [line for line in verdict.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| gemm.train", "| gemm.infer", "| llm.train", "| llm.prefill",
                                                 "| llm.decode"]
    decode = rows[-1].split(" | ")
    assert decode[1:3] == [H100_NAME, "torch bf16 125m-B8-P512-T64 at pl400w"]  # the power-limited setting wins
    assert decode[4].startswith("+") and f"over {L4_NAME}: torch bf16 125m-B8-P512-T64" in decode[4]
    assert decode[5] == "clear lead |"
    phases = summary.split("### Train vs prefill vs decode, per watt")[1].split("###")[0]
    assert f"| 125m | {H100_NAME} at pl400w | tokens/J | - | - |" in phases
    assert "(x3.03 of train)" in phases  # prefill over training on the H100 fixture
    # Said once, in the verdict's list, never per section:
    assert summary.count("no power source is implemented yet") == 1
    assert "Energy not measured on AMD EPYC (6 compared record(s))" in summary
    assert "6 interpreted Triton record(s)" in summary
    matrix = summary.split("## Device x workload")[1].split("## Crossover")[0]
    assert "| gemm.train | tokens/J | energy not measured | 8087 | **8896** |" in matrix
    assert "| llm.train | tokens/J | not run |" in matrix
    assert "![Roofline per device](plots/roofline.png)" in summary
    assert "Not drawn: history: history needs two or more runs" in summary
    assert "| triton* |" not in summary and "| triton |" in summary  # interpreted records listed apart


def test_html_page_puts_the_verdict_first_and_is_self_contained(many_devices):
    _, out = many_devices
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(drawn_plots(out))
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script src" not in page
    order = [page.index(marker) for marker in ('<section id="verdict">', '<section id="phases">',
                                               '<section id="unmeasured">', '<section id="matrix">',
                                               '<section id="plots">', '<section id="details">')]
    assert order == sorted(order)
    details = page.split('<section id="details">')[1]
    assert details.count("<details ") == 7 and "<details open" not in details
    assert '<table id="records-table" class="sortable">' in page and 'data-table="records-table"' in page
    assert '<td style="background:rgba(0,114,178,0.58)" class="best">8896</td>' in page
    # 8087 is 10% under the row's best: log10(8087/8896) = -0.041 of the one decade to the lightest shade.
    assert '<td style="background:rgba(0,114,178,0.56)">8087</td>' in page
    for plot in drawn_plots(out):
        assert f'<figure id="plot-{plot}">' in page
    assert page.count("<figcaption>") == len(drawn_plots(out))


def test_single_cpu_run_without_energy_still_answers(tmp_path, capsys):
    out = tmp_path / "reports" / CPU.stem
    assert cli.main(["report", str(CPU), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "plot power_over_time skipped: no power trace given" in printed
    assert "plot triton_vs_torch skipped" in printed and "interpreted" in printed
    assert str(out / "summary.md") in printed
    # throughput, not empty frames; the crossover compares the CPU's fp32, bf16 and int8w by time per unit
    assert drawn_plots(out) == {"throughput", "latency_vs_throughput", "roofline", "crossover"}
    summary = (out / "summary.md").read_text()
    assert "Energy was measured on no device, so every workload is ranked by throughput (units/s)" in summary
    assert "One device, AMD EPYC: the verdict compares its implementations" in summary
    assert "tokens/s ±" in summary.split("### Train vs prefill")[0]
    assert "One device (AMD EPYC): its best value per workload is the verdict's." in summary
    assert "Energy not measured on AMD EPYC" in summary and "no power source" in summary
    assert len(pd.read_csv(out / "benchmarks.csv")) == records(CPU)


def later_runs(folder: Path, count: int) -> list[Path]:
    """`count` runs of the two GPU kernel fixtures a day apart, one benchmark per device 10% faster each run."""
    paths = []
    for day in range(count):
        for source in (H100, L4):
            run = json.loads(source.read_text())
            run["wattbench"]["started_utc"] = f"2026-12-{day + 1:02d}T00:00:00+00:00"
            run["benchmarks"][0]["extra_info"]["units_per_s"] *= 1.1 ** day
            paths.append(folder / f"{source.stem}-{day}.json")
            paths[-1].write_text(json.dumps(run))
    return paths


def test_history_over_three_runs_is_drawn_and_every_change_tabled(tmp_path):
    assert write_report(later_runs(tmp_path, 3), tmp_path / "out").out == tmp_path / "out"
    assert "history" in drawn_plots(tmp_path / "out")
    height, width, _ = matplotlib.image.imread(tmp_path / "out" / "plots" / "history.png").shape
    assert height > 400 and width > 800  # small multiples, not a strip
    summary = (tmp_path / "out" / "summary.md").read_text()
    history = summary.split("### History")[1].split("###")[0]
    assert len([line for line in history.splitlines() if line.startswith("| gemm.")]) == 40
    assert "+21.0%" in history


def test_a_trace_is_drawn_against_the_run_it_was_saved_beside(tmp_path):
    run = tmp_path / "h100.json"
    run.write_text(H100.read_text())
    trace = tmp_path / "h100.trace.csv"
    trace.write_text(TRACE.read_text())
    assert write_report([CPU, run], tmp_path / "out", trace=trace).out == tmp_path / "out"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"Power over time of {H100_NAME}" in summary


def test_a_bad_or_missing_run_file_is_an_error_unless_bad_files_are_skipped(tmp_path, capsys):
    broken, missing = tmp_path / "broken.json", tmp_path / "missing.json"
    broken.write_text("{")
    with pytest.raises(UsageError, match=rf"^{broken}: not valid JSON .*\(1 other file\(s\) too\); pass --skip-bad"):
        write_report([CPU, broken, missing], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    written = write_report([broken, CPU, missing], tmp_path / "out", skip_bad=True)
    assert written.runs == 1 and [note.split(":")[0] for note in written.notes] == [f"skipped {broken}",
                                                                                    f"skipped {missing}"]
    assert cli.main(["report", str(broken), str(CPU), str(missing), "--out", str(tmp_path / "out"), "--skip-bad"]) == 0
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
    skipped = write_report([H100], tmp_path / "out", trace=trace).skipped_plots
    assert skipped["power_over_time"].startswith("the power trace holds no readings")
    assert cli.main(["report", str(H100), "--out", str(tmp_path / "out"), "--trace", str(trace)]) == 0
    assert "plot power_over_time skipped: the power trace holds no readings" in capsys.readouterr().out


def test_a_report_is_named_after_its_inputs_and_never_replaces_another_unasked(tmp_path, monkeypatch, capsys):
    from wattbench.report.render import default_report_dir

    monkeypatch.chdir(tmp_path)
    assert default_report_dir([CPU]) == Path("results/reports") / CPU.stem
    pair = default_report_dir([CPU, H100])
    assert pair == default_report_dir([H100, CPU]) and pair.name.startswith("combined-2-runs-")
    assert pair != default_report_dir([CPU, L4])
    out = tmp_path / "out"
    assert write_report([CPU], out).out == out
    assert write_report([CPU], out).out == out  # the same inputs: brought up to date
    with pytest.raises(UsageError, match=r"'.*out' holds the report of other run files \(1 of them\): choose another "
                                         r"--out, or pass --force"):
        write_report([H100], out)
    assert write_report([H100], out, force=True).out == out
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


def test_the_report_matches_devices_in_the_spec_table_it_is_given(tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"format": "wattbench-device-specs/1", "devices": [
        {"name": "Any device", "kind": "cpu", "match": [".*"],
         "peak_tflops": {"fp32": {"value": 2.0, "source": "test figure"}}}]}))
    write_report([CPU], tmp_path / "given", specs=load_specs(mine))
    assert set(pd.read_csv(tmp_path / "given" / "benchmarks.csv")["spec_name"]) == {"Any device"}
    write_report([CPU], tmp_path / "shipped")
    assert "Any device" not in set(pd.read_csv(tmp_path / "shipped" / "benchmarks.csv")["spec_name"].dropna())
    assert cli.main(["report", str(CPU), "--specs", str(mine), "--out", str(tmp_path / "command")]) == 0
    assert set(pd.read_csv(tmp_path / "command" / "benchmarks.csv")["spec_name"]) == {"Any device"}
    mine.write_text(json.dumps({"format": "wattbench-device-specs/1", "devices": [
        {"name": "X", "peak_tflops": {"fp32": {"value": 2.0}}}]}))  # a figure without its source
    capsys.readouterr()
    assert cli.main(["report", str(CPU), "--specs", str(mine), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wattbench: error: {mine}") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
