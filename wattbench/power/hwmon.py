"""hwmon power and energy sensors: /sys/class/hwmon/hwmon*/{energy,power}*_{input,average}.

Per chip the energy counters (µJ) are preferred; without them, instantaneous power (µW),
else averaged power (µW). amdgpu chips (and INA rail monitors on Jetson boards) measure
GPUs; every other chip is taken as measuring the host.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from wattbench.device import Device
from wattbench.power import sysfs
from wattbench.power.base import Channel, Probe, SensorFault, SourceStatus

#: (file-name pattern, method, scale to J or W), best first.
KINDS = ((r"energy\d+_input", "counter", 1e-6), (r"power\d+_input", "instant", 1e-6),
         (r"power\d+_average", "average", 1e-6))

#: Labels of sensors that cover the whole chip rather than one core or rail.
WHOLE_CHIP = re.compile(r"socket|package|pkg|total|ppt|cpu|soc", re.IGNORECASE)

#: hwmon does not say how long its averages are; assume a 1 s window like NVML's.
AVERAGE_SETTLE_S = 1.0


def is_gpu_chip(name: str) -> bool:
    return name == "amdgpu" or name.startswith("ina")


def sensor_reader(path: Path, scale: float):
    def read() -> float:
        return sysfs.read_sensor(path) * scale
    return read


def chip_channels(chip: Path, chip_name: str) -> tuple[list[Channel], list[str]]:
    """The channels of the best kind this chip offers, and the reasons any sensor was unusable."""
    problems = []
    for pattern, method, scale in KINDS:
        files = sorted((f for f in chip.iterdir() if re.fullmatch(pattern, f.name)),
                       key=lambda f: int(re.search(r"\d+", f.name).group()))
        channels = []
        for path in files:
            sensor = path.name.rsplit("_", 1)[0]
            label = sysfs.read_text(chip / f"{sensor}_label", sensor)
            read = sensor_reader(path, scale)
            try:
                read()
            except SensorFault as fault:
                problems.append(fault.reason)
                continue
            channels.append(Channel(f"hwmon:{chip.name}:{chip_name}:{label}", "hwmon", method, f"{chip_name} {label}",
                                    read=read, settle_s=AVERAGE_SETTLE_S if method == "average" else 0.0,
                                    resolution=1e-6))
        if channels:
            return channels, problems
    return [], problems


def pci_address(device: Device) -> str | None:
    """The GPU's PCI address as sysfs names it (`0000:03:00`), from torch's device properties; None when
    torch does not say (a CPU build, an old torch)."""
    try:
        props = torch.cuda.get_device_properties(device.index)
        return f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}"
    except (AssertionError, AttributeError, RuntimeError, ValueError):
        return None


def gpu_chip(chips: list[tuple[Path, list[Channel]]], device: Device) -> list[tuple[Path, list[Channel]]]:
    """The one GPU chip that measures `device`: the chip whose PCI device is the GPU's. torch's device
    index follows HIP/CUDA_VISIBLE_DEVICES and its own ordering, not sysfs's, so an index picks the wrong
    board on a multi-GPU host; the index is used only for chips without a PCI device (Jetson's INA rails)."""
    address = pci_address(device)
    if address is not None:
        matching = [(chip, channels) for chip, channels in chips
                    if (chip / "device").resolve().name.startswith(address + ".")]
        if matching or any(_on_pci(chip) for chip, _ in chips):
            return matching[:1]
    return [chips[device.index]] if device.index is not None and device.index < len(chips) else []


def _on_pci(chip: Path) -> bool:
    return re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", (chip / "device").resolve().name) is not None


def probe(device: Device, sysfs_root: str = "/sys") -> Probe:
    hwmon = Path(sysfs_root) / "class" / "hwmon"
    if not hwmon.is_dir():
        return Probe(SourceStatus("hwmon", False, f"{hwmon} absent"))
    wanted_gpu = device.type == "cuda"
    chips = sorted(hwmon.iterdir(), key=lambda c: str((c / "device").resolve()))
    ours, other_names, problems = [], [], []
    for chip in chips:
        name = sysfs.read_text(chip / "name", chip.name)
        channels, chip_problems = chip_channels(chip, name)
        problems += chip_problems
        if not channels:
            continue
        if is_gpu_chip(name) == wanted_gpu:
            ours.append((chip, channels))
        else:
            other_names.append(name)
    gpu_chips = len(ours)
    if wanted_gpu and ours:
        ours = gpu_chip(ours, device)
    channels = [c for _, found in ours for c in found]
    if not channels:
        if gpu_chips:
            detail = (f"{gpu_chips} GPU sensor chip(s), none at {device.spec}'s PCI address {pci_address(device)} "
                      f"(its power is not read from another board)")
        elif problems:
            detail = problems[0]
        elif other_names:
            detail = f"power/energy sensors only on {', '.join(other_names)}, none for {device.spec}"
        else:
            detail = f"no power or energy sensors under {hwmon}"
        return Probe(SourceStatus("hwmon", False, detail))
    primary = next((c for c in channels if WHOLE_CHIP.search(c.name.rsplit(":", 1)[1])), channels[0])
    detail = f"{', '.join(c.name for c in channels)}; {device.spec} measured by {primary.name} ({primary.method})"
    return Probe(SourceStatus("hwmon", True, detail), channels, [primary], {"sensors": [c.name for c in channels]})
