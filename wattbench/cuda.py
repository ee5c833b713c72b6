"""Everything that only works on a CUDA device: event clock, L2 flush, graph capture.

Kept in one small module so the rest of the harness stays testable on a CPU-only machine
(tests/simulated_cuda.py replaces the `torch.cuda` boundary with a device timeline of known
truth). Written against torch's documented CUDA API (torch.cuda.Event, Stream, CUDAGraph,
device properties) and the CUDA driver's cuGraphGetNodes.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Callable

import torch

#: Device-side wait queued before each round's start event (torch.cuda._sleep spins for this
#: many GPU cycles, ~50 us at 2 GHz): the GPU is still busy with it while the host returns from
#: the previous reading and launches the round's first kernel, so no launch gap is timed.
LAUNCH_COVER_CYCLES = 100_000


class EventClock:
    """A pytest-benchmark timer that reads device time, one CUDA event pair per round.

    pytest-benchmark calls its timer twice per round, before and after the target, and keeps
    the difference. Here the first call of a pair records a start event and returns at once
    (no host wait between a round's start and the launch of its work); the second records the
    end event, waits for it, and returns the running total plus this round's
    `start.elapsed_time(end)`. Each interval is measured on its own (float32 milliseconds keep
    ~0.5 us over short spans) and the total is a float64 on the host, so the resolution does
    not decay over a long run as it would against one origin event.
    """

    __name__ = "cuda_event_clock"

    def __init__(self, index: int):
        self.index = index
        self.total_s = 0.0
        self._start: Any = None
        self._end: Any = None

    def reset(self) -> None:
        """Forget a round left half-read (an exception between its two readings)."""
        self._start = self._end = None

    def __call__(self) -> float:
        stream = torch.cuda.current_stream(self.index)
        if self._start is None:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            cover_launch_gap()
            self._start.record(stream)
            return self.total_s
        self._end.record(stream)
        self._end.synchronize()
        self.total_s += self._start.elapsed_time(self._end) / 1e3
        self.reset()
        return self.total_s


def cover_launch_gap() -> None:
    """Keep the current device busy for a moment (see LAUNCH_COVER_CYCLES); a no-op on torch
    builds without `torch.cuda._sleep`."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        sleep(LAUNCH_COVER_CYCLES)


class L2Flush:
    """Evicts the L2 cache between rounds, so each one starts cold as in a real model.

    It *reads* a buffer of twice the device's L2 (a max-reduction into a preallocated scalar):
    the lines it leaves behind are clean, so evicting them costs the timed kernel no write-back
    (`zero_()` would leave ~2x L2 of dirty lines whose write-back lands in the next round).
    """

    def __init__(self, device: torch.device, l2_bytes: int):
        elements = max(2 * l2_bytes, 1 << 20) // 4
        self.buffer = torch.zeros(elements, dtype=torch.float32, device=device)
        self.sink = torch.empty((), dtype=torch.float32, device=device)

    @classmethod
    def for_gpu(cls, index: int) -> "L2Flush":
        return cls(torch.device("cuda", index), torch.cuda.get_device_properties(index).L2_cache_size)

    def __call__(self) -> None:
        torch.amax(self.buffer, dim=0, out=self.sink)


class GraphCaptureError(RuntimeError):
    """A step could not be captured into a CUDA graph that replays its work."""


def capture_graph(step: Callable[[], Any], index: int, warmup: int = 3) -> Callable[[], None]:
    """Capture `step` on cuda:`index` into a CUDA graph and return its replay (one launch for
    all its kernels: for small kernels, launch overhead would otherwise dominate).

    The step is warmed up on a side stream first (capture requires it; Triton autotunes there,
    since it cannot under capture). Capture uses a stream of its own on cuda:`index` with that
    device current: torch's default capture stream belongs to whichever device was current
    when it was first made, and work launched elsewhere is not captured. The graph must hold
    at least one node, or replaying it would time nothing.
    """
    device = torch.device("cuda", index)
    with torch.cuda.device(index):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph(keep_graph=True)
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(device)):
            step()
        nodes = graph_nodes(graph)
        if nodes == 0:
            raise GraphCaptureError(f"the CUDA graph captured on cuda:{index} is empty: the step launched its work "
                                    f"on another device or stream")
        graph.instantiate()
    return graph.replay


@functools.cache
def _driver() -> Any:
    driver = ctypes.CDLL("libcuda.so.1")
    driver.cuGraphGetNodes.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
    return driver


def graph_nodes(graph: Any) -> int:
    """How many nodes a captured (kept) graph holds, from the driver (cuGraphGetNodes)."""
    count = ctypes.c_size_t(0)
    status = _driver().cuGraphGetNodes(graph.raw_cuda_graph(), None, ctypes.byref(count))
    if status != 0:
        raise GraphCaptureError(f"cuGraphGetNodes failed with CUDA error {status}")
    return count.value


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
