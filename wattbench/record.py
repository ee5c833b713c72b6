"""A benchmark record and its energy block as types: the one definition of their fields and of a record's identity.

A run file stores each record as the `extra_info` object of a pytest-benchmark record. The writers
(measure.record_fields, PowerMonitor, multi.merge_runs) build these types and write `to_json()`;
the readers (the report, the gate, the run's summary and table) read `Record.from_json(extra_info)`;
the run-file schema (wattbench.schema) is derived from the fields declared here, so a field is added
in one place. Each field's `kind` says what JSON value it holds ("number?": a number or null); a field
whose kind is not nullable is left out of the JSON while it is None. Fields this module does not
declare (a workload's own metrics, the monitor's per-channel detail) ride along in `extra`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

#: What names a benchmark across runs, the device it ran on last: the gate pairs records on it, the report
#: groups by it. A new dimension of a benchmark is added here and as a Record field.
IDENTITY_FIELDS = ("workload", "impl", "style", "precision", "size", "setting", "device_name")
#: The device settings of a record that names none: the host's own (and every record from before power sweeps).
DEFAULT_SETTING = "default"
#: Identity fields a record may leave out, and what it then reads as.
IDENTITY_DEFAULTS = {"setting": DEFAULT_SETTING}
#: The identity without the device.
CASE_FIELDS = tuple(name for name in IDENTITY_FIELDS if name != "device_name")
#: The case fields a record gives all of or none of (pytest-benchmark's own records).
STATED_CASE_FIELDS = tuple(name for name in CASE_FIELDS if name not in IDENTITY_DEFAULTS)
#: Why an interpreted record is compared with nothing (the run's summary, the report, the gate).
INTERPRETED = "Triton ran through its interpreter, so its timing and energy mean nothing"


def _field(kind: str, keep_null: bool | None = None):
    """A declared field; a None is written as null when `keep_null` (default: when the kind is nullable)."""
    return field(default=None, metadata={"kind": kind, "keep_null": kind.endswith("?") if keep_null is None
                                         else keep_null})


def kinds(record_type) -> dict[str, str]:
    """Field name -> kind, for the schema (the `extra` field holds no declared kind)."""
    return {f.name: f.metadata["kind"] for f in dataclasses.fields(record_type) if "kind" in f.metadata}


def _from_json(record_type, data: Mapping, **converted) -> Any:
    declared = kinds(record_type)
    values = {name: data[name] for name in declared if name in data}
    extra = {key: value for key, value in data.items() if key not in declared}
    return record_type(**{**values, **converted}, extra=extra)


def _to_json(record) -> dict:
    out = {}
    for declared in dataclasses.fields(record):
        value = getattr(record, declared.name)
        if isinstance(value, EnergyRecord):
            value = value.to_json()
        if declared.name != "extra" and (value is not None or declared.metadata["keep_null"]):
            out[declared.name] = value
    return {**out, **record.extra}


def case_label(case: str, setting: str | None) -> str:
    """The name a message gives a case's record: its id, with `@SETTING` when a sweep measured it at another
    setting than the device's own (a sweep's run file holds one record of a case per setting)."""
    return case if setting in (None, DEFAULT_SETTING) else f"{case}@{setting}"


@dataclass(frozen=True)
class EnergyRecord:
    """A benchmark's energy: how it was measured (or why not) and its figures, each None when not measured."""

    source: str = _field("string")
    method: str = _field("string")
    reason: str | None = _field("string?")
    valid: bool | None = _field("bool")
    scope: str | None = _field("string?", keep_null=False)
    joules_per_call: float | None = _field("number?")
    joules_per_unit: float | None = _field("number?")
    units_per_joule: float | None = _field("number?")
    avg_power_w: float | None = _field("number?")
    peak_power_w: float | None = _field("number?")
    idle_power_w: float | None = _field("number?")
    dynamic_joules_per_call: float | None = _field("number?")
    window_s: float | None = _field("number?")
    samples: float | None = _field("number?")
    uncertainty_pct: float | None = _field("number?")
    windows: int | None = _field("number?", keep_null=False)
    valid_windows: int | None = _field("number?", keep_null=False)
    window_units_per_s: float | None = _field("number?", keep_null=False)
    window_seconds_per_call: float | None = _field("number?", keep_null=False)
    window_spans_s: list | None = _field("spans")
    window_joules_per_call: list | None = _field("number?[]")
    edge_calls: int | None = _field("integer")
    adaptive: dict | None = _field("adaptive")
    #: What the figures cover (wattbench.power.boundary): GPU only, host CPU, behind the plug; total vs above idle.
    boundary: dict | None = _field("object")
    extra: dict = field(default_factory=dict)

    #: The figures every energy record carries, None where there is none.
    FIGURES = ("joules_per_call", "joules_per_unit", "units_per_joule", "avg_power_w", "peak_power_w",
               "idle_power_w", "dynamic_joules_per_call", "window_s", "samples", "uncertainty_pct")
    #: A figure per unit needs these beside it.
    TOGETHER = {"joules_per_unit": ("method", "units_per_joule", "avg_power_w")}

    @classmethod
    def not_measured(cls, reason: str) -> EnergyRecord:
        return cls(source="none", method="none", reason=reason, boundary={"covers": "nothing: energy not measured"})

    @classmethod
    def from_json(cls, data: Mapping | None) -> EnergyRecord:
        """A record's energy block; {} or None (energy never attempted) reads as not measured, without a reason."""
        return _from_json(cls, data or {})

    def to_json(self) -> dict:
        return _to_json(self)

    @property
    def measured(self) -> bool:
        """Whether the record holds energy per unit that its windows vouch for."""
        return self.joules_per_unit is not None and self.valid is not False

    @property
    def why_not_measured(self) -> str:
        return self.reason or "not measured"


@dataclass(frozen=True)
class Record:
    """wattbench's fields of one benchmark record (`extra_info`): what ran, where, how it was timed, and its figures."""

    workload: str | None = _field("string")
    op: str | None = _field("string?")
    style: str | None = _field("string")
    impl: str | None = _field("string")
    precision: str | None = _field("string")
    size: str | None = _field("string")
    #: The device setting of a power sweep (wattbench.power.knobs.Setting.id: `pl300w`, `sm1200mhz`); None:
    #: DEFAULT_SETTING.
    setting: str | None = _field("string")
    shape: dict | None = _field("object")
    device: str | None = _field("string")
    device_name: str | None = _field("string?")
    interpreted: bool | None = _field("bool")
    seed: int | None = _field("integer")
    unit: str | None = _field("string")
    units_per_call: float | None = _field("number")
    flops: float | None = _field("number")
    bytes: float | None = _field("number")
    timing: dict | None = _field("timing")
    median_s: float | None = _field("number?")
    units_per_s: float | None = _field("number?")
    tflops: float | None = _field("number?")
    gbps: float | None = _field("number?")
    note: str | None = _field("string")
    #: How a decode-style step ran its tokens: "cuda_graph" (one replay per token) or "eager".
    decode: str | None = _field("string")
    #: What fp32 dots ran on a GPU, by torch's TF32 switch (both impls follow it): "ieee" (FMA loops, torch's
    #: default) or "tf32" (tensor cores); a factor of several in time and energy.
    fp32_dots: str | None = _field("string")
    #: The compiled impl's torch.compile settings ({"mode", "backend"}) and the wall seconds its compilation took
    #: (outside the timed rounds and the energy windows).
    compile: dict | None = _field("object")
    compile_s: float | None = _field("number")
    #: The server scenario's energy per request and per phase (wattbench.power.attribution.Attribution.as_dict).
    energy_attribution: dict | None = _field("object")
    #: The accuracy guard of a quantised case (wattbench.accuracy): a GEMM's relative error against the dense
    #: reference, a model's top-1 agreement and KL divergence (nats per token) against the dense model, the
    #: torch path it names (`reference_path`: "torch._scaled_mm" or a labelled fallback), and the verdict.
    accuracy: float | None = _field("number")
    top1_agreement: float | None = _field("number")
    kl_divergence: float | None = _field("number")
    reference_path: str | None = _field("string")
    within_budget: bool | None = _field("bool")
    accuracy_note: str | None = _field("string")
    energy: EnergyRecord | None = _field("energy?")
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping) -> Record:
        """A record's `extra_info` (checked by wattbench.schema); its energy block becomes an EnergyRecord."""
        energy = data.get("energy")
        return _from_json(cls, data, energy=None if energy is None else EnergyRecord.from_json(energy))

    def to_json(self) -> dict:
        return _to_json(self)

    @property
    def is_wattbench(self) -> bool:
        """False for pytest-benchmark's own records, which carry none of wattbench's fields."""
        return self.workload is not None

    def identity_value(self, name: str):
        """An identity field's value, IDENTITY_DEFAULTS' where the record leaves it out."""
        value = getattr(self, name)
        return IDENTITY_DEFAULTS.get(name) if value is None else value

    def missing_identity(self, with_device: bool = True) -> str | None:
        """The first identity field this record lacks, or None."""
        fields = IDENTITY_FIELDS if with_device else CASE_FIELDS
        return next((name for name in fields if not isinstance(self.identity_value(name), str)), None)

    def identity(self, with_device: bool = True) -> tuple:
        """The benchmark this record measures (IDENTITY_FIELDS' values), with or without the device's name."""
        return tuple(self.identity_value(name) for name in (IDENTITY_FIELDS if with_device else CASE_FIELDS))

    @property
    def setting_id(self) -> str:
        """The device setting it was measured at (DEFAULT_SETTING where it names none)."""
        return self.identity_value("setting")

    @property
    def name(self) -> str:
        """The registry case id (`Case.id`, the pytest id): workload-impl-precision-size."""
        return f"{self.workload}-{self.impl}-{self.precision}-{self.size}"

    @property
    def label(self) -> str:
        """The name a message gives it (see `case_label`)."""
        return case_label(self.name, self.setting_id)

    @property
    def not_comparable(self) -> str | None:
        """Why this record must not be compared with any other (None: it may be): the one rule every comparison
        applies (the run's summary, the report, the gate)."""
        return comparability(bool(self.interpreted))

    @property
    def energy_or_none(self) -> EnergyRecord:
        """The energy block, or a not-measured one when the record has none."""
        return self.energy or EnergyRecord()


def comparability(interpreted: bool) -> str | None:
    """Why a record measured this way cannot be compared (None: it can). Interpreted Triton timing means nothing."""
    return INTERPRETED if interpreted else None


def records(run: Mapping) -> list[Record]:
    """Every record of a run file's benchmarks, in order."""
    return [Record.from_json(bench["extra_info"]) for bench in run["benchmarks"]]
