"""Settings compared: the Pareto frontier and the energy-optimal setting under latency bounds, on synthetic sweep
run files whose answers are known (exact energies, rounds spread so the median's uncertainty is known)."""

import json
import math

import pytest

from wattbench.errors import UsageError
from wattbench.report.load import MEDIAN_CI_FACTOR, load_runs
from wattbench.report.settings import compare_settings, format_comparison, pareto_frontier, setting_rows

NAME = "TEST-FIXTURE NVIDIA H100 80GB HBM3"
ROUNDS = 31
#: Each record's rounds spread evenly over ±5% of its median: their IQR is 5% of it.
SPREAD = 0.05
TIME_PCT = 100 * MEDIAN_CI_FACTOR * SPREAD / math.sqrt(ROUNDS)


def record(setting, joules_per_unit, median_ms, energy_pct=1.0, workload="gemm.infer", held=True, reasons=(),
           ttft_ms=None, tpot_ms=None, interpreted=False):
    """A benchmark record at `setting` (None: a plain run's record, with no setting field)."""
    units, median_s = 64, median_ms / 1e3
    samples = [median_s * (1 + SPREAD * (i - ROUNDS // 2) / (ROUNDS // 2)) for i in range(ROUNDS)]
    info = {"workload": workload, "op": "gemm", "style": workload.split(".")[1], "impl": "torch", "precision": "bf16",
            "size": "M64", "device": "cuda:0", "device_name": NAME, "interpreted": interpreted, "unit": "tokens",
            "units_per_call": float(units), "timing": {"method": "cuda_event", "rounds": ROUNDS, "samples_s": samples},
            "median_s": median_s, "units_per_s": units / median_s,
            "energy": {"source": "nvml", "method": "counter", "joules_per_call": joules_per_unit * units,
                       "joules_per_unit": joules_per_unit, "units_per_joule": 1 / joules_per_unit,
                       "avg_power_w": joules_per_unit * units / median_s, "uncertainty_pct": energy_pct,
                       "setting": {"held": held, "reasons": list(reasons), "readbacks": []}}}
    if setting is not None:
        info["setting"] = setting
    for name, p50 in (("ttft_ms", ttft_ms), ("tpot_ms", tpot_ms)):
        if p50 is not None:
            info[name] = {"p50": p50, "p90": 1.2 * p50, "p99": 1.5 * p50}
    return {"name": f"test_kernel[{workload}-{setting}]", "extra_info": info}


def run_file(tmp_path, name, records, started="2026-01-01T00:00:00+00:00", host="sweep-host"):
    path = tmp_path / name
    path.write_text(json.dumps({"benchmarks": records, "datetime": started,
                                "wattbench": {"started_utc": started, "device": "cuda:0", "device_name": NAME},
                                "machine_info": {"node": host, "wattbench": {"host": host}}}))
    return path


def compare(*paths, **bounds):
    return compare_settings(setting_rows(load_runs(list(paths)).runs), **bounds)


#: A power limit sweep: lower limits save energy and cost time; pl300w is beaten by pl400w on both.
SWEEP = [("default", 1.00e-3, 1.00), ("pl500w", 0.90e-3, 1.05), ("pl400w", 0.80e-3, 1.20),
         ("pl300w", 0.82e-3, 1.50), ("pl200w", 0.70e-3, 2.00)]


@pytest.fixture
def sweep(tmp_path):
    return run_file(tmp_path, "sweep.json", [record(*point) for point in SWEEP])


def test_the_frontier_holds_the_settings_no_other_beats_on_both_energy_and_latency(sweep):
    (comparison,) = compare(sweep)
    assert comparison.group == {"workload": "gemm.infer", "impl": "torch", "style": "infer", "precision": "bf16",
                                "size": "M64", "device_name": NAME, "host": "sweep-host"}
    assert [p.setting for p in comparison.points] == ["default", "pl500w", "pl400w", "pl300w", "pl200w"]
    assert [p.setting for p in comparison.points if p.on_frontier] == ["default", "pl500w", "pl400w", "pl200w"]
    assert [p.setting for p in pareto_frontier(comparison.points)] == ["default", "pl500w", "pl400w", "pl200w"]


def test_without_a_bound_the_optimum_is_the_least_energy_with_saving_and_slowdown_and_their_uncertainty(sweep):
    (comparison,) = compare(sweep)
    assert comparison.optimum.setting == "pl200w" and comparison.default.setting == "default"
    assert comparison.saving_pct == pytest.approx(30.0)
    assert comparison.saving_uncertainty_pct == pytest.approx(100 * 0.7 * math.hypot(0.01, 0.01))
    assert comparison.slowdown_pct == pytest.approx(100.0)
    assert comparison.slowdown_uncertainty_pct == pytest.approx(2.0 * math.hypot(TIME_PCT, TIME_PCT))
    assert comparison.within_uncertainty is False and comparison.tied == []


def test_a_latency_bound_picks_the_least_energy_among_the_settings_fast_enough(sweep):
    (comparison,) = compare(sweep, max_latency_ms=1.3)
    assert comparison.optimum.setting == "pl400w"
    assert comparison.saving_pct == pytest.approx(20.0)
    assert comparison.saving_uncertainty_pct == pytest.approx(100 * 0.8 * math.hypot(0.01, 0.01))
    assert comparison.slowdown_pct == pytest.approx(20.0)
    assert "pl300w, pl200w: median latency per call over the 1.3 ms bound" in comparison.notes
    text = format_comparison(comparison)
    assert "median latency per call <= 1.3 ms" in text.splitlines()[0]
    assert (f"energy-optimal: pl400w: 20.0% ± {comparison.saving_uncertainty_pct:.2g}% less energy per tokens than "
            f"default, 20.0% ± {comparison.slowdown_uncertainty_pct:.2g}% slower per call") in text
    assert "warning" not in text
    optimum_row = next(line for line in text.splitlines() if line.startswith("pl400w"))
    assert optimum_row.split()[-2:] == ["yes", "optimum"]


def test_when_nothing_is_faster_than_the_default_and_or_nothing_meets_the_bound(sweep):
    (only_default,) = compare(sweep, max_latency_ms=1.01)
    assert only_default.optimum is only_default.default and only_default.within_uncertainty is None
    assert "energy-optimal: default (no other setting uses less energy per tokens within the bound)" in \
        format_comparison(only_default)
    (none,) = compare(sweep, max_latency_ms=0.5)
    assert none.optimum is None and "no setting meets the bound" in none.notes
    assert "energy-optimal" not in format_comparison(none)


def test_a_saving_within_the_uncertainty_is_a_tie_and_says_so(tmp_path):
    path = run_file(tmp_path, "tie.json", [record("default", 1.00e-3, 1.00, energy_pct=2.0),
                                           record("pl600w", 0.99e-3, 1.02, energy_pct=2.0),
                                           record("pl450w", 0.95e-3, 1.10, energy_pct=2.0)])
    (comparison,) = compare(path)
    assert comparison.optimum.setting == "pl450w"
    assert comparison.saving_pct == pytest.approx(5.0) and comparison.within_uncertainty is False
    assert comparison.tied == []  # 0.95 ± 2% and 0.99 ± 2% just miss: [0.931, 0.969] vs [0.970, 1.010]
    (close,) = compare(path, max_latency_ms=1.05)
    assert close.optimum.setting == "pl600w" and close.saving_pct == pytest.approx(1.0)
    assert close.saving_uncertainty_pct == pytest.approx(100 * 0.99 * math.hypot(0.02, 0.02))
    assert close.within_uncertainty is True and close.tied == ["default"]
    text = format_comparison(close)
    assert "warning: the 1.0% saving of pl600w is within the measurement uncertainty" in text
    assert "default is as good" in text
    assert "note: default cannot be told from pl600w on energy per tokens" in text


def test_an_unknown_uncertainty_is_never_called_a_win(tmp_path):
    path = run_file(tmp_path, "unknown.json", [record("default", 1.00e-3, 1.00, energy_pct=None),
                                               record("pl300w", 0.80e-3, 1.20)])
    (comparison,) = compare(path)
    assert comparison.optimum.setting == "pl300w" and math.isnan(comparison.saving_uncertainty_pct)
    assert comparison.within_uncertainty is None
    assert "the uncertainty of pl300w or default is unknown" in format_comparison(comparison)


def test_a_record_whose_setting_did_not_hold_is_left_out_with_the_reason(tmp_path):
    path = run_file(tmp_path, "held.json", [
        record("default", 1.00e-3, 1.00), record("pl300w", 0.80e-3, 1.20),
        record("pl200w", 0.60e-3, 1.50, held=False, reasons=["GPU power limit: the power limit reads 300 W, not 200 W"]),
        record("pl250w", 0.70e-3, 1.30, held=None, reasons=["reading the power limit back: timed out"])])
    (comparison,) = compare(path)
    assert [p.setting for p in comparison.points] == ["default", "pl300w", "pl250w"]
    assert comparison.optimum.setting == "pl250w"
    assert "pl200w: left out: the setting did not hold (GPU power limit: the power limit reads 300 W, not 200 W)" \
        in comparison.notes
    assert "pl250w: whether the setting held is unknown (reading the power limit back: timed out)" in comparison.notes


def test_ttft_and_tpot_bounds_judge_llm_records_by_their_p50(tmp_path):
    path = run_file(tmp_path, "llm.json", [
        record("default", 1.00e-3, 10.0, workload="llm.decode", ttft_ms=20.0, tpot_ms=5.0),
        record("sm1500mhz", 0.85e-3, 11.0, workload="llm.decode", ttft_ms=24.0, tpot_ms=5.5),
        record("sm1200mhz", 0.75e-3, 13.0, workload="llm.decode", ttft_ms=30.0, tpot_ms=6.5),
        record("default", 1.00e-3, 1.00, workload="gemm.infer"), record("pl300w", 0.80e-3, 1.20)])
    by_workload = {c.group["workload"]: c for c in compare(path, max_ttft_ms=25.0)}
    assert by_workload["llm.decode"].optimum.setting == "sm1500mhz"
    assert "sm1200mhz: TTFT p50 over the 25 ms bound" in by_workload["llm.decode"].notes
    assert by_workload["gemm.infer"].optimum is None  # no TTFT recorded: the bound cannot be checked
    assert "default, pl300w: no TTFT p50 recorded, so the 25 ms bound cannot be checked" in \
        by_workload["gemm.infer"].notes
    (decode,) = compare_settings(setting_rows(load_runs([path]).runs), workload="llm.decode", max_tpot_ms=7.0,
                                 max_ttft_ms=35.0)
    assert decode.optimum.setting == "sm1200mhz"
    assert "TTFT p50 ms" in format_comparison(decode) and "TPOT p50 ms" in format_comparison(decode)


def test_the_latest_record_of_each_setting_is_compared_per_host_and_interpreted_ones_never(tmp_path):
    first = run_file(tmp_path, "first.json", [record("default", 1.00e-3, 1.00), record("pl300w", 0.50e-3, 1.20)])
    again = run_file(tmp_path, "again.json", [record("pl300w", 0.80e-3, 1.20)], started="2026-01-02T00:00:00+00:00")
    other = run_file(tmp_path, "other.json", [record("default", 1.10e-3, 1.00), record("pl300w", 0.90e-3, 1.20),
                                              record("pl200w", 0.10e-3, 1.5, interpreted=True)], host="other-host")
    by_host = {c.group["host"]: c for c in compare(first, again, other)}
    assert by_host["sweep-host"].optimum.joules_per_unit == pytest.approx(0.80e-3)
    assert [p.setting for p in by_host["other-host"].points] == ["default", "pl300w"]


def test_a_plain_run_is_the_default_and_alone_has_nothing_to_compare(tmp_path):
    plain = run_file(tmp_path, "plain.json", [record(None, 1.00e-3, 1.00)])
    assert compare(plain) == []
    sweep = run_file(tmp_path, "sweep.json", [record("pl300w", 0.80e-3, 1.20)], started="2026-01-02T00:00:00+00:00")
    (comparison,) = compare(plain, sweep)
    assert comparison.default.joules_per_unit == pytest.approx(1.00e-3) and comparison.optimum.setting == "pl300w"


def test_bad_input_is_one_line(tmp_path, sweep):
    rows = setting_rows(load_runs([sweep]).runs)
    with pytest.raises(UsageError, match="--max-latency-ms must be a positive number"):
        compare_settings(rows, max_latency_ms=-1)
    with pytest.raises(UsageError, match="no workload 'gemm.inferr'.*close matches: gemm.infer"):
        compare_settings(rows, workload="gemm.inferr")
    bad = record("pl300w", 0.8e-3, 1.2)
    bad["extra_info"]["setting"] = 300
    (problem,) = load_runs([run_file(tmp_path, "bad.json", [bad])]).problems
    assert "benchmarks[0].extra_info.setting: expected a string" in problem[1]
