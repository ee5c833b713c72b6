"""Typed records: one identity, JSON that round-trips, and the schema derived from the fields."""

import dataclasses
import json
from pathlib import Path

import pytest

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.record import (CASE_FIELDS, IDENTITY_FIELDS, INTERPRETED, EnergyRecord, Record, comparability, kinds,
                              records)

DATA = Path(__file__).parent / "data" / "report"


def info(**changes) -> dict:
    base = {"workload": "gemm.infer", "op": "gemm", "style": "infer", "impl": "torch", "precision": "int8w-bf16",
            "size": "M16-K512-N512", "device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "unit": "tokens",
            "units_per_call": 16.0, "median_s": 1e-3, "timing": {"method": "cuda_event", "samples_s": [1e-3]},
            "mfu": None,  # a field the record does not declare
            "energy": {"source": "nvml", "method": "counter", "reason": None, "valid": True,
                       "joules_per_call": 0.5, "joules_per_unit": 0.5 / 16, "units_per_joule": 32.0,
                       "avg_power_w": 500.0, "uncertainty_pct": 1.0, "channels": {"gpu": {}}}}
    return {**base, **changes}


def test_identity_is_the_one_definition_in_its_order():
    record = Record.from_json(info())
    assert IDENTITY_FIELDS == ("workload", "impl", "style", "precision", "size", "setting", "device_name")
    assert record.identity() == ("gemm.infer", "torch", "infer", "int8w-bf16", "M16-K512-N512", "default",
                                 "NVIDIA H100 80GB HBM3")
    assert record.identity(with_device=False) == record.identity()[:-1]
    assert CASE_FIELDS == IDENTITY_FIELDS[:-1]
    assert schema.IDENTITY == tuple(name for name in CASE_FIELDS if name != "setting")


def test_a_sweep_setting_is_part_of_the_identity_and_old_records_read_as_default():
    old, swept = Record.from_json(info()), Record.from_json(info(setting="sm1200mhz"))
    assert old.setting is None and old.setting_id == "default" and "setting" not in old.to_json()
    assert swept.setting_id == "sm1200mhz" and swept.to_json()["setting"] == "sm1200mhz"
    assert swept.identity() != old.identity() and swept.identity()[:5] == old.identity()[:5]
    assert Record.from_json(info(setting="default")).identity() == old.identity()
    schema.EXTRA_INFO.check(info(), ())  # a record from before sweeps is still a valid record


def test_name_is_the_registry_case_id():
    from wattbench.device import detect
    from wattbench.workloads import cases

    case = cases("quick", detect("cpu"))[0]
    fields = {"workload": case.workload.name, "impl": case.impl, "precision": case.precision, "size": case.size.name}
    assert Record(**fields).name == case.id


def test_missing_identity_fields_are_named():
    assert Record.from_json(info()).missing_identity() is None
    assert Record.from_json(info(precision=None)).missing_identity() == "precision"
    assert Record.from_json(info(device_name=None)).missing_identity(with_device=False) is None
    assert not Record.from_json({}).is_wattbench


def test_json_round_trips_with_undeclared_fields_kept():
    data = info()
    record = Record.from_json(data)
    assert isinstance(record.energy, EnergyRecord) and record.energy.extra == {"channels": {"gpu": {}}}
    assert record.extra == {"mfu": None}
    assert record.to_json() == {**data, "energy": {**data["energy"], **{f: None for f in EnergyRecord.FIGURES
                                                                         if f not in data["energy"]}},
                                **{name: None for name, kind in kinds(Record).items()
                                   if kind.endswith("?") and name not in data}}
    again = Record.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record


def test_not_measured_energy_carries_every_figure_as_null_and_its_reason():
    energy = EnergyRecord.not_measured("no power source")
    written = energy.to_json()
    assert written["reason"] == "no power source" and (written["source"], written["method"]) == ("none", "none")
    assert all(written[f] is None for f in EnergyRecord.FIGURES)
    assert "valid" not in written and "windows" not in written  # not-nullable or unwritten while None
    assert not energy.measured and energy.why_not_measured == "no power source"
    assert not EnergyRecord.from_json(None).measured
    assert EnergyRecord.from_json(None).why_not_measured == "not measured"
    invalid = EnergyRecord.from_json({**info()["energy"], "valid": False})
    assert not invalid.measured


def test_one_comparability_rule():
    assert comparability(False) is None
    assert comparability(True) == INTERPRETED
    assert Record.from_json(info(interpreted=True)).not_comparable == INTERPRETED
    assert Record.from_json(info()).not_comparable is None


def test_schema_fields_are_the_record_fields():
    assert set(schema.EXTRA_INFO.optional) == set(kinds(Record))
    assert set(schema.ENERGY.optional) == set(kinds(EnergyRecord))
    assert all(f.name in kinds(Record) or f.name == "extra" for f in dataclasses.fields(Record))


def test_a_field_of_the_wrong_kind_is_refused_by_the_derived_schema():
    run = json.loads((DATA / "fixture_h100.json").read_text())
    run["benchmarks"][0]["extra_info"]["energy"]["windows"] = "three"
    with pytest.raises(UsageError, match=r"benchmarks\[0\]\.extra_info\.energy\.windows: expected a number or null"):
        schema.check_run(run, "run.json")


def test_every_fixture_record_writes_back_what_it_read():
    for path in DATA.glob("*.json"):
        run = json.loads(path.read_text())
        for bench, record in zip(run["benchmarks"], records(run)):
            written = record.to_json()
            for key, value in bench["extra_info"].items():
                if key == "energy" and value is not None:
                    assert {name: written["energy"].get(name) for name in value} == value
                else:
                    assert written[key] == value
            assert Record.from_json(written) == record
