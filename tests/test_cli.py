"""The `wattbench` command: the main job end to end, and bad input as one line with exit code 2."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wattbench import cli

def as_a_shell_starts_it() -> dict:
    """The environment `wattbench` gets from a user's shell: without the TRITON_INTERPRET that this test
    session's own wattbench plugin has set, so that each command decides on Triton's interpreter itself."""
    return {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}


def wattbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wattbench.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=as_a_shell_starts_it())


#: `wattbench run` on the CPU with short power windows, on a GPU host too.
ON_CPU = ("--device", "cpu")
SHORT_POWER = ("--", "--wattbench-idle=0", "--wattbench-energy-window=0.1", "--wattbench-energy-repeats=1")


def no_power_source_here() -> bool:
    from wattbench.device import detect
    from wattbench.power import describe_sources

    return not any(status.available for status in describe_sources(detect("cpu")))


def assert_one_line_error(capsys, code, pattern):
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("args, pattern", [
    (["run", "--device", "tpu"], r"^wattbench: error: unknown device 'tpu'"),
    (["run", "--preset", "huge"], r"unknown preset 'huge'"),
    (["run", "--bogus"], r"unrecognized arguments: --bogus"),
    (["run", "--device", "cpu", "-k", "gemm and"], r"-k 'gemm and' is not a valid expression"),
    (["selfcheck", "nothing"], r"invalid choice: 'nothing'"),
    ([], r"required: command"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, args, pattern):
    assert_one_line_error(capsys, cli.main(args), pattern)


def test_unwritable_output_folder_is_refused(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(capsys, cli.main(["run", "--out", str(blocker)]), r"output folder .* is not writable")


def test_selection_matching_nothing_is_refused(tmp_path):
    proc = wattbench("run", *ON_CPU, "-k", "no_such_workload", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("wattbench: error: -k 'no_such_workload' matches no benchmark "
                                   "for preset 'quick' on cpu")
    assert list((tmp_path / "runs").iterdir()) == []


def test_run_writes_a_run_file_and_prints_the_table(tmp_path):
    proc = wattbench("run", *ON_CPU, "-k", "gemm and infer and M1-", "--out", str(tmp_path), *SHORT_POWER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = list((tmp_path / "runs").iterdir())
    assert len(files) == 1, files  # no partial or temporary file left behind
    assert re.fullmatch(r".+_[a-z0-9-]+_\d{8}T\d{6}Z\.json", files[0].name)
    data = json.loads(files[0].read_text())
    assert {b["extra_info"]["impl"] for b in data["benchmarks"]} == {"torch", "triton"}
    assert all(b["extra_info"]["interpreted"] == (b["extra_info"]["impl"] == "triton") for b in data["benchmarks"])
    assert data["wattbench"]["complete"] is True and data["wattbench"]["failed"] == []
    assert "gemm.infer  infer  triton*" in proc.stdout
    if no_power_source_here():
        assert "energy: not measured — no power source" in proc.stdout
    assert f"run file: {files[0]}" in proc.stdout


def test_devices_lists_power_sources(capsys):
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "device cpu:" in out and "power source" in out


def test_sigterm_keeps_a_valid_partial_run_that_resume_completes(tmp_path):
    """A run killed mid-way leaves a readable run file marked incomplete; --resume finishes it."""
    import signal
    import time

    select = "gemm and infer and M1- and not int8w and not int4w and not fp8"
    args = [sys.executable, "-m", "wattbench.cli", "run", *ON_CPU, "-k", select, "--out", str(tmp_path), *SHORT_POWER]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=as_a_shell_starts_it())
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        files = [p for p in runs.glob("[!.]*.json")] if runs.exists() else []
        if files and json.loads(files[0].read_text())["benchmarks"]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    (run_file,) = runs.glob("[!.]*.json")
    partial = json.loads(run_file.read_text())
    assert partial["wattbench"]["complete"] is False
    done = [b["params"]["wattbench_case"] for b in partial["benchmarks"]]
    assert 1 <= len(done) < 4
    assert err.strip().splitlines()[-1].endswith(f"continue it with `wattbench run --resume {run_file}`"), err

    resumed = wattbench("run", "--resume", str(run_file), *SHORT_POWER)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = json.loads(run_file.read_text())
    cases = [b["params"]["wattbench_case"] for b in final["benchmarks"]]
    assert final["wattbench"]["complete"] is True
    assert len(cases) == len(set(cases)) == 4 and cases[:len(done)] == done
    assert [p.name for p in runs.iterdir()] == [run_file.name]


def test_resume_refuses_a_complete_run(tmp_path, capsys):
    run_file = tmp_path / "done.json"
    run_file.write_text(json.dumps({"benchmarks": [], "wattbench": {"complete": True}}))
    assert_one_line_error(capsys, cli.main(["run", "--resume", str(run_file)]), "run is complete")


def test_run_takes_a_user_spec_file_for_mfu_and_the_report(tmp_path):
    specs = tmp_path / "mine.json"
    specs.write_text(json.dumps({"format": "wattbench-device-specs/1", "devices": [
        {"name": "Any device", "kind": "cpu", "match": [".*"],
         "peak_tflops": {"fp32": {"value": 2.0, "source": "test figure"}}}]}))
    proc = wattbench("run", *ON_CPU, "-k", "llm.train and torch", "--specs", str(specs), "--out", str(tmp_path),
                     *SHORT_POWER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(next((tmp_path / "runs").iterdir()).read_text())
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert info["mfu_peak_tflops"] == 2.0 and info["mfu"] == pytest.approx(info["tflops"] / 2.0)
    csv = next((tmp_path / "reports").iterdir()) / "benchmarks.csv"
    assert "Any device" in csv.read_text()  # the report matched the same file


def test_a_bad_spec_file_is_refused_before_anything_runs(capsys, tmp_path):
    specs = tmp_path / "bad.json"
    specs.write_text(json.dumps({"format": "wattbench-device-specs/1", "devices": [
        {"name": "X", "peak_tflops": {"fp32": {"value": 2.0}}}]}))
    assert_one_line_error(capsys, cli.main(["run", "--specs", str(specs), "--out", str(tmp_path)]), r"bad\.json")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def runs_left(tmp_path):
    return list((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else []


BAD_LOGS = {
    "garbage.csv": (b"garbage\n", r"garbage\.csv: the header must name a 'timestamp' and a 'watts' column"),
    "empty.csv": (b"", r"empty\.csv: is empty"),
    "header.csv": (b"timestamp,watts\n", r"header\.csv: needs at least 2 readings, found 0"),
    "nan.csv": (b"timestamp,watts\n1,2\n2,nan\n", r"nan\.csv:3: timestamp and watts must be finite"),
    "negative.csv": (b"timestamp,watts\n1,2\n2,-3\n", r"negative\.csv:3: watts must be >= 0"),
    "backwards.csv": (b"timestamp,watts\n5,2\n4,3\n", r"backwards\.csv:3: timestamps must increase"),
    "binary.csv": (bytes(range(256)), r"binary\.csv: not a CSV text file"),
    "old.csv": (b"timestamp,watts\n1700000000,2\n1700000060,3\n",
                r"old\.csv: the log covers 2023-11-14T22:13:20Z to 2023-11-14T22:14:20Z \(wall clock\), but the run "
                r"starts at 20"),
}


@pytest.mark.parametrize("name", sorted(BAD_LOGS))
def test_a_bad_power_replay_log_is_refused_before_the_first_benchmark(capsys, tmp_path, name):
    content, pattern = BAD_LOGS[name]
    log = tmp_path / name
    log.write_bytes(content)
    code = cli.main(["run", *ON_CPU, "--out", str(tmp_path), "--power-replay", str(log)])
    assert_one_line_error(capsys, code, pattern)
    assert runs_left(tmp_path) == []


def test_a_directory_as_power_replay_says_it_is_one(capsys, tmp_path):
    code = cli.main(["run", *ON_CPU, "--out", str(tmp_path / "out"), "--power-replay", str(tmp_path)])
    assert_one_line_error(capsys, code, r"is a directory, not a CSV power log")


@pytest.mark.parametrize("option, pattern", [
    ("--wattbench-energy-window=0", r"--wattbench-energy-window must be above 0 and at most 3600 seconds, got 0\.0"),
    ("--wattbench-energy-window=-3", r"--wattbench-energy-window must be above 0"),
    ("--wattbench-energy-window=nan", r"--wattbench-energy-window must be above 0 .*got nan"),
    ("--wattbench-energy-repeats=0", r"--wattbench-energy-repeats must be at least 1 and at most 100 windows"),
    ("--wattbench-idle=-1", r"--wattbench-idle must be at least 0"),
    ("--wattbench-idle=1e300", r"--wattbench-idle must be at least 0 and at most 3600 seconds"),
    ("--wattbench-cooldown=-5", r"--wattbench-cooldown must be at least 0 and at most 100 degrees"),
    ("--wattbench-min-time=inf", r"--wattbench-min-time must be above 0"),
    ("--wattbench-cpu-threads=0", r"--wattbench-cpu-threads must be at least 1"),
    ("--wattbench-cpu-threads=100000", r"--wattbench-cpu-threads must be at least 1 and at most \d+ threads"),
    ("--wattbench-seed=abc", r"argument --wattbench-seed: invalid int value: 'abc'"),
    ("--wattbench-save-trace=/proc/x/trace.csv",
     r"--wattbench-save-trace after '--' is not for wattbench run: give wattbench run --save-trace"),
    ("--wattbench-device=cuda:7", r"--wattbench-device after '--' is not for wattbench run: give wattbench run "
                                  r"--device"),
    ("-kgemm", r"-k after '--' is not for wattbench run: give wattbench run -k"),
    ("--wattbench-gate=base.json", r"gate the run file afterwards: wattbench gate --baseline B --current RUN"),
])
def test_bad_plugin_options_after_the_separator_are_one_line(capsys, tmp_path, option, pattern):
    code = cli.main(["run", *ON_CPU, "--out", str(tmp_path), "--", option])
    assert_one_line_error(capsys, code, pattern)
    assert runs_left(tmp_path) == []


def partial_run(path, select):
    """A run file as an interrupted run leaves it: nothing recorded yet, `complete: false`."""
    path.write_text(json.dumps({"benchmarks": [], "wattbench": {
        "preset": "quick", "device": "cpu", "select": select, "seed": 0, "complete": False,
        "planned": ["gemm.infer-torch-fp32-M1-K512-N512"], "failed": [], "skipped": []}}))
    return path


@pytest.mark.parametrize("select, given, pattern", [
    ("gemm and M1-", "llm", r"was run with -k gemm and M1-, not -k llm: resume it with the same"),
    ("", "gemm", r"was run without -k, not -k gemm"),
])
def test_resume_with_another_selection_is_refused(capsys, tmp_path, select, given, pattern):
    run_file = partial_run(tmp_path / "partial.json", select)
    assert_one_line_error(capsys, cli.main(["run", "--resume", str(run_file), "-k", given]), pattern)
    assert json.loads(run_file.read_text())["wattbench"]["complete"] is False


REPORT_DATA = Path(__file__).parent / "data" / "report"


def test_report_and_select_refuse_a_named_file_they_cannot_read(capsys, tmp_path):
    good, bad = REPORT_DATA / "cpu_run.json", tmp_path / "bad.json"
    bad.write_text("{")
    out = tmp_path / "report"
    assert_one_line_error(capsys, cli.main(["report", str(good), str(bad), "/nonexistent.json", "--out", str(out)]),
                          r"bad\.json: not valid JSON .*\(1 other file\(s\) too\); pass --skip-bad")
    assert not out.exists()
    assert_one_line_error(capsys, cli.main(["select", str(good), "/nonexistent.json", "--workload", "gemm.infer",
                                            "--metric", "units_per_s"]), r"/nonexistent\.json: cannot read")
    assert_one_line_error(capsys, cli.main(["report", str(good), "--trace", "/nonexistent.csv", "--out", str(out)]),
                          r"/nonexistent\.csv: cannot read")
    assert cli.main(["report", str(good), str(bad), "--skip-bad", "--out", str(out)]) == 0
    assert f"wattbench: skipped {bad}" in capsys.readouterr().err


def test_select_by_energy_without_energy_data_exits_1_unless_the_fallback_is_allowed(capsys):
    run = str(REPORT_DATA / "cpu_run.json")
    assert cli.main(["select", run, "--workload", "gemm.infer"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "--allow-fallback" in captured.err
    assert cli.main(["select", run, "--workload", "gemm.infer", "--allow-fallback"]) == 0


def test_a_garbage_power_log_ends_the_process_with_one_line_and_exit_2(tmp_path):
    log = tmp_path / "meter.csv"
    log.write_text("garbage\n")
    proc = wattbench("run", *ON_CPU, "--out", str(tmp_path), "--power-replay", str(log))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"wattbench: error: {log}: the header must name a 'timestamp' and a 'watts' column, "
                           "got ['garbage']\n")
