"""What a run file records about the machine and software it was measured on.

Facts that cannot be read are recorded as unknown with the reason, never guessed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from collections import Counter
from pathlib import Path

import torch

import wattbench
from wattbench.conditions import unknown
from wattbench.device import Device, cpu_model, host_name, triton_interpreted
from wattbench.power import nvml

PACKAGES = ("torch", "triton", "nvidia-ml-py", "pytest-benchmark", "pandas")
CPU_SYSFS = Path("/sys/devices/system/cpu")


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = unknown("not installed")
    return versions


def nvidia_driver_version() -> str | dict:
    """The kernel driver's version, from /proc (no NVML needed)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError as exc:
        return unknown(f"no NVIDIA kernel driver: {exc.strerror or exc}")
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", text)
    return match.group(1) if match else unknown("driver version not found in /proc/driver/nvidia/version")


def cpu_governor(cpu_root: Path = CPU_SYSFS) -> str | dict:
    """The cpufreq scaling governor ('powersave' clocks down between kernel launches); when the
    CPUs differ, each governor with its CPU count."""
    governors = Counter()
    for path in cpu_root.glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            governors[path.read_text().strip()] += 1
        except OSError:
            continue
    if not governors:
        return unknown(f"no readable cpufreq scaling_governor under {cpu_root} (no cpufreq driver, e.g. a VM)")
    if len(governors) == 1:
        return next(iter(governors))
    return ", ".join(f"{name} on {count} CPUs" for name, count in sorted(governors.items()))


def usable_cpus() -> int | dict:
    """CPUs this process may run on (a container or `taskset` may allow fewer than the host has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return unknown(f"CPU affinity cannot be read on {platform.system()}")


def git_commit() -> dict:
    """The wattbench checkout's commit and whether it had uncommitted changes."""
    root = Path(wattbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return unknown("wattbench is not running from a git checkout")
    return {"id": commit, "dirty": dirty}


def describe(device: Device) -> dict:
    """The environment block of a run file; `gpu` holds NVML's facts about the run's GPU, found
    by the device's UUID (`device.uuid`, CUDA's), so that they describe the GPU benchmarked."""
    info = {
        "wattbench_version": wattbench.__version__,
        "wattbench_commit": git_commit(),
        "host": host_name(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable_cpus(),
        "cpu_governor": cpu_governor(),
        "packages": package_versions(),
        "device": {"spec": device.spec, "type": device.type, "name": device.name, "uuid": device.uuid},
        "triton_interpreted": triton_interpreted(),
        "cuda_runtime": torch.version.cuda or unknown("torch was built without CUDA"),
        "nvidia_driver": nvidia_driver_version(),
        "gpu": nvml.gpu_facts(device),
    }
    if device.type == "cuda":
        from wattbench.cuda import device_facts

        info["device"].update(device_facts(device.index))
    return info
