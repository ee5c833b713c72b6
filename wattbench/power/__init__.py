"""Power and energy measurement: NVML, RAPL, hwmon and replay sources, one sampler thread.

Contract used by the harness:
- `PowerConfig`: how energy windows are measured.
- `PowerMonitor(device, config)`: a context manager that owns the sampler for one run.
  `measure(step, sync, units_per_call)` returns the `extra_info["energy"]` record of one
  benchmark; `run_info()` returns the run-level block (sources, idle baseline, settings).
- `describe_sources(device)`: a `SourceStatus` per power source: usable or not, and why.
- `PowerMonitor.write_trace(path)`: the run's power trace as CSV (with `save_trace`).
- `energy_from_power` / `energy_from_counter`: the integrators, for users with their own logs.
"""

from wattbench.power.base import SourceStatus
from wattbench.power.integrate import energy_from_counter, energy_from_power
from wattbench.power.monitor import ENERGY_FIELDS, PowerConfig, PowerMonitor, describe_sources

__all__ = ["ENERGY_FIELDS", "PowerConfig", "PowerMonitor", "SourceStatus", "describe_sources",
           "energy_from_counter", "energy_from_power"]
