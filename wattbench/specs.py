"""Device spec table: peak throughput, bandwidth, memory and TDP, each figure with its source.

The run (MFU), `selfcheck kernels` (the roofline) and the report (% of peak) read it. The table ships as
`device_specs.json` beside this module; users add devices (GPUs or CPUs) with a file of the
same format, whose entries are tried before the shipped ones:

    {"format": "wattbench-device-specs/1",
     "devices": [{"name": "My CPU", "kind": "cpu", "match": ["EPYC 9654"],
                  "peak_tflops": {"fp32": {"value": 1.0, "source": "where this came from"}},
                  "memory_bandwidth_gbps": {"value": 1.0, "source": "..."},
                  "memory_gb": {...}, "tdp_w": {...}, "notes": ["optional"]}]}

`match` holds regular expressions searched (case-insensitively) in a run's device name.
Every figure is `{"value": number, "source": text}`: a number without a source is rejected,
so that a % of peak is never computed from a figure nobody can check.

A MIG slice ("NVIDIA H100 80GB HBM3 MIG 1g.10gb") has a fraction of its GPU's SMs, memory and
bandwidth: it matches only an entry written for MIG slices (one whose name or a pattern says
MIG), never the whole GPU's.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.precision import Precision

SHIPPED = Path(__file__).with_name("device_specs.json")
FIGURES = schema.SPEC_FIGURES

#: How CUDA and NVML name a MIG slice (or a spec entry written for one).
MIG = re.compile(r"\bMIG\b", re.IGNORECASE)


@dataclass(frozen=True)
class DeviceSpec:
    """One device's figures (None where no source gave one) and where each came from."""

    name: str
    kind: str
    patterns: tuple[re.Pattern, ...]
    peak_tflops: dict[str, float]
    memory_bandwidth_gbps: float | None
    memory_gb: float | None
    tdp_w: float | None
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def for_mig_slices(self) -> bool:
        return bool(MIG.search(self.name)) or any(MIG.search(p.pattern) for p in self.patterns)

    def matches(self, device_name: str) -> bool:
        if MIG.search(device_name) and not self.for_mig_slices:
            return False  # a slice against the whole GPU's peaks would understate its utilisation
        return device_name == self.name or any(p.search(device_name) for p in self.patterns)

    def peak_for(self, precision: str | Precision) -> float | None:
        """Peak dense TFLOP/s at the precision's compute dtype (`Precision.peak_dtype`: int8w-bf16 on the bf16
        peak, fp32 on the non-tensor FP32 peak); None without that figure or for a precision wattbench does not know."""
        try:
            return self.peak_tflops.get(Precision.parse(precision).peak_dtype)
        except ValueError:
            return None

    def attainable_tflops(self, precision: str | Precision, flops_per_byte: float) -> float | None:
        """The roofline's bound at an arithmetic intensity: min(peak TFLOP/s, FLOP/byte x peak bandwidth);
        None without either figure."""
        peak = self.peak_for(precision)
        if peak is None or self.memory_bandwidth_gbps is None:
            return None
        return min(peak, flops_per_byte * self.memory_bandwidth_gbps / 1e3)


def _figure(figure: dict | None) -> tuple[float | None, str | None]:
    return (None, None) if figure is None else (float(figure["value"]), figure["source"])


def _parse_device(entry: dict, where: str) -> DeviceSpec:
    """One entry of a spec file already checked against `schema.SPEC_DEVICE`: the checks its types leave."""
    kind = entry.get("kind", "gpu")
    if kind not in ("gpu", "cpu"):
        raise UsageError(f"{where}.kind must be 'gpu' or 'cpu', got {kind!r}")
    patterns = []
    for position, pattern in enumerate(entry.get("match", [])):
        try:
            patterns.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise UsageError(f"{where}.match[{position}]: bad match pattern: {exc}") from None
    sources, peaks, figures = {}, {}, {}
    for precision, figure in entry.get("peak_tflops", {}).items():
        peaks[precision], sources[f"peak_tflops.{precision}"] = _figure(figure)
    for key in FIGURES:
        figures[key], source = _figure(entry.get(key))
        if source is not None:
            sources[key] = source
    return DeviceSpec(entry["name"], kind, tuple(patterns), peaks, sources=sources,
                      notes=tuple(entry.get("notes", ())), **figures)


def _read(path: Path) -> list[DeviceSpec]:
    data = schema.read_json(path)
    schema.check_specs(data, path)
    return [_parse_device(entry, f"{path}: devices[{position}]") for position, entry in enumerate(data["devices"])]


@dataclass(frozen=True)
class SpecTable:
    devices: tuple[DeviceSpec, ...]

    def find(self, device_name: str) -> DeviceSpec | None:
        """The first device (user entries first) whose name or pattern matches `device_name`;
        for a MIG slice, only among entries written for slices."""
        if not isinstance(device_name, str):
            return None
        return next((spec for spec in self.devices if spec.matches(device_name)), None)


@functools.cache
def _shipped() -> tuple[DeviceSpec, ...]:
    """The shipped table, read and checked once: `load_specs` is called for every MFU record."""
    return tuple(_read(SHIPPED))


def load_specs(user_file: Path | None = None) -> SpecTable:
    """The shipped table, with `user_file`'s devices (if given) tried first."""
    devices = _read(user_file) if user_file is not None else []
    return SpecTable(tuple(devices) + _shipped())
