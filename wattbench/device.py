"""Which device a run measures, and how Triton runs on it.

Triton compiles for GPUs only. On a machine without CUDA its kernels still run, through
Triton's interpreter, which must be switched on (TRITON_INTERPRET=1) before triton is first
imported. Results produced that way are correct but their timings mean nothing, so every
record says `interpreted`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch

from wattbench.errors import UsageError

INTERPRET_ENV = "TRITON_INTERPRET"


def enable_triton_interpreter_without_gpu() -> None:
    """Switch Triton to its interpreter when no CUDA device exists (and the user has not decided)."""
    if INTERPRET_ENV not in os.environ and not torch.cuda.is_available():
        os.environ[INTERPRET_ENV] = "1"


def triton_interpreted() -> bool:
    return os.environ.get(INTERPRET_ENV, "0") not in ("", "0")


@dataclass(frozen=True)
class Device:
    """A device the suites run on: `cpu` or `cuda:N`.

    `uuid` is the GPU's (or MIG slice's) UUID as CUDA reports it, without its "GPU-"/"MIG-"
    prefix: the only identity that CUDA and NVML agree on (their indices may differ).
    """

    type: str
    index: int | None
    name: str
    uuid: str | None = None

    @property
    def spec(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @property
    def torch(self) -> torch.device:
        return torch.device(self.spec)

    @property
    def slug(self) -> str:
        """File-name-safe device name, e.g. `nvidia-h100-80gb-hbm3`."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or self.type

    def synchronize(self) -> None:
        if self.type == "cuda":
            torch.cuda.synchronize(self.index)

    def current(self) -> ContextManager:
        """Make this device the current CUDA device for a block: Triton launches, CUDA graph
        capture and new streams and events use the current device, whatever the tensors' device."""
        return torch.cuda.device(self.index) if self.type == "cuda" else contextlib.nullcontext()


def detect(requested: str | None = None) -> Device:
    """The device named by `requested` ("cpu", "cuda", "cuda:N"), or the best one present."""
    if requested is None:
        requested = "cuda:0" if torch.cuda.is_available() else "cpu"
    spec = requested.strip().lower()
    if spec == "cpu":
        return Device("cpu", None, cpu_model())
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise UsageError(f"unknown device {requested!r}: use 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise UsageError(f"device {requested!r} asked for, but torch sees no CUDA device on this host")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError(f"device {requested!r} does not exist: this host has {count} CUDA device(s)")
    props = torch.cuda.get_device_properties(index)
    return Device("cuda", index, props.name, str(props.uuid))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_name() -> str:
    return socket.gethostname()
