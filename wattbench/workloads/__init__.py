"""The workload registry: every benchmark the suites run is described here, in one place.

A `Workload` is one operation in one style ("train": forward + backward, large batches;
"infer": forward only, small batches), with its implementations (the PyTorch reference
"torch" and the Triton kernel "triton"), the inputs for each named size, the unit of useful
work it produces and its FLOP and byte counts. The suites are generated from this registry,
so adding a workload means adding one `register(...)` call in a module of this package.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from wattbench.device import Device
from wattbench.errors import UsageError
from wattbench.precision import Precision

STYLES = ("train", "infer")
RUN_PRESETS = ("quick", "full")


def activation_dtype(precision: str) -> torch.dtype:
    """The dtype of activations (and unquantised weights) for a precision such as "bf16" or "int8w-bf16"."""
    return Precision.parse(precision).dtype


def element_size(precision: str) -> int:
    """Bytes per activation element of a precision, for byte counts."""
    return Precision.parse(precision).element_size

#: Why model-level steps are not captured into CUDA graphs (Workload.not_capturable).
MODEL_STEP = "model-level steps run eagerly in graph mode until their graph safety is shown on a GPU"
SYNCHRONISES = "the step synchronises the device and reads the host clock at every token (request timelines)"

#: A size's parameters ({"M": 1, "K": 512, ...}; text values such as a model's name too), for every workload.
Params = Mapping[str, int | str]
Inputs = dict[str, Any]


class Step:
    """One call of a workload (`step()` returns its outputs), with the hooks measuring calls around it.

    `reset()` runs before the timed rounds, `metrics()` after them, `energy_metrics(energy_record)` and
    `energy_windows(spans, energy_at)` after the energy windows; the dicts they return join the benchmark's
    record. Here they do nothing: a step that records something (request timelines, MLPerf's figures)
    subclasses Step and overrides them.
    A workload's impl may also return a plain function; `Case.build` wraps it in `FunctionStep`.

    `guard` (set by `Case.build` from the inputs' "guard", which make_inputs or the impl put there for a
    quantised precision) maps the step's first outputs to the accuracy guard's record fields
    (wattbench.accuracy.guard_fields); None: the case is not guarded."""

    guard: Callable[[Any], dict] | None = None

    def __call__(self) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def metrics(self) -> dict:
        return {}

    def energy_metrics(self, energy: Mapping) -> dict:
        return {}

    def energy_windows(self, spans: list[tuple[float, float]], energy_at: Callable[[float], float]) -> dict:
        """After valid energy windows: their spans and the energy spent up to any time inside them (J, the
        trace's clock: perf_counter s), for a step that shares a window's energy out over what it logged
        (the server's requests and phases)."""
        return {}


class FunctionStep(Step):
    """A plain function as a step with no hooks."""

    def __init__(self, call: Callable[[], Any]):
        self.call = call

    def __call__(self) -> Any:
        return self.call()


@dataclass(frozen=True)
class Size:
    """A named input size; `presets` and `devices` say where it is run."""

    params: Params
    presets: tuple[str, ...] = RUN_PRESETS
    devices: tuple[str, ...] = ("cpu", "cuda")

    @property
    def name(self) -> str:
        """e.g. "M512-K256-N256"; text values stand alone ("tiny-B4-S64")."""
        return "-".join(value if isinstance(value, str) else f"{key}{value}" for key, value in self.params.items())


@dataclass(frozen=True)
class Workload:
    """One operation in one style, with everything needed to run and account for it."""

    name: str
    op: str
    style: str
    unit: str
    sizes: tuple[Size, ...]
    #: device type ("cpu", "cuda") -> precisions run there: "fp32", "bf16", "fp16", "int8w-bf16", ...
    precisions: Mapping[str, tuple[str, ...]]
    #: (params, precision, device, generator) -> inputs; generated on the device, from the seed.
    make_inputs: Callable[[Params, str, torch.device, torch.Generator], Inputs]
    #: impl name -> (inputs -> step): a Step, or a plain function making one call and returning its outputs.
    impls: Mapping[str, Callable[[Inputs], Step | Callable[[], Any]]]
    units_per_call: Callable[[Params], float]
    flops: Callable[[Params], float]
    #: (params, precision) -> compulsory bytes moved per call.
    bytes: Callable[[Params, str], float]
    #: (impl, precision, device) -> reason to skip that combination, or None.
    skip: Callable[[str, str, Device], str | None] = field(default=lambda impl, precision, device: None)
    suite: str = "kernels"
    #: Training-style model workloads whose FLOPs are model FLOPs report MFU against the device's peak.
    reports_mfu: bool = False
    #: Why a step cannot be captured into a CUDA graph (host syncs, host copies, Python state that
    #: changes per call and would be frozen); None when it can. Graph mode runs such steps eagerly.
    not_capturable: str | None = None
    #: impl -> the cases it runs on a CPU ("PRECISION-SIZE", e.g. "fp32-M16-K512-N512", or "SIZE" at every
    #: precision); an impl not named runs every case. It keeps the quick preset short where an impl costs seconds
    #: per case there: `compiled` (each compilation) and, at model level, interpreted `triton`. GPUs run them all.
    cpu_impls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Precision -> the only sizes (names) it runs at on a CPU, to keep the quick preset short (a quantised
    #: model's correctness needs one batch size, not a curve); a precision not named runs at every size.
    cpu_sizes_of: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"workload {self.name}: style must be one of {STYLES}, got {self.style!r}")
        if "torch" not in self.impls:
            raise ValueError(f"workload {self.name}: needs a 'torch' reference implementation")
        for precisions in self.precisions.values():
            for precision in precisions:
                activation_dtype(precision)  # UnknownPrecision (a KeyError) for an unknown one


@dataclass(frozen=True)
class Context:
    """What of the run a step may depend on beyond its inputs (they hold `inputs["context"]`): the device it
    runs on, the preset (the compiled impl's mode) and whether decode is asked to run eagerly on a GPU."""

    device: Device
    preset: str = "quick"
    eager_decode: bool = False


@dataclass(frozen=True)
class Case:
    """One benchmark: a workload, an implementation, a precision and a size."""

    workload: Workload
    impl: str
    precision: str
    size: Size

    @property
    def dtype(self) -> torch.dtype:
        return activation_dtype(self.precision)

    @property
    def id(self) -> str:
        """Stable identity, used as the pytest parameter id and by the gate to match runs."""
        return f"{self.workload.name}-{self.impl}-{self.precision}-{self.size.name}"

    def seed(self, base_seed: int) -> int:
        """Derived from everything but the implementation, so Triton and torch get identical inputs."""
        key = f"{self.workload.name}-{self.precision}-{self.size.name}"
        return (base_seed + zlib.crc32(key.encode())) % 2**31

    def build(self, device: Device, base_seed: int, context: Context | None = None) -> Step:
        """Generate the inputs on `device` from the seed and return the step to benchmark."""
        generator = torch.Generator(device=device.torch).manual_seed(self.seed(base_seed))
        inputs = self.workload.make_inputs(self.size.params, self.precision, device.torch, generator)
        inputs["context"] = context or Context(device)
        step = self.workload.impls[self.impl](inputs)
        step = step if isinstance(step, Step) else FunctionStep(step)
        step.guard = inputs.get("guard")
        return step

    def accounting(self) -> dict:
        """Work per call: units of useful work, FLOP and compulsory bytes."""
        params = self.size.params
        return {
            "unit": self.workload.unit,
            "units_per_call": float(self.workload.units_per_call(params)),
            "flops": float(self.workload.flops(params)),
            "bytes": float(self.workload.bytes(params, self.precision)),
        }


def device_sizes(cpu=(), cuda=(), cuda_full=()) -> tuple[Size, ...]:
    """Sizes from their parameters: run on a CPU, on GPUs, and on GPUs in the full preset only."""
    return (tuple(Size(p, devices=("cpu",)) for p in cpu) + tuple(Size(p, devices=("cuda",)) for p in cuda)
            + tuple(Size(p, presets=("full",), devices=("cuda",)) for p in cuda_full))


def randn(generator: torch.Generator, device: torch.device, dtype: torch.dtype, *shape: int, scale: float = 1.0,
          grad: bool = False) -> torch.Tensor:
    """A scaled normal tensor drawn from the case's generator, so every implementation gets the same inputs."""
    tensor = (torch.randn(*shape, generator=generator, device=device) * scale).to(dtype)
    return tensor.requires_grad_(grad)


def m_rows(p: Params) -> int:
    """Units per call of a workload over `M` rows (tokens): the rows."""
    return p["M"]


_REGISTRY: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    if workload.name in _REGISTRY:
        raise ValueError(f"workload {workload.name!r} is registered twice")
    _REGISTRY[workload.name] = workload
    _case_index.cache_clear()  # a workload registered later (a suite's conftest) must still be found
    return workload


def workloads() -> list[Workload]:
    """All registered workloads (importing the modules that define them)."""
    from wattbench.workloads import cnn, gemm, llm, ops, scenarios  # noqa: F401  (they register on import)

    return list(_REGISTRY.values())


def use_model(name: str) -> None:
    """Run every transformer case on model config `name` (--wattbench-model) instead of its own: the
    registry's transformer workloads get their sizes with the model replaced (sizes made equal dropped)."""
    for key, workload in list(_REGISTRY.items()):
        if workload.op != "transformer":
            continue
        sizes = {}
        for size in workload.sizes:
            size = dataclasses.replace(size, params={**size.params, "model": name})
            sizes.setdefault((size.name, size.presets, size.devices), size)
        _REGISTRY[key] = dataclasses.replace(workload, sizes=tuple(sizes.values()))
    _case_index.cache_clear()


def check_preset(preset: str) -> None:
    """One refusal of an unknown preset for every entry point (pytest, `wattbench run`, the kernel table)."""
    if preset not in RUN_PRESETS:
        raise UsageError(f"unknown preset {preset!r}: choose one of {', '.join(RUN_PRESETS)}")


def cases(preset: str, device: Device, suite: str | None = None) -> list[Case]:
    """Every case of the preset that applies to the device, in a stable order (the GPU quick preset's subset:
    wattbench.workloads.presets)."""
    from wattbench.workloads.presets import select

    check_preset(preset)
    return select([
        Case(workload, impl, precision, size)
        for workload in workloads()
        if suite is None or workload.suite == suite
        for size in workload.sizes
        if preset in size.presets and device.type in size.devices
        for precision in workload.precisions.get(device.type, ())
        for impl in workload.impls
        if device.type != "cpu" or _runs_on_cpu(workload.cpu_impls.get(impl), precision, size)
        if device.type != "cpu" or size.name in workload.cpu_sizes_of.get(precision, (size.name,))
    ], preset, device.type)


def _runs_on_cpu(named: tuple[str, ...] | None, precision: str, size: Size) -> bool:
    return named is None or size.name in named or f"{precision}-{size.name}" in named


@functools.cache
def _case_index() -> dict[str, Case]:
    """Every case of every preset and device by id, built once: `case_by_id` runs per collected item."""
    index: dict[str, Case] = {}
    for workload in workloads():
        for size in workload.sizes:
            for precision in {p for precisions in workload.precisions.values() for p in precisions}:
                for impl in workload.impls:
                    case = Case(workload, impl, precision, size)
                    index.setdefault(case.id, case)
    return index


def case_by_id(case_id: str) -> Case:
    case = _case_index().get(case_id)
    if case is None:
        raise KeyError(f"no workload case {case_id!r}")
    return case
