"""Device spec table: peak throughput, bandwidth, memory and TDP, each figure with its source.

The table ships as `specs/devices.json`; users add devices (GPUs or CPUs) with a file of the
same format, whose entries are tried before the shipped ones:

    {"format": "wattbench-device-specs/1",
     "devices": [{"name": "My CPU", "kind": "cpu", "match": ["EPYC 9654"],
                  "peak_tflops": {"fp32": {"value": 1.0, "source": "where this came from"}},
                  "memory_bandwidth_gbps": {"value": 1.0, "source": "..."},
                  "memory_gb": {...}, "tdp_w": {...}, "notes": ["optional"]}]}

`match` holds regular expressions searched (case-insensitively) in a run's device name.
Every figure is `{"value": number, "source": text}`: a number without a source is rejected,
so that a % of peak is never computed from a figure nobody can check.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from wattbench.errors import UsageError

SHIPPED = Path(__file__).with_name("specs") / "devices.json"
FORMAT = "wattbench-device-specs/1"
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
FIGURES = ("memory_bandwidth_gbps", "memory_gb", "tdp_w")


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

    def matches(self, device_name: str) -> bool:
        return device_name == self.name or any(p.search(device_name) for p in self.patterns)

    def peak_for(self, precision: str) -> float | None:
        """Peak dense TFLOP/s for a record's precision (fp32 records use the non-tensor FP32 peak)."""
        return self.peak_tflops.get(precision)


def _figure(entry: dict, key: str, where: str) -> tuple[float, str] | None:
    figure = entry.get(key)
    if figure is None:
        return None
    if not isinstance(figure, dict) or not isinstance(figure.get("source"), str) or not figure["source"].strip():
        raise UsageError(f"{where}: {key} must be {{\"value\": number, \"source\": text}}, got {figure!r}")
    value = figure.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{where}: {key} value must be a positive number, got {value!r}")
    return float(value), figure["source"]


def _parse_device(entry: dict, where: str) -> DeviceSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise UsageError(f"{where}: each device needs a 'name' string")
    where = f"{where}: device {entry['name']!r}"
    kind = entry.get("kind", "gpu")
    if kind not in ("gpu", "cpu"):
        raise UsageError(f"{where}: kind must be 'gpu' or 'cpu', got {kind!r}")
    match = entry.get("match", [])
    if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
        raise UsageError(f"{where}: match must be a list of regular expressions")
    try:
        patterns = tuple(re.compile(m, re.IGNORECASE) for m in match)
    except re.error as exc:
        raise UsageError(f"{where}: bad match pattern: {exc}") from None
    peaks_entry = entry.get("peak_tflops", {})
    if not isinstance(peaks_entry, dict) or set(peaks_entry) - set(PRECISIONS):
        raise UsageError(f"{where}: peak_tflops keys must be among {', '.join(PRECISIONS)}")
    sources, peaks, figures = {}, {}, {}
    for precision in peaks_entry:
        value, sources[f"peak_tflops.{precision}"] = _figure(peaks_entry, precision, where)
        peaks[precision] = value
    for key in FIGURES:
        found = _figure(entry, key, where)
        figures[key] = None if found is None else found[0]
        if found is not None:
            sources[key] = found[1]
    return DeviceSpec(entry["name"], kind, patterns, peaks, sources=sources,
                      notes=tuple(entry.get("notes", ())), **figures)


def _read(path: Path) -> list[DeviceSpec]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read spec file: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: spec file is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("devices"), list):
        raise UsageError(f"{path}: not a device spec file: expected format {FORMAT!r} and a 'devices' list")
    return [_parse_device(entry, str(path)) for entry in data["devices"]]


@dataclass(frozen=True)
class SpecTable:
    devices: tuple[DeviceSpec, ...]

    def find(self, device_name: str) -> DeviceSpec | None:
        """The first device (user entries first) whose name or pattern matches `device_name`."""
        if not isinstance(device_name, str):
            return None
        return next((spec for spec in self.devices if spec.matches(device_name)), None)


def load_specs(user_file: Path | None = None) -> SpecTable:
    """The shipped table, with `user_file`'s devices (if given) tried first."""
    devices = _read(user_file) if user_file is not None else []
    return SpecTable(tuple(devices + _read(SHIPPED)))
