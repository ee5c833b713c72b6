"""What the GPU a kernel launches on allows, read once per device, and the config pruning that follows.

Triton compiles for, and launches on, the current CUDA device. The kernels size their launches
(programs per SM) from these limits, and their autotuners try only the configs that fit them:
a config that needs more shared memory per block than the GPU has fails to launch, and one
whose threads hold too much spills registers. `wattbench selfcheck compile` runs the same
pruning for each target it compiles for, so it reports what a GPU of that target would try.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import triton

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


def prune_row_configs(elements_per_thread: int):
    """An autotune `early_config_prune` for row kernels (one BLOCK_N-wide block per program, only the
    warps tuned): drop the configs whose threads would each hold more than `elements_per_thread`
    elements of a block, which spill registers; keep the most warps if none is left."""
    def prune(configs, named_args, **kwargs):
        fitting = [c for c in configs if kwargs["BLOCK_N"] <= elements_per_thread * 32 * c.num_warps]
        return fitting or [max(configs, key=lambda c: c.num_warps)]
    return prune


class UnsupportedDevice(RuntimeError):
    """No config of a kernel fits the GPU it would launch on."""


def pipeline_buffers(capability: tuple[int, int], num_stages: int) -> int:
    """Shared-memory copies of each tile a pipelined loop streams: Triton keeps `num_stages` on
    Hopper and newer (async wgmma), `num_stages - 1` on Ampere and Ada (cp.async)."""
    return num_stages if capability >= (9, 0) else max(1, num_stages - 1)


def shared_memory_pruner(kernel: str, choose: Callable[[dict, tuple[int, int]], list[triton.Config]],
                         needs: Callable[[triton.Config, dict, tuple[int, int]], int]):
    """An autotune `early_config_prune`: the call's own config list, `choose(args, capability)` (by
    dtype, precision, head dim: `args` holds the kernel's arguments by name), less the configs whose
    shared memory, `needs(config, args, capability)` (an estimate from above), exceeds the current
    GPU's per-block limit. Raises UnsupportedDevice when none is left."""
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        limits = device_limits(torch.device("cuda", torch.cuda.current_device()))
        chosen = choose(args, limits.capability)
        wanted = [c for c in configs if c in chosen]
        fitting = [c for c in wanted if needs(c, args, limits.capability) <= limits.shared_memory]
        if not fitting:
            smallest = min(needs(c, args, limits.capability) for c in wanted)
            raise UnsupportedDevice(
                f"{kernel}: none of its {len(wanted)} configs for this call fits the {limits.shared_memory:,} B of "
                f"shared memory per block of this GPU (compute capability {limits.capability[0]}."
                f"{limits.capability[1]}); the smallest needs about {smallest:,} B")
        return fitting
    return prune
