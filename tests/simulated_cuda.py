"""A simulated CUDA device at the `torch.cuda` boundary: the timing path's known truth on a CPU.

Like the simulated NVML sensor for the power path, it replaces what a GPU would do with a
timeline whose truth is known. Each device runs its queued work in order; launched work has
the duration its caller gives; the host pays a known cost per launch, event record and
synchronisation. It models what the timing code depends on:

- events whose `elapsed_time` is a float32 of milliseconds (0.5 us resolution), as CUDA's;
- the current device and each device's current stream, `torch.cuda.device` and
  `torch.cuda.stream` contexts (entering a stream's context makes its device current);
- graph capture that records what is launched on the capturing stream (work launched on
  another device runs eagerly and is not captured), refuses host synchronisation while
  capturing, replays on the graph's device only, and torch's once-per-process default
  capture stream made on whichever device is current at first use;
- `cuGraphGetNodes` for a kept graph, through `wattbench.cuda._driver`;
- the L2 flush, as work of known duration (`FLUSH_S`) on the current device;
- with `replay_ops=True`, what a graph does to memory: torch operations and (interpreted) Triton
  launches made while capturing become nodes that each replay runs again, writing the tensors they
  produced at capture, as a graph's kernels rewrite their captured buffers; Python values are
  frozen at capture as in a real graph, and reading a tensor on the host while capturing fails.

`SimulatedCuda.install(monkeypatch)` patches torch.cuda (and `torch.Generator`, so that inputs
"on cuda:N" are drawn on the CPU); simulated kernels call `sim.launch(name, seconds)`, or
`sim.launch(name, seconds, effect)` for work whose effect (a Python callable) runs when the device
runs it: at the launch, or at each replay of a graph that captured it.
"""

from __future__ import annotations

import functools
import itertools
import types
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import wattbench.cuda

GPU_NAME = "Simulated H100"
L2_BYTES = 50 * 2 ** 20
#: GPU clock for torch.cuda._sleep's cycles.
CLOCK_HZ = 2.0e9
#: Device time of one L2 flush (reading 2x a 50 MB L2 at ~3 TB/s).
FLUSH_S = 35e-6


@dataclass
class Launch:
    """One piece of work the device ran: what, where, on its timeline."""

    name: str
    device: int
    start_s: float
    end_s: float


@dataclass
class Stream:
    device: int
    id: int

    def wait_stream(self, other: "Stream") -> None:
        """Streams of one device share its queue here, so ordering already holds."""


class SimulatedCuda:
    """The device timelines and host clock behind the fake `torch.cuda`."""

    def __init__(self, devices: int = 2, launch_s: float = 8e-6, event_s: float = 2e-6, sync_s: float = 5e-6,
                 host_start_s: float = 0.0, replay_ops: bool = False):
        self.devices = devices
        self.replay_ops = replay_ops
        self.launch_s, self.event_s, self.sync_s = launch_s, event_s, sync_s
        self.host_s = host_start_s
        self.free_s = [host_start_s] * devices
        self.current = 0
        self._ids = itertools.count(1)
        self.streams = [Stream(i, 0) for i in range(devices)]
        self.launches: list[Launch] = []
        self.capturing: Graph | None = None
        self.graphs: dict[int, Graph] = {}
        self.empty_cache_calls = 0
        self.default_capture_stream: Stream | None = None

    # -- what simulated kernels and steps do ------------------------------------------------

    def launch(self, name: str, seconds: float, effect: Callable[[], None] | None = None) -> None:
        """Launch work of known duration on the current device's current stream; `effect` runs when it runs."""
        device = self.current
        stream = self.streams[device]
        self.host_s += self.launch_s
        if self.capturing is not None and stream is self.capturing.stream:
            self.capturing.nodes.append((name, seconds, effect))
            return
        self._run(name, device, seconds, effect)

    def host_work(self, seconds: float) -> None:
        """Host time spent in Python between launches."""
        self.host_s += seconds

    def _run(self, name: str, device: int, seconds: float, effect: Callable[[], None] | None = None) -> None:
        start = max(self.free_s[device], self.host_s)
        self.free_s[device] = start + seconds
        self.launches.append(Launch(name, device, start, start + seconds))
        if effect is not None:
            effect()

    def launched(self, name: str) -> list[Launch]:
        return [launch for launch in self.launches if launch.name == name]

    # -- torch.cuda --------------------------------------------------------------------------

    def _index(self, device) -> int:
        if device is None:
            return self.current
        if isinstance(device, torch.device):
            return self.current if device.index is None else device.index
        if isinstance(device, str):
            return self._index(torch.device(device))
        return int(device)

    def synchronize(self, device=None) -> None:
        if self.capturing is not None:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        index = self._index(device)
        self.host_s = max(self.host_s, self.free_s[index]) + self.sync_s

    def current_stream(self, device=None) -> Stream:
        return self.streams[self._index(device)]

    def new_stream(self, device=None, priority: int = 0) -> Stream:
        return Stream(self._index(device), next(self._ids))

    def device_context(self, device):
        sim = self

        class DeviceContext:
            def __enter__(self):
                self.previous = sim.current
                sim.current = sim._index(device)

            def __exit__(self, *exc):
                sim.current = self.previous

        return DeviceContext()

    def stream_context(self, stream: Stream):
        sim = self

        class StreamContext:
            def __enter__(self):
                self.previous = (sim.current, sim.streams[stream.device])
                sim.current = stream.device
                sim.streams[stream.device] = stream

            def __exit__(self, *exc):
                sim.current, sim.streams[stream.device] = self.previous[0], self.previous[1]

        return StreamContext()

    def properties(self, index: int):
        if not 0 <= index < self.devices:
            raise RuntimeError(f"Invalid device id {index}")
        return types.SimpleNamespace(name=GPU_NAME, uuid=f"{index:08d}-0000-4000-8000-000000000000", major=9, minor=0,
                                     total_memory=80 * 2 ** 30, multi_processor_count=132, L2_cache_size=L2_BYTES)

    def sleep(self, cycles: int) -> None:
        self.launch("sleep", cycles / CLOCK_HZ)

    def install(self, monkeypatch) -> "SimulatedCuda":
        sim = self
        patches = {
            "is_available": lambda: True,
            "device_count": lambda: sim.devices,
            "get_device_properties": lambda index=None: sim.properties(sim._index(index)),
            "get_device_name": lambda index=None: sim.properties(sim._index(index)).name,
            "get_device_capability": lambda index=None: (9, 0),
            "current_device": lambda: sim.current,
            "set_device": lambda index: setattr(sim, "current", sim._index(index)),
            "device": sim.device_context,
            "synchronize": sim.synchronize,
            "current_stream": sim.current_stream,
            "Stream": sim.new_stream,
            "stream": sim.stream_context,
            "Event": lambda enable_timing=False, **kwargs: Event(sim),
            "CUDAGraph": lambda keep_graph=False: Graph(sim),
            "graph": lambda cuda_graph, pool=None, stream=None, **kwargs: GraphCapture(sim, cuda_graph, stream),
            "empty_cache": lambda: setattr(sim, "empty_cache_calls", sim.empty_cache_calls + 1),
            "_sleep": sim.sleep,
        }
        for name, value in patches.items():
            monkeypatch.setattr(torch.cuda, name, value)
        real_generator = torch.Generator
        monkeypatch.setattr(torch, "Generator", lambda device=None: real_generator())
        monkeypatch.setattr(wattbench.cuda, "_driver", lambda: Driver(sim))
        # The real flush reads a CUDA tensor; here it is work of known duration on the current device.
        monkeypatch.setattr(wattbench.cuda.L2Flush, "for_gpu", classmethod(lambda cls, index: sim.flush))
        if self.replay_ops:
            from triton.runtime.interpreter import InterpretedFunction

            monkeypatch.setattr(InterpretedFunction, "run", _captured_triton_launch(sim, InterpretedFunction.run))
        return self

    def flush(self) -> None:
        self.launch("flush", FLUSH_S)


class Event:
    """A CUDA event: it happens when its stream's device reaches it."""

    def __init__(self, sim: SimulatedCuda):
        self.sim = sim
        self.time_s: float | None = None

    def record(self, stream: Stream | None = None) -> None:
        sim = self.sim
        stream = stream or sim.current_stream()
        sim.host_s += sim.event_s
        self.time_s = max(sim.free_s[stream.device], sim.host_s)

    def synchronize(self) -> None:
        self.sim.host_s = max(self.sim.host_s, self.time_s) + self.sim.sync_s

    def elapsed_time(self, end: "Event") -> float:
        """Milliseconds as CUDA gives them: float32, 0.5 us resolution."""
        seconds = round((end.time_s - self.time_s) * 2e6) / 2e6
        return float(np.float32(seconds * 1e3))


@dataclass
class Graph:
    """A CUDA graph: the work captured on its stream, replayed as one launch on its device."""

    sim: SimulatedCuda
    nodes: list = field(default_factory=list)
    stream: Stream | None = None
    id: int = 0
    #: With `replay_ops`, what turns the torch operations of a capture into nodes.
    recorder: "OperationRecorder | None" = None

    def capture_begin(self) -> None:
        self.stream = self.sim.current_stream()
        self.id = next(self.sim._ids)
        self.sim.graphs[self.id] = self
        self.sim.capturing = self
        if self.sim.replay_ops:
            self.recorder = OperationRecorder(self)
            self.recorder.__enter__()

    def capture_end(self) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(None, None, None)
            self.recorder = None
        self.sim.capturing = None

    def raw_cuda_graph(self) -> int:
        return self.id

    def instantiate(self) -> None:
        """Nothing to prepare."""

    def replay(self) -> None:
        sim = self.sim
        if sim.current != self.stream.device:
            raise RuntimeError(f"CUDA error: graph of cuda:{self.stream.device} replayed with cuda:{sim.current} "
                               f"current")
        sim.host_s += sim.launch_s
        for name, seconds, effect in self.nodes:
            sim._run(f"replay:{name}", self.stream.device, seconds, effect)


#: Tensor methods that read a tensor's values on the host (a device synchronisation) or copy host
#: data to the device from pageable memory: CUDA refuses both while a stream captures.
HOST_READS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__complex__", "cpu",
                        "numpy", "tensor"})


class OperationRecorder(TorchFunctionMode):
    """Makes each torch operation run while `graph` captures a node of it (of no device time), re-run at
    each replay into the tensors it produced at capture; refuses host reads as CUDA capture does."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph = graph

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if name in HOST_READS:
            raise RuntimeError(f"CUDA error: operation not permitted when stream is capturing ({name})")
        out = func(*args, **kwargs)
        if out is None or any(isinstance(leaf, torch.Tensor) for leaf in tree_leaves(out)):
            self.graph.nodes.append((f"torch.{name}", 0.0, functools.partial(_rerun, func, args, kwargs, out)))
        return out


def _rerun(func, args, kwargs, captured) -> None:
    """Run a captured operation again and leave its result where the capture's result was (a view of
    memory the operation has just written already holds it)."""
    fresh = func(*args, **kwargs)
    for old, new in zip(tree_leaves(captured), tree_leaves(fresh)):
        if isinstance(old, torch.Tensor) and old.untyped_storage().data_ptr() != new.untyped_storage().data_ptr():
            old.copy_(new)


def _captured_triton_launch(sim: SimulatedCuda, run):
    """Triton's interpreted launch, made a node of the graph capturing it; the interpreter reads the
    tensors on the host, as a GPU's kernel would not, so host reads are not refused inside it."""
    def launch(fn, *args, **kwargs):
        with torch._C.DisableTorchFunction():
            out = run(fn, *args, **kwargs)
        if sim.capturing is not None and sim.capturing.recorder is not None:
            sim.capturing.nodes.append((f"triton.{fn.__name__}", 0.0, lambda: run(fn, *args, **kwargs)))
        return out
    return launch


class GraphCapture:
    """torch.cuda.graph: capture on `stream`, or on the process's default capture stream, made
    once on the device that is current the first time."""

    def __init__(self, sim: SimulatedCuda, graph: Graph, stream: Stream | None):
        if stream is None:
            if sim.default_capture_stream is None:
                sim.default_capture_stream = sim.new_stream()
            stream = sim.default_capture_stream
        self.sim, self.graph, self.context = sim, graph, sim.stream_context(stream)

    def __enter__(self):
        self.sim.synchronize()
        self.context.__enter__()
        self.graph.capture_begin()

    def __exit__(self, *exc):
        self.graph.capture_end()
        self.context.__exit__(*exc)


class Driver:
    """libcuda's cuGraphGetNodes over the simulated graphs."""

    def __init__(self, sim: SimulatedCuda):
        self.sim = sim

    def cuGraphGetNodes(self, raw: int, nodes, count_ref) -> int:  # noqa: N802 (the driver's name)
        count_ref._obj.value = len(self.sim.graphs[raw].nodes)
        return 0
