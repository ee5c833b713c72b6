"""The end-of-run comparison: train vs prefill vs decode per joule, Triton vs torch, interpreted excluded."""

import pytest

from wattbench.summary import format_summary, summarize


def record(workload, impl, precision="bf16", size="s", model=None, median_s=1.0, units_per_s=100.0,
           per_joule=None, joules_per_call=None, interpreted=False):
    energy = {"units_per_joule": per_joule, "joules_per_call": joules_per_call}
    return {"extra_info": {"workload": workload, "impl": impl, "precision": precision, "size": size,
                           "shape": {"model": model} if model else {}, "median_s": median_s,
                           "units_per_s": units_per_s, "energy": energy, "interpreted": interpreted}}


def test_model_phases_are_ranked_per_joule_with_ratios_to_training():
    run = {"benchmarks": [
        record("llm.train", "torch", model="125m", per_joule=10.0),
        record("llm.prefill", "torch", model="125m", size="B1", per_joule=200.0),
        record("llm.prefill", "triton", model="125m", size="B4", per_joule=400.0),
        record("llm.decode", "torch", model="125m", per_joule=5.0),
    ]}
    entry = summarize(run)["models"]["125m"]
    assert entry["metric"] == "tokens_per_joule" and entry["energy_measured"]
    assert entry["phases"]["prefill"] == {"value": 400.0, "impl": "triton", "precision": "bf16", "size": "B4"}
    assert entry["ratio_to_train"] == {"prefill": pytest.approx(40.0), "decode": pytest.approx(0.5)}


def test_without_energy_the_comparison_uses_throughput_and_says_so():
    run = {"benchmarks": [record("llm.train", "torch", model="tiny", units_per_s=50.0),
                          record("llm.decode", "torch", model="tiny", units_per_s=25.0)]}
    summary = summarize(run)
    assert summary["models"]["tiny"]["metric"] == "tokens_per_s"
    assert "tokens/s (energy not measured)" in format_summary(summary)
    assert summary["models"]["tiny"]["ratio_to_train"] == {"decode": 0.5}


def test_triton_vs_torch_excludes_interpreted_records():
    run = {"benchmarks": [
        record("rms_norm.train", "torch", median_s=2.0, joules_per_call=4.0),
        record("rms_norm.train", "triton", median_s=1.0, joules_per_call=1.0),
        record("softmax.infer", "torch", median_s=1.0),
        record("softmax.infer", "triton", median_s=9.0, interpreted=True),
    ]}
    summary = summarize(run)
    assert summary["triton_vs_torch"] == [{"workload": "rms_norm.train", "precision": "bf16", "size": "s",
                                           "speedup": 2.0, "energy_ratio": 4.0}]
    assert summary["excluded_interpreted"] == 1
    text = format_summary(summary)
    assert "rms_norm.train bf16 s: speed x2, energy x4" in text
    assert "1 interpreted Triton record(s) excluded" in text
