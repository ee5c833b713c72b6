"""Which records of two run files measure the same thing, and whether the runs may be compared at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from wattbench.errors import UsageError
from wattbench.record import Record, records
from wattbench.results import run_environment


def benchmark_id(record: Record | Mapping) -> str:
    """The registry case id (`Case.id`, Record.name): workload-impl-precision-size; patterns match against it."""
    return (record if isinstance(record, Record) else Record.from_json(record)).name


@dataclass
class Matching:
    """Pairs of (baseline, current) records with the same identity, and what is on one side only."""

    pairs: list[tuple[str, Record, Record]] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: int = 0


def index_run(run: dict, label: str, with_device: bool = True) -> tuple[dict[tuple, Record], int]:
    """Records by identity (Record.identity), and how many records without wattbench fields were ignored."""
    indexed: dict[tuple, Record] = {}
    ignored = 0
    for bench in run["benchmarks"]:
        record = Record.from_json(bench["extra_info"])
        if not record.is_wattbench:
            ignored += 1
            continue
        absent = record.missing_identity(with_device)
        if absent:
            raise UsageError(f"{label}: benchmark {bench.get('name', '?')!r} lacks identity field {absent!r}")
        key = record.identity(with_device)
        if key in indexed:
            raise UsageError(f"{label}: benchmark {describe(record, with_device)} appears twice")
        indexed[key] = record
    return indexed, ignored


def describe(record: Record, with_device: bool = False) -> str:
    return record.label + (f" on {record.device_name}" if with_device else "")


def match(baseline: dict, current: dict, with_device: bool = True) -> Matching:
    """Pair records by identity (record.IDENTITY_FIELDS, the device's name left out unless `with_device`)."""
    base, base_ignored = index_run(baseline, "baseline", with_device)
    cur, cur_ignored = index_run(current, "current", with_device)
    result = Matching(ignored=base_ignored + cur_ignored)
    for key, record in cur.items():
        if key in base:
            result.pairs.append((record.label, base[key], record))
        else:
            result.new.append(record.label)
    result.missing = [record.label for key, record in base.items() if key not in cur]
    return result


def refusals(baseline: dict, current: dict) -> list[str]:
    """Why the two runs should not be compared: different device, driver major version, or Triton mode."""
    reasons = []
    base_device, cur_device = _device_name(baseline), _device_name(current)
    if base_device != cur_device:
        reasons.append(f"different devices: baseline ran on {base_device!r}, current on {cur_device!r}")
    base_driver, cur_driver = _driver_major(baseline), _driver_major(current)
    if base_driver and cur_driver and base_driver != cur_driver:
        reasons.append(f"different NVIDIA driver major versions: baseline {base_driver}, current {cur_driver}")
    base_mode, cur_mode = _interpreted(baseline), _interpreted(current)
    if base_mode is not None and cur_mode is not None and base_mode != cur_mode:
        mode = {True: "interpreted", False: "compiled"}
        reasons.append(f"Triton {mode[base_mode]} in the baseline but {mode[cur_mode]} in the current run")
    return reasons


def _device_name(run: dict) -> str | None:
    return run["wattbench"].get("device_name") or (run_environment(run).get("device") or {}).get("name")


def _driver_major(run: dict) -> str | None:
    driver = run_environment(run).get("nvidia_driver")
    return driver.split(".")[0] if isinstance(driver, str) else None


def _interpreted(run: dict) -> bool | None:
    """Whether the run's Triton kernels were interpreted: from the environment, else from its records."""
    mode = run_environment(run).get("triton_interpreted")
    if isinstance(mode, bool):
        return mode
    triton = [record.interpreted for record in records(run)
              if isinstance(record.interpreted, bool) and record.impl == "triton"]
    return any(triton) if triton else None
