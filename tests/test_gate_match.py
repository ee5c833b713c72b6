"""Matching benchmarks across runs by identity, and refusing runs that must not be compared."""

import pytest

from wattbench.errors import UsageError
from wattbench.gate.compare import compare_time
from wattbench.gate.config import GateConfig
from wattbench.gate.match import benchmark_id, match, refusals

from test_gate_fixtures import record, run


def ids(pairs):
    return sorted(name for name, _, _ in pairs)


def test_records_match_by_workload_impl_style_precision_size_and_device():
    baseline = run([record(), record(impl="triton"), record(precision="bf16"), record(size="M1-K512-N512")])
    current = run([record(impl="triton"), record(), record(precision="bf16"), record(workload="gemm.train")])
    result = match(baseline, current)
    assert ids(result.pairs) == ["gemm.infer-torch-bf16-M16-K512-N512", "gemm.infer-torch-fp32-M16-K512-N512",
                                 "gemm.infer-triton-fp32-M16-K512-N512"]
    assert result.new == ["gemm.train-torch-fp32-M16-K512-N512"]
    assert result.missing == ["gemm.infer-torch-fp32-M1-K512-N512"]
    for name, base, cur in result.pairs:
        assert benchmark_id(base) == benchmark_id(cur) == name


def at(setting, **fields):
    bench = record(**fields)
    bench["extra_info"]["setting"] = setting
    return bench


def test_a_sweeps_records_are_named_with_their_setting_and_keep_the_cases_thresholds():
    """One case at three settings: three pairs, each named NAME@SETTING (the device's own setting by its name
    alone), so a verdict says which setting moved; a pattern on the case id still sets its threshold."""
    case = "gemm.infer-torch-fp32-M16-K512-N512"
    baseline = run([at("default"), at("pl300w"), at("sm1200mhz")])
    current = run([at("default"), at("pl300w"), at("pl200w")])
    result = match(baseline, current)
    assert ids(result.pairs) == [case, f"{case}@pl300w"]
    assert result.new == [f"{case}@pl200w"] and result.missing == [f"{case}@sm1200mhz"]
    config = GateConfig(patterns=(("gemm.infer-*-K512-N512", {"time": 0.2}),))
    (pair,) = [p for p in result.pairs if p[0].endswith("@pl300w")]
    assert compare_time(*pair, config).threshold == 0.2


def test_device_name_is_part_of_the_identity_unless_ignored():
    baseline, current = run([record(device_name="GPU A")]), run([record(device_name="GPU B")])
    assert match(baseline, current).pairs == []
    assert len(match(baseline, current, with_device=False).pairs) == 1


def test_records_without_wattbench_fields_are_ignored_and_counted():
    plain = {"name": "test_other", "extra_info": {}}
    result = match(run([record(), plain]), run([record()]))
    assert (len(result.pairs), result.ignored) == (1, 1)


def test_duplicate_identity_is_bad_input():
    with pytest.raises(UsageError, match="current: benchmark gemm.infer-torch-fp32-M16-K512-N512 .* appears twice"):
        match(run([record()]), run([record(), record()]))


def test_missing_identity_field_is_bad_input():
    broken = record()
    del broken["extra_info"]["precision"]
    with pytest.raises(UsageError, match="baseline: .* lacks identity field 'precision'"):
        match(run([broken]), run([record()]))


def test_same_device_driver_and_mode_raise_no_refusal():
    assert refusals(run([record()]), run([record()], driver="550.90.07")) == []


@pytest.mark.parametrize("current, reason", [
    (run([record(device_name="NVIDIA A100")], device_name="NVIDIA A100"), "different devices"),
    (run([record()], driver="535.104.05"), "different NVIDIA driver major versions: baseline 550, current 535"),
    (run([record()], interpreted=True), "Triton compiled in the baseline but interpreted in the current run"),
])
def test_refusals_say_why(current, reason):
    found = refusals(run([record()]), current)
    assert len(found) == 1 and reason in found[0]


def test_unknown_driver_on_one_side_is_not_a_refusal():
    assert refusals(run([record()]), run([record()], driver={"unknown": True, "reason": "x"})) == []
