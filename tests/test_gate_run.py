"""`wattbench gate`, the gate of a pytest run and `save_baseline` end to end on synthetic run files: exit codes,
refusals, energy, reports (console, Markdown, $GITHUB_STEP_SUMMARY, JUnit XML)."""

import json
import re
import xml.etree.ElementTree as ET

import pytest

from wattbench import cli
from wattbench.errors import UsageError
from wattbench.gate import gate, save_baseline
from wattbench.plugin import gate_session
from wattbench.results import load_run

from test_gate_fixtures import energy, no_energy, record, run, samples, write

TRAIN = dict(workload="gemm.train", size="M512-K256-N256")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project folder with default gate settings, and no job summary unless a test sets one; the current
    folder, where `wattbench gate` reads its settings."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


FLAGS = {"time_threshold": "--time-threshold", "energy_threshold": "--energy-threshold", "markdown_out": "--markdown",
         "junit_out": "--junit"}


def run_gate(baseline, current, **options):
    """`wattbench gate BASELINE CURRENT` with `options` as its flags; the exit code."""
    args = ["gate", "--baseline", str(baseline), "--current", str(current)]
    for name, value in options.items():
        args += [f"--{name}"] if value is True else [FLAGS[name], str(value)]
    return cli.main(args)


def gate_files(root, baseline, current, **options):
    return run_gate(write(root / "base.json", baseline), write(root / "cur.json", current), **options)


def one_line_error(capsys, pattern):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wattbench: error: ") and "Traceback" not in err, err
    assert re.search(pattern, err), err


def slower(factor, seed=2):
    return [t * factor for t in samples(seed=seed)]


def test_same_code_passes_with_exit_0(root, capsys):
    assert gate_files(root, run([record(times=samples(seed=1))]), run([record(times=samples(seed=2))])) == 0
    out = capsys.readouterr().out
    assert "PASS: 0 regressions" in out and "unchanged" in out
    assert "circular block bootstrap" in out and "2000 resamples, seed 0" in out


def test_regression_fails_with_exit_1_and_reports(root, capsys, monkeypatch):
    summary = root / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    baseline = run([record(times=samples(seed=1)), record(**TRAIN, times=samples(seed=3))])
    current = run([record(times=slower(1.20)), record(**TRAIN, times=samples(seed=4))])
    code = gate_files(root, baseline, current, markdown_out=root / "out/gate.md", junit_out=root / "out/gate.xml")
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL: 1 regression" in out and "REGRESSION" in out
    markdown = (root / "out/gate.md").read_text()
    assert markdown.startswith("## wattbench gate: FAIL")
    assert "| gemm.infer-torch-fp32-M16-K512-N512 | median time" in markdown
    assert summary.read_text() == "earlier step\n" + markdown
    suite = ET.parse(root / "out/gate.xml").getroot()
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert cases["gemm.infer-torch-fp32-M16-K512-N512"].find("failure").get("message") == "regression in median time"
    assert cases["gemm.train-torch-fp32-M512-K256-N256"].find("failure") is None


def test_improvement_is_reported_and_passes(root, capsys):
    assert gate_files(root, run([record(times=samples(seed=1))]), run([record(times=slower(0.8))])) == 0
    assert "1 improvement" in capsys.readouterr().out


def test_energy_regression_at_unchanged_time(root, capsys):
    baseline = run([record(times=samples(seed=1), energy_record=energy(2.0, 1.0))])
    current = run([record(times=samples(seed=2), energy_record=energy(2.2, 1.0))])
    result = gate(baseline, current, config_root=root)
    verdicts = {m.metric: m.verdict for m in result.benchmarks[0].metrics}
    assert verdicts == {"time": "unchanged", "energy": "regression", "work_per_joule": "regression"}
    assert result.exit_code == 1


def test_energy_within_its_uncertainty_is_not_a_regression(root):
    baseline = run([record(times=samples(seed=1), energy_record=energy(2.0, 3.0))])
    current = run([record(times=samples(seed=2), energy_record=energy(2.12, 3.0))])
    metrics = gate(baseline, current, config_root=root).benchmarks[0].metrics
    assert {m.metric: m.verdict for m in metrics}["energy"] == "inconclusive"


@pytest.mark.parametrize("base_energy, cur_energy, note", [
    (no_energy("no power source: none here"), energy(), "no energy in baseline: no power source: none here"),
    (energy(method="counter"), energy(method="instant"), "energy methods differ: counter vs instant"),
    (energy(), {**energy(), "uncertainty_pct": None}, "current energy has no uncertainty"),
])
def test_energy_is_skipped_with_a_note(root, base_energy, cur_energy, note):
    result = gate(run([record(energy_record=base_energy)]), run([record(energy_record=cur_energy)]), config_root=root)
    skipped = [m for m in result.benchmarks[0].metrics if m.metric == "energy"]
    assert [(m.verdict, m.note) for m in skipped] == [("skipped", note)]


def test_interpreted_records_are_excluded_and_labelled(root, capsys):
    baseline = run([record(), record(impl="triton", interpreted=True, times=samples(seed=5))])
    current = run([record(), record(impl="triton", interpreted=True, times=slower(3.0))])
    assert gate_files(root, baseline, current) == 0
    out = capsys.readouterr().out
    assert re.search(r"gemm.infer-triton-fp32-M16-K512-N512 .* excluded .*interpreter", out)


def test_timing_methods_that_differ_are_not_compared(root):
    result = gate(run([record(method="cuda_event")]), run([record(method="cuda_graph")]), config_root=root)
    time_metric = result.benchmarks[0].metrics[0]
    assert (time_metric.verdict, time_metric.note) == ("skipped", "timing methods differ: cuda_event vs cuda_graph")


def test_new_and_missing_are_listed_and_missing_fails_only_when_strict(root, capsys):
    baseline = run([record(), record(**TRAIN)])
    current = run([record(), record(precision="bf16")], failed=[
        {"case": "gemm.train-torch-fp32-M512-K256-N256", "phase": "call", "error": "RuntimeError: boom"}])
    assert gate_files(root, baseline, current) == 0
    out = capsys.readouterr().out
    assert "new (no baseline): gemm.infer-torch-bf16-M16-K512-N512" in out
    assert ("missing from the current run: gemm.train-torch-fp32-M512-K256-N256: "
            "FAILED (call): RuntimeError: boom") in out
    assert gate_files(root, baseline, current, strict=True, junit_out=root / "strict.xml") == 1
    assert "(strict: fails)" in capsys.readouterr().out
    failures = [case.get("name") for case in ET.parse(root / "strict.xml").getroot().iter("testcase")
                if case.find("failure") is not None]
    assert failures == ["gemm.train-torch-fp32-M512-K256-N256"]


def test_threshold_overrides_change_the_verdict(root):
    baseline, current = run([record(times=samples(seed=1))]), run([record(times=slower(1.10))])
    assert gate_files(root, baseline, current) == 1
    assert gate_files(root, baseline, current, time_threshold="20%") == 0
    (root / "pyproject.toml").write_text('[tool.wattbench.gate.patterns."gemm.*"]\ntime = "20%"\n')
    assert gate_files(root, baseline, current) == 0


def test_different_devices_are_refused_unless_forced(root, capsys):
    baseline = run([record()])
    current = run([record(device_name="NVIDIA A100", times=samples(seed=2))], device_name="NVIDIA A100")
    assert gate_files(root, baseline, current) == 2
    one_line_error(capsys, r"refusing to compare: different devices: .*H100.*A100.*pass --force")
    assert gate_files(root, baseline, current, force=True) == 0
    assert "forced: different devices" in capsys.readouterr().out


def test_interpreted_against_compiled_is_refused(root, capsys):
    assert gate_files(root, run([record()]), run([record()], interpreted=True)) == 2
    one_line_error(capsys, r"Triton compiled in the baseline but interpreted")


@pytest.mark.parametrize("setup, pattern", [
    (lambda root: (root / "absent.json", root / "cur.json"), r"absent.json: cannot read"),
    (lambda root: (write_text(root / "bad.json", "{"), root / "cur.json"), r"bad.json: not valid JSON"),
])
def test_unreadable_files_give_one_line_and_exit_2(root, capsys, setup, pattern):
    write(root / "cur.json", run([record()]))
    baseline, current = setup(root)
    assert run_gate(baseline, current) == 2
    one_line_error(capsys, pattern)


def write_text(path, text):
    path.write_text(text)
    return path


def test_nothing_in_common_gives_exit_2(root, capsys):
    assert gate_files(root, run([record()]), run([record(workload="softmax.infer")])) == 2
    one_line_error(capsys, r"nothing comparable: no benchmark in common \(baseline has 1, current has 1\)")


def test_only_excluded_records_in_common_gives_exit_2(root, capsys):
    interpreted = run([record(impl="triton", interpreted=True)])
    assert gate_files(root, interpreted, interpreted) == 2
    one_line_error(capsys, r"nothing comparable: all 1 common benchmarks were excluded")


def test_malformed_threshold_gives_exit_2(root, capsys):
    assert gate_files(root, run([record()]), run([record()]), time_threshold="5") == 2
    one_line_error(capsys, r"--time-threshold: must lie in")
    (root / "pyproject.toml").write_text("[tool.wattbench.gate]\nenergy = 'eight'\n")
    assert gate_files(root, run([record()]), run([record()])) == 2
    one_line_error(capsys, r"pyproject.toml \[tool.wattbench.gate\] energy: expected a percentage")


def test_bad_samples_give_exit_2(root, capsys):
    assert gate_files(root, run([record()]), run([record(times=[1.0, -1.0, 1.0, 1.0, 1.0])])) == 2
    one_line_error(capsys, r"benchmark gemm.infer-torch-fp32-M16-K512-N512: bad timing samples")


def test_unwritable_report_gives_exit_2_before_the_comparison(root, capsys):
    (root / "file").write_text("")
    assert gate_files(root, run([record()]), run([record()]), junit_out=root / "file" / "gate.xml") == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no verdict printed that the exit code would then contradict
    assert re.fullmatch(r"wattbench: error: output folder '.*file' is not writable: .*\n", captured.err)
    assert gate_files(root, run([record()]), run([record()]), markdown_out=root) == 2
    one_line_error(capsys, r"--markdown '.*' is a directory, not a file")


def test_gate_output_json_gates_the_pytest_run(root, capsys):
    baseline = write(root / "base.json", run([record(times=samples(seed=1))]))
    lines = []
    assert gate_session(run([record(times=slower(1.2))]), baseline, root, write=lines.append) == 1
    assert "this pytest run" in lines[0] and "FAIL: 1 regression" in lines[0]
    assert gate_session({"benchmarks": []}, baseline, root) == 2
    one_line_error(capsys, r"the pytest run produced no wattbench run data")


def test_save_baseline_keeps_provenance_and_the_gate_reads_it(root, capsys):
    source = write(root / "run.json", run([record(times=samples(seed=1))]))
    kept = save_baseline(source, "main-h100", root / "baselines")
    path = kept.path
    assert path == root / "baselines" / "main-h100.json"
    saved = load_run(path)
    provenance = saved["wattbench"]["baseline"]
    assert provenance["name"] == "main-h100" and provenance["commit"]["id"] == "0123456789abcdef"
    assert provenance["device"] == "NVIDIA H100 80GB HBM3" and provenance["nvidia_driver"] == "550.54.15"
    assert provenance["date"].startswith("2026-11-21") and provenance["saved_utc"]
    assert saved["benchmarks"] == json.loads(source.read_text())["benchmarks"]
    assert "saved baseline 'main-h100'" in kept.lines()[0]  # what `wattbench baseline save` prints
    assert run_gate(path, write(root / "cur.json", run([record(times=samples(seed=2))]))) == 0
    assert "baseline 'main-h100' from main-h100.json (commit 0123456" in capsys.readouterr().out


def test_save_baseline_default_name_is_device_and_commit(root):
    source = write(root / "run.json", run([record()]))
    assert save_baseline(source, folder=root).path.name == "nvidia-h100-80gb-hbm3-0123456.json"


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden"])
def test_save_baseline_rejects_path_like_names(root, name):
    source = write(root / "run.json", run([record()]))
    with pytest.raises(UsageError, match="baseline name must start with a letter or digit, then letters, digits, "
                                         r"'\.', '_' or '-'"):
        save_baseline(source, name, root)


def test_save_baseline_replaces_an_existing_one_only_with_force(root, capsys):
    first = write(root / "first.json", run([record(times=samples(seed=1))]))
    second = write(root / "second.json", run([record(times=slower(1.5))]))
    path = save_baseline(first, "main", root / "baselines").path
    with pytest.raises(UsageError, match=r"main\.json: a baseline named 'main' exists: pass --force to replace it"):
        save_baseline(second, "main", root / "baselines")
    assert load_run(path)["wattbench"]["baseline"]["source"] == str(first)
    save_baseline(second, "main", root / "baselines", force=True)
    assert load_run(path)["wattbench"]["baseline"]["source"] == str(second)


def test_baseline_without_a_subcommand_says_what_to_give(capsys):
    from wattbench import cli

    assert cli.main(["baseline"]) == 2
    err = capsys.readouterr().err
    assert err == ("wattbench: error: baseline: give what to do: "
                   "`wattbench baseline save RUN.json [--name N] [--force]`\n")


def test_save_baseline_of_a_missing_file_is_a_usage_error(root):
    with pytest.raises(UsageError, match="nope.json: cannot read"):
        save_baseline(root / "nope.json", "x", root)
