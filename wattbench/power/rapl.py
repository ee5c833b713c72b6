"""RAPL energy counters of the CPU through /sys/class/powercap/*/energy_uj.

Package, DRAM and psys domains stay separate channels (psys already contains package and
DRAM; core and uncore are parts of package and are left out). The counters wrap at
`max_energy_range_uj`; the sampler thread is their only reader, so unwrapping needs no lock.
"""

from __future__ import annotations

from pathlib import Path

from wattbench.device import Device
from wattbench.power import sysfs
from wattbench.power.base import Channel, Probe, SensorFault, SourceStatus

KEPT_DOMAINS = ("package", "dram", "psys")

PERMISSION_HINT = ("energy_uj is readable by root only (kernel fix for CVE-2020-8694): run as root or "
                   "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj`")


class RaplCounter:
    """Reads one zone's energy_uj and unwraps it into a monotonic count of joules."""

    def __init__(self, zone: Path):
        self.path = zone / "energy_uj"
        self.max_range_uj = sysfs.read_int(zone / "max_energy_range_uj")
        self._last_raw: int | None = None
        self._wrapped_uj = 0

    def read(self) -> float:
        raw = sysfs.read_sensor(self.path, PERMISSION_HINT)
        if self._last_raw is not None and raw < self._last_raw:
            self._wrapped_uj += self.max_range_uj
        self._last_raw = raw
        return (raw + self._wrapped_uj) / 1e6


def domain_label(zone: Path) -> str:
    """`package-0`, or `package-0/dram` for a subzone (every socket has its own dram zone)."""
    name = sysfs.read_text(zone / "name", zone.name)
    parent = zone.name.rsplit(":", 1)[0]
    if zone.name.count(":") >= 2:
        return f"{sysfs.read_text(zone.parent / parent / 'name', parent)}/{name}"
    return name


def probe(device: Device, sysfs_root: str = "/sys") -> Probe:
    powercap = Path(sysfs_root) / "class" / "powercap"
    if not powercap.is_dir():
        return Probe(SourceStatus("rapl", False, f"{powercap} absent (no RAPL driver loaded, or a container "
                                                 "without it mounted)"))
    zones = sorted(z for z in powercap.iterdir() if (z / "energy_uj").exists() and "mmio" not in z.name)
    channels, problems = [], []
    for zone in zones:
        label = domain_label(zone)
        if label.split("/")[-1].split("-")[0] not in KEPT_DOMAINS:
            continue
        try:
            counter = RaplCounter(zone)
            counter.read()
        except SensorFault as fault:
            problems.append(fault.reason)
            continue
        except (OSError, ValueError) as err:
            problems.append(f"cannot read {zone}/max_energy_range_uj: {err}")
            continue
        channels.append(Channel(f"rapl:{label}", "rapl", "counter", f"CPU {label}", read=counter.read,
                                resolution=1e-6))
    if not channels:
        detail = problems[0] if problems else f"no package, dram or psys zones with energy_uj under {powercap}"
        return Probe(SourceStatus("rapl", False, detail))
    packages = [c for c in channels if "/" not in c.name and c.name.startswith("rapl:package")]
    domains = [c.name.split(":", 1)[1] for c in channels]
    if device.type != "cpu":
        detail = f"{', '.join(domains)}; host CPU energy, reported beside the {device.spec} energy"
        return Probe(SourceStatus("rapl", True, detail), channels, [], {"domains": domains})
    primary = packages or [c for c in channels if c.name.endswith("psys")]
    if not primary:
        return Probe(SourceStatus("rapl", False, f"only {', '.join(domains)}: no package or psys domain"))
    detail = f"{', '.join(domains)}; the CPU's energy is the sum of {', '.join(c.name for c in primary)}"
    return Probe(SourceStatus("rapl", True, detail), channels, primary, {"domains": domains})
