"""Power and energy measurement (skeleton: the power sources are being built; see issue 3).

Contract used by the harness:
- `PowerConfig`: how energy windows are measured.
- `PowerMonitor(device, config)`: a context manager that owns the sampler for one run.
  `measure(step, sync, units_per_call)` returns the `extra_info["energy"]` record of one
  benchmark; `run_info()` returns the run-level block (sources, idle baseline, settings).
- `describe_sources(device)`: a `SourceStatus` per power source: usable or not, and why.
- `PowerMonitor.write_trace(path)`: the run's power trace as CSV (with `save_trace`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from wattbench.device import Device

ENERGY_FIELDS = ("joules_per_call", "joules_per_unit", "units_per_joule", "avg_power_w", "peak_power_w",
                 "idle_power_w", "dynamic_joules_per_call", "window_s", "samples", "uncertainty_pct")


@dataclass(frozen=True)
class PowerConfig:
    min_window_s: float = 5.0
    repeats: int = 3
    idle_s: float = 10.0
    replay_path: str | None = None
    save_trace: bool = False


@dataclass(frozen=True)
class SourceStatus:
    name: str
    available: bool
    detail: str


def describe_sources(device: Device) -> list[SourceStatus]:
    return [SourceStatus("none", True, "no power source is implemented yet")]


class PowerMonitor:
    def __init__(self, device: Device, config: PowerConfig = PowerConfig()):
        self.device = device
        self.config = config
        self.reason = "no power source: " + "; ".join(s.detail for s in describe_sources(device))

    def __enter__(self) -> "PowerMonitor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def measure(self, step: Callable[[], Any], sync: Callable[[], None], units_per_call: float) -> dict:
        return {"source": "none", "method": "none", "reason": self.reason, **{f: None for f in ENERGY_FIELDS}}

    def write_trace(self, path: str) -> None:
        return None

    def run_info(self) -> dict:
        return {"sources": [], "reason": self.reason, "config": asdict(self.config)}
