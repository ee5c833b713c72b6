"""How many CPU threads torch uses on the CPU path, chosen so that they do not fight for the cores.

torch starts one intra-op thread per core. When every core runs one of them, any other runnable
thread (the power sampler, the OS, another process) takes a core from a parallel region, which
then waits a scheduler time slice for it: medians jump to multiples of a few milliseconds, run
to run. A CPU run therefore leaves one usable CPU free by default, and records what it chose.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

#: Environment variables that set the thread pools of torch's OpenMP, MKL and OpenBLAS backends.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_quota(path: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs' worth of time a cgroup v2 quota allows (a container's --cpus), None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()
        return int(quota) / int(period) if quota != "max" else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, narrowed by a cgroup CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(count, math.ceil(quota))) if quota else count


def thread_settings() -> dict:
    """What the run file records about threads: torch's pools, the variables that set them, the CPUs."""
    return {"torch_intra_op": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
            "usable_cpus": usable_cpus(), "cpu_count": os.cpu_count(),
            "variables": {name: os.environ.get(name) for name in THREAD_VARIABLES}}


def choose_cpu_threads(requested: int | None) -> dict:
    """Set torch's intra-op threads for a CPU run: `requested` if given, else what OMP_NUM_THREADS set, else
    one less than the usable CPUs (at least 1, at most torch's own default). The settings, with why."""
    cpus = usable_cpus()
    if requested is not None:
        threads, why = requested, "--wattbench-cpu-threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        threads, why = torch.get_num_threads(), "OMP_NUM_THREADS"
    else:
        threads = max(1, min(torch.get_num_threads(), cpus - 1))
        why = "default: one usable CPU left for the power sampler and the system"
    torch.set_num_threads(threads)
    return {**thread_settings(), "chosen_by": why}
