"""What the GPU a kernel launches on allows, read once per device.

Triton compiles for, and launches on, the current CUDA device. The kernels size their launches
(programs per SM) from these limits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

#: Device types whose tensors the compiled kernels accept. `wattbench selfcheck compile` adds "meta"
#: (tensors with shapes and no memory) to drive the entry points and record their launches, which it
#: never runs.
LAUNCH_DEVICE_TYPES = ("cuda",)


@dataclass(frozen=True)
class DeviceLimits:
    capability: tuple[int, int]
    sm_count: int
    #: Opt-in shared memory per block in bytes: a kernel that needs more fails to launch.
    shared_memory: int


@functools.lru_cache(maxsize=None)
def device_limits(device: torch.device) -> DeviceLimits:
    props = torch.cuda.get_device_properties(device)
    return DeviceLimits((props.major, props.minor), props.multi_processor_count, props.shared_memory_per_block_optin)

