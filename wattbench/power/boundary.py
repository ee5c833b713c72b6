"""What an energy figure covers: its measurement boundary, named in every energy record.

A GPU-only figure is not the whole cost of the work: Google's figures for one Gemini prompt are 0.24 Wh
full-stack against 0.10 Wh for the accelerators alone. So every energy record says what its figures cover
(`boundary.covers`): the GPU only (NVML's board or module sensor), the host CPU (RAPL, a CPU run), a
chip sensor (hwmon), or everything behind the plug (an external meter's replayed log). Where RAPL is
present beside NVML, the host's CPU packages and DRAM are added to the GPU's for a `gpu_plus_host`
figure, the report showing both. Each figure is total (`joules_per_call`: the idle draw included) or
above idle (`dynamic_joules_per_call`: the idle baseline subtracted), and the block says which is which.
"""

from __future__ import annotations

from typing import Mapping

COVERS = {
    "nvml": "GPU only (NVML, {scope})",
    "rapl": "host CPU (RAPL, {scope})",
    "hwmon": "the chip's sensor (hwmon, {scope})",
    "replay": "everything behind the plug (external meter)",
    "simulated": "simulated GPU",
}
TOTAL = "joules_per_call: everything the boundary drew during the windows, idle draw included"
ABOVE_IDLE = "dynamic_joules_per_call: the idle baseline's power subtracted"


def is_host_channel(name: str) -> bool:
    """RAPL's CPU packages and DRAM zones (top-level or per-package), not psys (the whole SoC, which
    overlaps them): together the host's share of a GPU run."""
    if not name.startswith("rapl:"):
        return False
    domain = name.split(":", 1)[1]
    return ("/" not in domain and domain.startswith("package")) or domain.split("/")[-1].startswith("dram")


def boundary(source: str, scope: str | None, joules_per_call: float | None, idle_known: bool,
             channels: Mapping[str, Mapping]) -> dict:
    """The `boundary` block of an energy record from its primary source and scope, its total J per call and
    its channels (name -> {"joules_per_call", ...})."""
    block = {"covers": COVERS.get(source, f"{source} ({scope})").format(scope=scope), "total": TOTAL,
             "above_idle": ABOVE_IDLE if idle_known else None}
    host = {name: each["joules_per_call"] for name, each in channels.items() if is_host_channel(name)}
    if source == "nvml" and host:
        block["host_channels"] = sorted(host)
        known = joules_per_call is not None and None not in host.values()
        block["gpu_plus_host_joules_per_call"] = joules_per_call + sum(host.values()) if known else None
        block["gpu_plus_host"] = "GPU (NVML) + host CPU packages and DRAM (RAPL); not the rest of the host"
    return block
