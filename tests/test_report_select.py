"""`wattbench select`: ranking devices per joule under a latency bound, with honest margins."""

import json
from pathlib import Path

import pytest

from wattbench import cli
from wattbench.errors import UsageError
from wattbench.report.load import load_runs
from wattbench.report.select import format_ranking, rank_devices, select_devices

DATA = Path(__file__).parent / "data" / "report"
CPU, H100, L4 = DATA / "cpu_run.json", DATA / "fixture_h100.json", DATA / "fixture_l4.json"
H100_NAME, L4_NAME = "TEST-FIXTURE NVIDIA H100 80GB HBM3", "TEST-FIXTURE NVIDIA L4"


def edited(tmp_path: Path, source: Path, **energy_fields) -> Path:
    """A copy of a fixture run with the given energy fields set on every record."""
    run = json.loads(source.read_text())
    for bench in run["benchmarks"]:
        bench["extra_info"]["energy"].update(energy_fields)
    path = tmp_path / f"edited_{source.name}"
    path.write_text(json.dumps(run))
    return path


def best(frame, device, workload, column, latency_ms=None):
    rows = frame[(frame["device_name"] == device) & (frame["workload"] == workload) & ~frame["interpreted"]]
    if latency_ms is not None:
        rows = rows[rows["median_ms"] <= latency_ms]
    return rows[column].max()


def test_devices_ranked_by_work_per_joule_with_the_margin_to_the_next():
    frame = load_runs([CPU, H100, L4]).frame
    ranking = rank_devices(frame, "gemm.infer")
    values = {name: best(frame, name, "gemm.infer", "units_per_joule") for name in (H100_NAME, L4_NAME)}
    order = sorted(values, key=values.get, reverse=True)
    assert [e.device_name for e in ranking.entries] == order
    first, second = ranking.entries
    assert first.value == values[order[0]]
    assert first.margin_pct == pytest.approx(100 * (values[order[0]] / values[order[1]] - 1))
    assert any("AMD EPYC" in note and "energy not measured" in note for note in ranking.notes)
    assert any("interpreted" in note for note in ranking.notes)


def test_latency_bound_leaves_out_devices_that_are_too_slow():
    frame = load_runs([H100, L4]).frame
    fastest = {name: frame.loc[frame["device_name"] == name, "median_ms"].min() for name in (H100_NAME, L4_NAME)}
    quick, slow = sorted(fastest, key=fastest.get)
    bound = (fastest[quick] + fastest[slow]) / 2
    ranking = rank_devices(frame, "gemm.infer", bound)
    assert [e.device_name for e in ranking.entries] == [quick]
    assert ranking.entries[0].median_ms <= bound
    assert ranking.entries[0].value == best(frame, quick, "gemm.infer", "units_per_joule", bound)
    assert any(slow in note and "over the" in note for note in ranking.notes)


def test_a_lead_within_the_uncertainty_is_called_a_tie(tmp_path):
    clear = rank_devices(load_runs([H100, L4]).frame, "gemm.infer")
    first, second = clear.entries
    # The fixtures' 95% intervals (a few %) do not overlap: the leader really leads.
    assert first.value * (1 - first.uncertainty_pct / 100) > second.value * (1 + second.uncertainty_pct / 100)
    assert first.within_uncertainty is False
    assert "within the measurement uncertainty" not in format_ranking(clear)
    noisy = load_runs([edited(tmp_path, H100, uncertainty_pct=50.0), edited(tmp_path, L4, uncertainty_pct=50.0)])
    tied = rank_devices(noisy.frame, "gemm.infer")
    assert tied.entries[0].within_uncertainty is True
    assert "within the measurement uncertainty" in format_ranking(tied)


def test_unknown_uncertainty_is_flagged(tmp_path):
    frame = load_runs([edited(tmp_path, H100, uncertainty_pct=None), L4]).frame
    ranking = rank_devices(frame, "gemm.train")
    assert ranking.entries[0].within_uncertainty is None
    assert "uncertainty unknown" in format_ranking(ranking)


def test_lower_is_better_metrics_rank_ascending():
    frame = load_runs([H100, L4]).frame
    ranking = rank_devices(frame, "gemm.infer", metric="joules_per_unit")
    values = [e.value for e in ranking.entries]
    assert values == sorted(values)
    assert values[0] == frame.loc[frame["workload"] == "gemm.infer", "joules_per_unit"].min()


def test_runs_with_no_energy_are_ranked_by_speed_and_say_so():
    frame = load_runs([CPU]).frame
    ranking = rank_devices(frame, "gemm.infer")
    assert ranking.metric == "units_per_s"
    assert "energy was not measured" in ranking.fallback
    assert ranking.entries[0].value == best(frame, "AMD EPYC", "gemm.infer", "units_per_s")
    assert format_ranking(ranking).startswith("gemm.infer: 1 device(s) ranked by units_per_s")


def test_unknown_workload_lists_close_matches():
    frame = load_runs([CPU]).frame
    with pytest.raises(UsageError, match="close matches: gemm.infer"):
        rank_devices(frame, "gemm.infr")
    with pytest.raises(UsageError, match="workloads in these runs: gemm.infer, gemm.train"):
        rank_devices(frame, "attention")


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "speed"}, "unknown metric 'speed'"),
    ({"max_latency_ms": 0}, "positive number of milliseconds"),
    ({"max_latency_ms": float("nan")}, "positive number of milliseconds"),
])
def test_bad_options_are_usage_errors(kwargs, message):
    frame = load_runs([CPU]).frame
    with pytest.raises(UsageError, match=message):
        rank_devices(frame, "gemm.infer", **kwargs)


def select(*runs, workload, max_latency_ms=None, metric="units_per_joule", skip_bad=False, allow_fallback=False):
    """`wattbench select RUN... --workload W ...`; the exit code."""
    args = ["select", *map(str, runs), "--workload", workload, "--metric", metric]
    args += [f"--max-latency-ms={max_latency_ms}"] if max_latency_ms is not None else []
    return cli.main(args + ["--skip-bad"] * skip_bad + ["--allow-fallback"] * allow_fallback)


def test_select_prints_the_ranking_and_returns_its_exit_code(tmp_path, capsys):
    with pytest.raises(UsageError, match=r"missing\.json: cannot read: .*; pass --skip-bad"):
        select_devices([CPU, H100, L4, tmp_path / "missing.json"], "gemm.train", None, "units_per_joule")
    assert select(CPU, H100, L4, tmp_path / "missing.json", workload="gemm.train", skip_bad=True) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "missing.json" in captured.err and "skipped" not in captured.out
    assert H100_NAME in captured.out and L4_NAME in captured.out and "margin to next" in captured.out
    assert select(H100, workload="gemm.infer", max_latency_ms=1e-6) == 1
    assert "no device meets the bound" in capsys.readouterr().out


def test_select_with_no_usable_file_is_a_usage_error(tmp_path):
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": [], "wattbench": {}}))
    with pytest.raises(UsageError, match="none of the run files"):
        select_devices([tmp_path / "empty.json"], "gemm.infer", None, "units_per_joule")
    with pytest.raises(UsageError, match="no run files"):
        select_devices([], "gemm.infer", None, "units_per_joule")


def test_an_energy_metric_without_energy_data_is_refused_unless_the_fallback_is_allowed(capsys):
    assert select(CPU, workload="gemm.infer") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("wattbench: not ranked by units_per_joule: energy was not measured for "
                                   "gemm.infer on any device (no power source")
    assert captured.err.endswith("pass --allow-fallback to rank by units_per_s instead\n")
    assert select(CPU, workload="gemm.infer", allow_fallback=True) == 0
    captured = capsys.readouterr()
    assert "ranked by units_per_s instead" in captured.err and "by units_per_s (throughput" in captured.out
