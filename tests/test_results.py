"""Run files: atomic writes, checked loading, the summary table."""

import json

import pytest

from wattbench import results
from wattbench.errors import UsageError


def record(impl="torch", interpreted=False, energy=None):
    return {"name": f"test_kernel[{impl}]", "extra_info": {
        "workload": "gemm.infer", "style": "infer", "impl": impl, "precision": "bf16", "size": "M1-K8-N8",
        "unit": "tokens", "median_s": 2.5e-3, "units_per_s": 400.0, "interpreted": interpreted,
        "energy": energy or {"method": "none", "reason": "no power source: NVML absent", "joules_per_unit": None}}}


def run(*records, failed=(), skipped=()):
    return {"benchmarks": list(records), "wattbench": {"failed": list(failed), "skipped": list(skipped)}}


def test_atomic_write_leaves_only_the_complete_file(tmp_path):
    target = tmp_path / "runs" / "r.json"
    results.write_json_atomic(target, {"a": 1})
    results.write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "r.json"
    results.write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        results.write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not valid JSON \(line 1"),
    ("[]", "no 'benchmarks' list"),
    ('{"benchmarks": []}', "no 'wattbench' block"),
    ('{"benchmarks": [1], "wattbench": {}}', r"benchmarks\[0\] has no 'extra_info'"),
])
def test_malformed_run_files_are_named_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as caught:
        results.load_run(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_missing_run_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        results.load_run(tmp_path / "absent.json")


def test_table_says_energy_was_not_measured_and_why():
    table = results.format_table(run(record(), record("triton", interpreted=True)))
    lines = table.splitlines()
    assert lines[0].split() == ["workload", "style", "impl", "precision", "size", "median", "throughput",
                                "energy/unit", "work/J", "avg", "power"]
    assert "2.5 ms" in lines[2] and "400 tokens/s" in lines[2] and lines[2].count("not measured") == 3
    assert " triton* " in lines[3]
    assert any(line.startswith("* interpreted") for line in lines)
    assert "energy: not measured — no power source: NVML absent" in lines


def test_table_shows_measured_energy():
    energy = {"method": "counter", "joules_per_unit": 0.125, "units_per_joule": 8.0, "avg_power_w": 50.0}
    table = results.format_table(run(record(energy=energy)))
    row = table.splitlines()[2]
    assert "0.125 J/token" in row and "8 tokens/J" in row and "50 W" in row
    assert "not measured" not in table
    assert "median and throughput: device time of one call, caches flushed before each round" in table
    assert "energy/unit, work/J and avg power: the same call run back to back in the energy windows" in table


def test_table_says_which_benchmarks_ran_eagerly_in_graph_mode():
    eager = record()
    eager["extra_info"]["timing"] = {"method": "cuda_event", "graph_note": "CUDA graph not used: it synchronises"}
    table = results.format_table(run(eager, eager, record()))
    assert "2 benchmark(s) ran eagerly in graph mode — it synchronises" in table.splitlines()


def test_table_lists_failures_and_skips():
    table = results.format_table(run(record(), failed=[{"case": "c1", "error": "RuntimeError: boom"}],
                                     skipped=[{"case": "c2", "reason": "needs CUDA"}]))
    assert "FAILED c1: RuntimeError: boom" in table and "skipped c2: needs CUDA" in table


def test_run_files_get_the_users_umask_like_the_reports(tmp_path):
    import os

    previous = os.umask(0o027)
    try:
        results.write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640


def test_an_output_file_is_checked_before_the_run(tmp_path):
    with pytest.raises(UsageError, match=r"--out-file .* is a directory, not a file"):
        results.check_output_file(tmp_path, "--out-file")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"output folder .*a-file' is not writable"):
        results.check_output_file(blocker / "run.json", "--out-file")
    results.check_output_file(tmp_path / "new" / "run.json", "--out-file")


def test_what_runs_write_leaves_git_status_clean():
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["results/runs/r.json", "results/reports/r/summary.md", "results/baselines/main.json"]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=root, capture_output=True, text=True).stdout
    assert ignored.split() == paths
