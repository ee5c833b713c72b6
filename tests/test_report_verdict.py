"""The report's answer: the best configuration per workload with its lead and whether it is within the
uncertainty, the model phases per watt, the device x workload matrix and what could not be measured."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from wattbench.report import verdict
from wattbench.report.load import load_runs
from wattbench.report.settings import setting_rows

DATA = Path(__file__).parent / "data" / "report"
LLM_H100, LLM_L4 = DATA / "fixture_llm_h100.json", DATA / "fixture_llm_l4.json"
H100_NAME, L4_NAME = "TEST-FIXTURE NVIDIA H100 80GB HBM3", "TEST-FIXTURE NVIDIA L4"


def row(device, per_joule, uncertainty=2.0, per_second=100.0, workload="gemm.infer", impl="torch", size="M1",
        **more):
    """A compared record as setting_rows gives it, with only the columns the verdict reads."""
    measured = per_joule is not None
    return {"workload": workload, "device_name": device, "host": "h", "impl": impl, "precision": "bf16", "size": size,
            "setting": "default", "unit": "tokens", "median_ms": 1.0, "energy_measured": measured,
            "units_per_joule": per_joule if measured else math.nan, "energy_uncertainty_pct": uncertainty,
            "units_per_s": per_second, "time_uncertainty_pct": 1.0, "interpreted": False, "setting_held": None,
            "run_started": pd.Timestamp("2026-12-01", tz="UTC"), "style": "infer", "energy_reason": None, **more}


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_the_best_device_leads_the_best_other_device_and_is_tied_when_the_intervals_overlap():
    rows = frame(row("A", 120.0, 2.0), row("A", 110.0, 2.0, size="M2"), row("B", 100.0, 2.0))
    found = verdict.verdict_for("gemm.infer", rows)
    assert (found.best.device_name, found.runner_up.device_name, found.against) == ("A", "B", "device")
    assert found.lead_pct == pytest.approx(20.0)
    assert found.tied is False  # 120 x 0.98 = 117.6 > 100 x 1.02 = 102
    close = verdict.verdict_for("gemm.infer", frame(row("A", 103.0, 2.0), row("B", 100.0, 2.0)))
    assert close.tied is True and close.lead_pct == pytest.approx(3.0)  # 100.94 <= 102
    unknown = verdict.verdict_for("gemm.infer", frame(row("A", 103.0, math.nan), row("B", 100.0, 2.0)))
    assert unknown.tied is None


def test_one_device_is_compared_with_its_next_configuration_and_devices_without_energy_are_named():
    rows = frame(row("A", 120.0), row("A", 60.0, size="M2"), row("C", None, per_second=1e6))
    found = verdict.verdict_for("gemm.infer", rows)
    assert found.metric == verdict.PER_JOULE and found.against == "configuration"
    assert (found.runner_up.size, found.lead_pct) == ("M2", pytest.approx(100.0))
    assert found.unranked_devices == ["C"]  # ran, but without energy it cannot be ranked per joule


def test_a_workload_without_energy_anywhere_is_ranked_by_throughput():
    found = verdict.verdict_for("gemm.infer", frame(row("A", None, per_second=50.0), row("B", None, per_second=80.0)))
    assert found.metric == verdict.PER_SECOND and found.best.device_name == "B"
    assert found.best.value == 80.0 and found.best.uncertainty_pct == 1.0  # the time's uncertainty
    assert verdict.metric_words(found.metric, found.unit) == "tokens/s"


def test_verdicts_come_by_family_training_first():
    rows = frame(*(row("A", 1.0, workload=w) for w in ("llm.decode", "gemm.infer", "llm.train", "llm.prefill",
                                                       "gemm.train")))
    assert [v.workload for v in verdict.verdicts(rows)] == ["gemm.train", "gemm.infer", "llm.train", "llm.prefill",
                                                            "llm.decode"]


def test_compared_rows_leave_out_interpreted_records_settings_that_did_not_hold_and_older_runs():
    old = row("A", 1.0, run_started=pd.Timestamp("2026-11-01", tz="UTC"))
    rows = frame(old, row("A", 2.0), row("A", 9.0, size="M2", interpreted=True),
                 row("A", 8.0, size="M3", setting="pl100w", setting_held=False))
    kept = verdict.compared(rows)
    assert kept["units_per_joule"].tolist() == [2.0]


def test_the_matrix_shows_each_devices_best_and_why_a_cell_is_empty():
    rows = frame(row("A", 10.0), row("A", 30.0, size="M2"), row("B", None),
                 row("A", None, per_second=7.0, workload="softmax.infer"))
    devices, lines = verdict.matrix(rows)
    assert devices == ["A", "B"]
    gemm, softmax = lines
    assert (gemm.metric, gemm.values["A"], gemm.missing) == (verdict.PER_JOULE, 30.0, {"B": "energy not measured"})
    assert (softmax.metric, softmax.values["A"], softmax.missing) == (verdict.PER_SECOND, 7.0, {"B": "not run"})


@pytest.fixture(scope="module")
def llm_runs():
    return load_runs([LLM_H100, LLM_L4]).runs


def test_phases_are_compared_per_device_and_setting_with_ratios_to_training(llm_runs):
    comparisons = verdict.phase_comparisons(llm_runs)
    assert [(c.device_name, c.setting) for c in comparisons] == [(H100_NAME, "default"), (H100_NAME, "pl400w"),
                                                                 (L4_NAME, "default")]
    h100, capped, _ = comparisons
    assert set(h100.phases) == {"train", "prefill", "decode"} and set(capped.phases) == {"decode"}
    records = [b["extra_info"] for b in json.loads(LLM_H100.read_text())["benchmarks"]]

    def best(workload):
        return max(r["energy"]["units_per_joule"] for r in records if r["workload"] == workload
                   and "setting" not in r)

    assert h100.metric == "tokens_per_joule"
    assert h100.phases["decode"]["value"] == pytest.approx(best("llm.decode"))
    assert h100.ratio_to_train["prefill"] == pytest.approx(best("llm.prefill") / best("llm.train"))
    assert capped.phases["decode"]["value"] > h100.phases["decode"]["value"]  # the fixture's cap saves energy


def test_what_could_not_be_measured_is_grouped_by_reason(llm_runs):
    rows = frame(row("A", None, energy_reason="no power source: nvml absent"),
                 row("A", None, size="M2", energy_reason="no power source: nvml absent"),
                 row("B", None, energy_reason="window too short"), row("C", 1.0),
                 row("A", None, size="M9", interpreted=True))
    runs = [(None, {"wattbench": {"skipped": [{"case": "x-triton", "reason": "too slow\nmore"},
                                              {"case": "y-triton", "reason": "too slow"}],
                                  "failed": [{"case": "z", "error": "boom"}]}})]
    missing = verdict.unmeasured(rows, runs)
    assert missing.energy == [("no power source: nvml absent", ["A"], 2), ("window too short", ["B"], 1)]
    assert missing.interpreted == 1
    assert sorted(missing.not_run) == [("failed", "boom", ["z"]), ("skipped", "too slow", ["x-triton", "y-triton"])]
    held = verdict.unmeasured(setting_rows(llm_runs), [])
    assert held.energy == [] and held.settings_not_held == []
