"""Everything that only works on a CUDA device: event clock, L2 flush, graph capture.

Kept in one small module so the rest of the harness stays testable on a CPU-only machine.
Written against torch's documented CUDA API (torch.cuda.Event, CUDAGraph, device properties).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


class EventClock:
    """A pytest-benchmark timer that reads device time.

    Each call records a CUDA event on the current stream and waits for it, then returns the
    seconds elapsed on the device since the clock's origin event. pytest-benchmark subtracts
    two readings taken around the benchmarked call, so its stats describe the time the GPU
    spent between the two events, not the time the host spent launching kernels. That span
    includes the few microseconds between the start event and the first kernel's launch: for
    microsecond kernels, time a CUDA graph replay (`--wattbench-cuda-graph`), one launch in all.
    """

    __name__ = "cuda_event_clock"

    def __init__(self, index: int):
        self.index = index
        with torch.cuda.device(index):
            self.origin = torch.cuda.Event(enable_timing=True)
            self.origin.record()
            self.origin.synchronize()

    def __call__(self) -> float:
        with torch.cuda.device(self.index):
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            event.synchronize()
        return self.origin.elapsed_time(event) / 1e3


class L2Flush:
    """Evicts the L2 cache between repetitions, so each one starts cold as in a real model.

    The buffer is twice the device's actual L2 size (not a fixed 256 MB: that is too small for
    nothing today and needlessly slow on small parts).
    """

    def __init__(self, index: int):
        l2_bytes = torch.cuda.get_device_properties(index).L2_cache_size
        self.buffer = torch.empty(max(2 * l2_bytes, 1 << 20), dtype=torch.int8, device=f"cuda:{index}")

    def __call__(self) -> None:
        self.buffer.zero_()


def capture_graph(step: Callable[[], Any], index: int, warmup: int = 3) -> Callable[[], None]:
    """Capture `step` into a CUDA graph and return its replay: one launch for all its kernels.

    For small kernels, launch overhead would otherwise dominate what is measured. The step is
    warmed up on a side stream first, as capture requires.
    """
    device = torch.device(f"cuda:{index}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def device_facts(index: int) -> dict:
    """Static facts about a CUDA device for the run file."""
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
        "l2_cache_bytes": props.L2_cache_size,
        "cuda_runtime": torch.version.cuda,
    }
