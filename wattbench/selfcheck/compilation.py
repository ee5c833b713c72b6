"""`wattbench selfcheck compile`: every Triton kernel variant a GPU would compile, compiled without a GPU.

Triton's compiler, and the ptxas it bundles, run on any CPU: a kernel goes to PTX and cubin for a
chosen target without a device. The check finds the variants a GPU would compile by driving the
kernels' public entry points the way the registry's GPU cases call them, plus the public API's other
variants (`api_probes`), on meta tensors (shapes, strides and dtypes; no memory, no arithmetic) while
torch.cuda answers device queries for a representative GPU of the target.
Each launch is stopped where Triton would compile: an autotuned kernel gives one variant per config
its autotuner would try (after the kernel's own pruning for that target), a plain kernel one variant;
each is specialised as Triton specialises it (dtypes, 16-byte alignment, integers equal to 1 or
divisible by 16). Each distinct variant is then compiled once, in a process pool, and its shared
memory, registers, spills (cuobjdump) and dot instructions (PTX) are reported.

The registry's cases and the probes run in spawned workers with Triton's interpreter off, whatever the
calling process chose, because the kernels pick their config lists when they are imported. Compiled
kernels go to a temporary Triton cache that is deleted at the end: nothing carries over between runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import subprocess
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from types import SimpleNamespace
from typing import Callable, Iterable
from unittest import mock

from wattbench.errors import UsageError


@dataclass(frozen=True)
class Target:
    """A compile target and the GPU that stands for it (its SM count steers split and program counts)."""

    arch: str
    capability: tuple[int, int]
    gpu: str
    sm_count: int
    #: Opt-in shared memory per block, in bytes: a config above it fails to launch (OutOfResources).
    shared_limit: int

    @property
    def cc(self) -> int:
        return 10 * self.capability[0] + self.capability[1]


TARGETS = {
    "sm_80": Target("sm_80", (8, 0), "NVIDIA A100-SXM4-80GB", 108, 166_912),
    "sm_89": Target("sm_89", (8, 9), "NVIDIA L4", 58, 101_376),
    "sm_90": Target("sm_90", (9, 0), "NVIDIA H100 80GB HBM3", 132, 232_448),
}

#: Triton options a launch may set; the rest keep the backend's defaults, as on a GPU.
_OPTION_NAMES = ("num_warps", "num_stages", "num_ctas", "maxnreg")


@dataclass(frozen=True)
class Variant:
    """One kernel specialisation for one target: what Triton would compile for one launch and config."""

    kernel: str  # "module:qualname" of the @triton.jit function
    arch: str
    signature: tuple[tuple[str, str], ...]  # (parameter, Triton type or "constexpr"), in order
    constexprs: tuple[tuple[str, object], ...]  # declared and specialised constants
    aligned: tuple[str, ...]  # parameters specialised as divisible by 16
    options: tuple[tuple[str, int], ...]
    #: Constants the call site chose (not the autotuner), for reports.
    call: tuple[tuple[str, object], ...] = ()
    #: The autotuner config's own constants, for reports.
    config: tuple[tuple[str, object], ...] = ()

    @property
    def name(self) -> str:
        module, qualname = self.kernel.split(":")
        return f"{module.rsplit('.', 1)[-1]}.{qualname}"

    @property
    def dtype(self) -> str:
        """The first pointer's element type: the kernel's input dtype."""
        return next((kind.lstrip("*") for _, kind in self.signature if kind.startswith("*")), "")

    def describe(self) -> str:
        call = " ".join(f"{name}={value}" for name, value in self.call)
        config = " ".join(f"{name}={value}" for name, value in self.config)
        options = dict(self.options)
        return " ".join(part for part in (self.dtype, call, "|", config,
                                          f"w{options.get('num_warps', 4)} s{options.get('num_stages', 3)}") if part)


@dataclass(frozen=True)
class Launch:
    """One launch of a kernel by an entry point: the variants its autotuner would try (one without autotuning)."""

    origin: str  # registry case id or probe label
    variants: tuple[Variant, ...]
    configs_listed: int  # configs before the kernel's pruning for this target


@dataclass(frozen=True)
class DriveError:
    """A case or probe that raised before or between its launches; `unsupported` when it refused the target
    (UnsupportedDevice: FP8 below sm_89), which is the entry point working as meant, not a failure."""

    origin: str
    message: str
    unsupported: bool = False


@dataclass(frozen=True)
class CompileResult:
    shared: int | None = None
    registers: int | None = None
    spill_bytes: int | None = None  # local memory (stack frame) per thread: register spills
    dot: str | None = None  # "wgmma", "mma", "FMA", or None for a kernel without tl.dot
    error: str | None = None
    #: CPU time of the compile, ptxas and cuobjdump included: what it costs on an idle machine.
    cpu_seconds: float = 0.0


# The toolchain: which ptxas Triton assembles a target's cubins with, and the driver they need -----------

#: The oldest driver branch that loads cubins from each CUDA major version's ptxas (NVIDIA's CUDA minor
#: version compatibility: a 12.x toolkit's binaries run on R525 or newer, a 13.x toolkit's on R580 or newer).
DRIVER_FOR_CUDA = {12: 525, 13: 580}


def triton_ptxas(capability: int) -> tuple[str, str]:
    """(path, CUDA version such as "13.4") of the ptxas the installed Triton uses for `capability`
    (e.g. 90): Triton 3.9 assembles sm_90 and newer with its CUDA 13 ptxas, older targets with CUDA 12's."""
    from triton.backends.nvidia.compiler import get_ptxas

    tool = get_ptxas(capability)
    return tool.path, tool.version


def driver_requirement(capability: int) -> tuple[str, int | None]:
    """(ptxas CUDA version, oldest driver branch that loads its cubins; None if unknown) for `capability`."""
    cuda = triton_ptxas(capability)[1]
    return cuda, DRIVER_FOR_CUDA.get(int(cuda.split(".")[0]))


def driver_note(driver: str | None, capability: int) -> str:
    """One line for `wattbench devices`: which ptxas Triton uses for this GPU, the driver its cubins need,
    and whether the host's driver (e.g. "575.57.08", None if unknown) is new enough."""
    import triton

    cuda, needed = driver_requirement(capability)
    arch = f"sm_{capability}"
    need = f"driver {needed} or newer" if needed else "a driver for CUDA " + cuda
    line = f"Triton {triton.__version__} builds {arch} cubins with ptxas {cuda} (CUDA {cuda.split('.')[0]}: {need})"
    if driver is None:
        return f"{line}; the host's driver version is unknown"
    if needed and int(driver.split(".")[0]) < needed:
        return f"{line}; driver {driver} is TOO OLD: Triton's kernels will not load on this GPU until it is upgraded"
    return f"{line}; driver {driver}: ok"


# Driving the entry points on meta tensors ---------------------------------------------------------

class _AlignedPointer:
    """What Triton's specialisation reads from a tensor: its dtype and its address, here the
    offset of its first element from an allocation (CUDA allocations are 256-byte aligned)."""

    def __init__(self, tensor):
        self.dtype = tensor.dtype
        self._offset = tensor.storage_offset() * tensor.element_size()

    def data_ptr(self) -> int:
        return self._offset


def _jit_function(kernel):
    """The @triton.jit function under any autotune/heuristics wrappers."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        kernel = kernel.fn
    return kernel


class Saturated(Exception):
    """Raised by a launch when the drive's last `LaunchRecorder.repeat_limit` launches were all seen before."""


class LaunchRecorder:
    """Stands in for Triton's launch: records the variants a launch would compile, runs nothing.

    A model step repeats its layers' launches, and a decode step its tokens': once a drive has made
    `repeat_limit` launches in a row that were all recorded already (more than one forward pass of the
    largest model makes), the rest of the step would only repeat them, and it is stopped there.
    """

    repeat_limit = 400

    def __init__(self, target: Target):
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import make_backend

        self.target = target
        self.backend = make_backend(GPUTarget("cuda", target.cc, 32))
        self.origin = ""
        self.launches: list[Launch] = []
        self._binders: dict = {}
        self._seen: set = set()
        self.repeats = 0  # launches in a row, in this drive, that were recorded already

    def _binder(self, jit_fn):
        from triton.runtime.jit import create_function_from_signature

        if jit_fn not in self._binders:
            self._binders[jit_fn] = create_function_from_signature(jit_fn.signature, jit_fn.params, self.backend)
        return self._binders[jit_fn]

    def variant(self, jit_fn, args: list, kwargs: dict, config=None) -> Variant:
        """The variant `jit_fn(*args, **kwargs)` compiles to with `config`, specialised as Triton's launch does."""
        launch_kwargs = {**kwargs, **(config.all_kwargs() if config else {})}
        bound, specialization, options = self._binder(jit_fn)(*args, **launch_kwargs)
        options, signature, constexprs, attrs = jit_fn._pack_args(self.backend, launch_kwargs, bound, specialization,
                                                                  options)
        names = list(signature)
        declared = {p.name for p in jit_fn.params if p.is_constexpr}
        config_names = set(config.kwargs) if config else set()
        constants = tuple((names[path[0]], value) for path, value in sorted(constexprs.items()))
        return Variant(
            kernel=f"{jit_fn.fn.__module__}:{jit_fn.fn.__qualname__}", arch=self.target.arch,
            signature=tuple(signature.items()), constexprs=constants,
            aligned=tuple(names[path[0]] for path, spec in sorted(attrs.items()) if spec),
            options=tuple((name, getattr(options, name)) for name in _OPTION_NAMES
                          if getattr(options, name) is not None),
            call=tuple((n, v) for n, v in constants if n in declared and n not in config_names),
            config=tuple((n, v) for n, v in constants if n in config_names))

    def _record(self, jit_fn, args: tuple, kwargs: dict, configs: list, configs_listed: int) -> None:
        """One launch, unless the same specialisation with the same configs was recorded already
        (a decode loop launches the same few variants thousands of times)."""
        import torch

        stand_ins = [_AlignedPointer(a) if isinstance(a, torch.Tensor) else a for a in args]
        first = {**kwargs, **(configs[0].all_kwargs() if configs[0] else {})}
        _, specialization, _ = self._binder(jit_fn)(*stand_ins, **first)
        key = (jit_fn, repr(specialization), repr(sorted(kwargs.items())), tuple(map(str, configs)))
        if key in self._seen:
            self.repeats += 1
            if self.repeats >= self.repeat_limit:
                raise Saturated
            return
        self.repeats = 0
        self._seen.add(key)
        variants = tuple(self.variant(jit_fn, stand_ins, kwargs, config) for config in configs)
        self.launches.append(Launch(self.origin, variants, configs_listed))

    def autotuner_run(self, autotuner, *args, **kwargs):
        """Autotuner.run: the configs it would benchmark, pruned as on the target (a lone config is not)."""
        autotuner.nargs = dict(zip(autotuner.arg_names, args))
        configs = autotuner.prune_configs(kwargs) if len(autotuner.configs) > 1 else autotuner.configs
        autotuner.nargs = None
        call_kwargs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
        self._record(_jit_function(autotuner.fn), args, call_kwargs, configs, len(autotuner.configs))

    def jit_run(self, jit_fn, *args, grid, warmup, **kwargs):
        self._record(jit_fn, args, kwargs, [None], 1)


def _host_value(original, stand_in):
    """A meta tensor's host read (`bool()`, `.item()`) gets `stand_in`: checks pass, counts are nonzero.
    No kernel shape comes from a device value, so the launches are the ones real values would make."""
    def read(tensor):
        return stand_in(tensor) if tensor.device.type == "meta" else original(tensor)
    return read


@contextlib.contextmanager
def fake_gpu(target: Target, recorder: LaunchRecorder):
    """Kernels that accept meta tensors (shapes, no memory) as if on a GPU of `target`, torch.cuda
    describing that GPU, and Triton launches recorded by `recorder` instead of compiled and run.

    Meta, not torch's fake CUDA tensors: autograd on a CUDA tensor needs CUDA in the torch build."""
    import torch
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    from wattbench.device import Device
    from wattbench.kernels import targets

    properties = SimpleNamespace(name=target.gpu, major=target.capability[0], minor=target.capability[1],
                                 multi_processor_count=target.sm_count, total_memory=80 * 2**30,
                                 shared_memory_per_block_optin=target.shared_limit)
    targets.device_limits.cache_clear()
    with contextlib.ExitStack() as stack:
        stack.callback(targets.device_limits.cache_clear)
        for name, value in (("get_device_properties", lambda device=None: properties),
                            ("get_device_capability", lambda device=None: target.capability),
                            ("current_device", lambda: 0), ("synchronize", lambda device=None: None)):
            stack.enter_context(mock.patch.object(torch.cuda, name, value))
        stack.enter_context(mock.patch.object(targets, "LAUNCH_DEVICE_TYPES", ("cuda", "meta")))
        # Making the GPU current needs CUDA in the torch build; the meta tensors need no device at all.
        stack.enter_context(mock.patch.object(Device, "current", lambda self: contextlib.nullcontext()))
        stack.enter_context(mock.patch.object(Autotuner, "run",
                                              lambda self, *a, **k: recorder.autotuner_run(self, *a, **k)))
        stack.enter_context(mock.patch.object(JITFunction, "run",
                                              lambda self, *a, **k: recorder.jit_run(self, *a, **k)))
        stack.enter_context(mock.patch.object(torch.Tensor, "__bool__", _host_value(torch.Tensor.__bool__,
                                                                                   lambda t: True)))
        stack.enter_context(mock.patch.object(torch.Tensor, "item", _host_value(
            torch.Tensor.item, lambda t: True if t.dtype == torch.bool else 1.0 if t.dtype.is_floating_point else 1)))
        yield


#: Registry workloads the check does not drive, and why their launches are covered all the same.
NOT_DRIVEN = ("scenario.", "scenario.* steps pace themselves by the host clock (arrivals, rate search); they "
                           "serve the llm.* model at batch 1 and at 64 slots, whose launches llm.prefill and "
                           "llm.decode make")


def registry_drives(target: Target, preset: str) -> list[tuple[str, Callable[[], object]]]:
    """(case id, call) for every Triton case of the registry on a GPU but `NOT_DRIVEN`'s: build the
    inputs, run the step once."""
    import torch

    from wattbench.device import Device
    from wattbench.workloads import Context, cases

    device = Device("cuda", 0, target.gpu)  # what the registry's choices see; the tensors are on meta
    drives = []
    for case in cases(preset, device):
        if (case.impl != "triton" or case.workload.name.startswith(NOT_DRIVEN[0])
                or case.workload.skip(case.impl, case.precision, device)):
            continue

        def drive(case=case):
            generator = torch.Generator().manual_seed(case.seed(0))
            inputs = case.workload.make_inputs(case.size.params, case.precision, torch.device("meta"), generator)
            # Eager decode: a graph replays the very launches its capture made, and capturing needs a GPU.
            inputs["context"] = Context(device, preset, eager_decode=True)
            case.workload.impls[case.impl](inputs)()

        drives.append((case.id, drive))
    return drives


def enumerate_launches(target: Target, preset: str = "full",
                       select: Callable[[str], bool] | None = None) -> tuple[list[Launch], list[DriveError]]:
    """Every launch the registry's GPU cases of `preset` and the API probes make on `target`.

    Runs in a process whose kernels were imported with Triton's interpreter off (see `run_check`).
    `select` keeps the drives whose label it accepts.
    """
    import pytest

    from wattbench.kernels.targets import UnsupportedDevice

    recorder = LaunchRecorder(target)
    errors = []
    drives = registry_drives(target, preset) + api_probes()
    for origin, drive in drives:
        if select is not None and not select(origin):
            continue
        recorder.origin, recorder.repeats = origin, 0
        try:
            with fake_gpu(target, recorder):
                drive()
        except Saturated:
            pass
        except (UnsupportedDevice, pytest.skip.Exception) as exc:  # a kernel refused, or the case skips itself
            errors.append(DriveError(origin, first_line(str(exc)), unsupported=True))
        except Exception as exc:  # noqa: BLE001 - one case's error is reported, the others still run
            errors.append(DriveError(origin, f"{type(exc).__name__}: {first_line(str(exc))}"))
    return recorder.launches, errors


# Compiling one variant ------------------------------------------------------------------------------

def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def error_line(exc: BaseException) -> str:
    """The first line that says what went wrong (Triton's CompilationError starts with the source location)."""
    message = getattr(exc, "error_message", None) or str(exc)
    return f"{type(exc).__name__}: {first_line(message)}"


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """`cuobjdump -res-usage` output -> {function: {"REG": n, "STACK": n, "SHARED": n, "LOCAL": n, ...}}."""
    usage: dict[str, dict[str, int]] = {}
    function = None
    for line in text.splitlines():
        match = re.match(r"\s*Function\s+(\S+?):?\s*$", line)
        if match:
            function = match.group(1)
            continue
        if function is not None and "REG:" in line:
            usage[function] = {key: int(value) for key, value in re.findall(r"([A-Z_\[\]0-9]+):(\d+)", line)}
            function = None
    return usage


def dot_instructions(ptx: str, has_dot: bool) -> str | None:
    """Which instructions a kernel's dots became: Hopper's wgmma, Ampere's mma.sync, or FMA loops."""
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if re.search(r"\bmma\.sync\.", ptx):
        return "mma"
    return "FMA" if has_dot else None


def compile_kernel(variant: Variant):
    """Triton's compile of `variant` for its target (in a process with the interpreter off): the kernel with its
    cubin, PTX and metadata."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, qualname = variant.kernel.split(":")
    jit_fn = _jit_function(getattr(importlib.import_module(module), qualname))
    names = [name for name, _ in variant.signature]
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in variant.aligned}
    source = ASTSource(jit_fn, dict(variant.signature), dict(variant.constexprs), attrs)
    return triton.compile(source, target=GPUTarget("cuda", TARGETS[variant.arch].cc, 32),
                          options=dict(variant.options))


def resource_usage(compiled) -> dict[str, int]:
    """What a compiled kernel's cubin uses, read by cuobjdump: {"REG": n, "STACK": n, "LOCAL": n, ...}."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        text = subprocess.run([knobs.nvidia.cuobjdump.path, "-res-usage", cubin.name], capture_output=True,
                              text=True, check=True).stdout
    return parse_resource_usage(text).get(compiled.metadata.name, {})


def compile_variant(variant: Variant) -> CompileResult:
    """Compile `variant` to cubin (in a worker with the interpreter off) and read what it uses."""
    start = _cpu_seconds()
    try:
        compiled = compile_kernel(variant)
    except Exception as exc:  # noqa: BLE001 - a compile failure is the finding
        return CompileResult(error=error_line(exc), cpu_seconds=_cpu_seconds() - start)
    usage = resource_usage(compiled)
    return CompileResult(shared=compiled.metadata.shared, registers=usage.get("REG"),
                         spill_bytes=usage.get("STACK", 0) + usage.get("LOCAL", 0),
                         dot=dot_instructions(compiled.asm["ptx"], "tt.dot" in compiled.asm["ttir"]),
                         cpu_seconds=_cpu_seconds() - start)


def _cpu_seconds() -> float:
    """This process's CPU time and its finished children's (ptxas, cuobjdump)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _init_worker(cache_dir: str) -> None:
    """Compiled kernels, not interpreted ones, and a cache that dies with the run."""
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")


# The public API's variants beyond the registry's cases ---------------------------------------------

@contextlib.contextmanager
def _tf32(allowed: bool):
    """torch's TF32 switch, which the kernels follow for fp32 dots."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def api_probes() -> list[tuple[str, Callable[[], object]]]:
    """(label, call) for the entry points' variants beyond the registry's cases, in every dtype: each
    activation, bias or none, causal or not, every head dim, GQA group widths, the most decode splits,
    rows up to the widest supported; fp32 dots with TF32 off (torch's default) and, once per kernel,
    on. Shapes are registry-like (multiples of 16), so each probe adds constant variants, not shapes."""
    import torch

    from wattbench import kernels
    from wattbench.kernels.attention import HEAD_DIMS
    from wattbench.kernels.matmul import ACTIVATIONS
    from wattbench.kernels.norms import MAX_HIDDEN

    probes = []

    def probe(label: str, tf32: bool = False):
        def register(call):
            def drive():
                with _tf32(tf32):
                    call()
            probes.append((f"api {label}" + (" tf32" if tf32 else ""), drive))
        return register

    def tensor(*shape, dtype, grad=False):
        return torch.empty(shape, device="meta", dtype=dtype).requires_grad_(grad)

    def run(call, train: bool):
        """Forward and backward (train), or forward only without autograd."""
        if train:
            out = call()
            out.backward(torch.empty_like(out))
        else:
            with torch.no_grad():
                call()

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for name, dtype in dtypes.items():
        tf32_modes = (False, True) if dtype == torch.float32 else (False,)
        # matmul: each activation, with and without autograd (the forward keeps Z for the backward);
        # no bias once. The registry's cases cover the plain biased product and its backward.
        for activation, bias, train in ([(a, True, t) for a in ACTIVATIONS if a for t in (True, False)]
                                        + [(None, True, True), (None, True, False), (None, False, False)]):
            for tf32 in tf32_modes if activation is None and bias else (False,):
                @probe(f"matmul {name} {activation} bias={bias} {'train' if train else 'infer'}", tf32)
                def _(dtype=dtype, activation=activation, bias=bias, train=train):
                    a, b = tensor(1024, 1024, dtype=dtype, grad=train), tensor(1024, 1024, dtype=dtype, grad=train)
                    c = tensor(1024, dtype=dtype, grad=train) if bias else None
                    run(lambda: kernels.matmul(a, b, c, activation), train)
        for bias in (False, True):
            for rows in (1, 16):
                for tf32 in tf32_modes if bias and rows == 16 else (False,):
                    @probe(f"matmul_int8w {name} bias={bias} M{rows}", tf32)
                    def _(dtype=dtype, bias=bias, rows=rows):
                        a, scale = tensor(rows, 4096, dtype=dtype), tensor(4096, dtype=torch.float32)
                        c = tensor(4096, dtype=dtype) if bias else None
                        run(lambda: kernels.matmul_int8w(a, tensor(4096, 4096, dtype=torch.int8), scale, c), False)
        # attention: every head dim causal (the models' mode), the two largest also non-causal.
        for head_dim, causal in [(d, True) for d in HEAD_DIMS] + [(64, False), (128, False)]:
            for tf32 in tf32_modes if head_dim == 128 else (False,):
                @probe(f"attention {name} D{head_dim} causal={causal} train", tf32)
                def _(dtype=dtype, head_dim=head_dim, causal=causal):
                    q, k, v = (tensor(2, 4, 1024, head_dim, dtype=dtype, grad=True) for _ in range(3))
                    run(lambda: kernels.attention(q, k, v, causal=causal), True)
        # decode: every head dim at a registry-like GQA group of 4; at D=128 also one query head per
        # cache head, a group of 32 (BLOCK_G 32), and one long sequence on one cache head (the most splits).
        shapes = [(d, 4, 8, 16, 4096) for d in HEAD_DIMS] + [(128, 1, 8, 16, 4096), (128, 32, 1, 16, 4096),
                                                             (128, 8, 1, 1, 32768)]
        for head_dim, group, kv_heads, batch, cache in shapes:
            for tf32 in tf32_modes if (head_dim, group) == (128, 4) else (False,):
                @probe(f"decode_attention {name} D{head_dim} group{group} B{batch} S{cache}", tf32)
                def _(dtype=dtype, head_dim=head_dim, group=group, kv_heads=kv_heads, batch=batch, cache=cache):
                    q = tensor(batch, group * kv_heads, head_dim, dtype=dtype)
                    k, v = (tensor(batch, kv_heads, cache, head_dim, dtype=dtype) for _ in range(2))
                    run(lambda: kernels.decode_attention(q, k, v, tensor(batch, dtype=torch.int32)), False)
        for hidden in (1024, 4096, 8192, 16384, MAX_HIDDEN):
            @probe(f"rms_norm {name} N{hidden} train")
            def _(dtype=dtype, hidden=hidden):
                x, w = tensor(4096, hidden, dtype=dtype, grad=True), tensor(hidden, dtype=dtype, grad=True)
                run(lambda: kernels.rms_norm(x, w), True)

            @probe(f"layer_norm {name} N{hidden} train")
            def _(dtype=dtype, hidden=hidden):
                x = tensor(4096, hidden, dtype=dtype, grad=True)
                w, b = tensor(hidden, dtype=dtype, grad=True), tensor(hidden, dtype=dtype, grad=True)
                run(lambda: kernels.layer_norm(x, w, b), True)
        for width in (1024, 32768):
            @probe(f"softmax {name} N{width} train")
            def _(dtype=dtype, width=width):
                x = tensor(4096, width, dtype=dtype, grad=True)
                run(lambda: kernels.softmax(x), True)
        for train in (True, False):
            @probe(f"cross_entropy {name} V50304 {'train' if train else 'infer'}")
            def _(dtype=dtype, train=train):
                logits = tensor(8192, 50304, dtype=dtype, grad=train)
                run(lambda: kernels.cross_entropy(logits, tensor(8192, dtype=torch.int64)), train)

        @probe(f"swiglu {name} train")
        def _(dtype=dtype):
            gate, up = tensor(4096, 11008, dtype=dtype, grad=True), tensor(4096, 11008, dtype=dtype, grad=True)
            run(lambda: kernels.swiglu(gate, up), True)

        @probe(f"adamw_step {name}")
        def _(dtype=dtype):
            lists = [[tensor(4096, 4096, dtype=dtype), tensor(4096, dtype=dtype)] for _ in range(4)]
            kernels.adamw_step(*lists, 1, 1e-3, 0.9, 0.999, 1e-8, 0.01)
        # int4 weight-only: each activation dtype, groups of 32 and 128, decode to prefill rows, bias or not.
        for group in (32, 128):
            for rows in (1, 16, 4096):
                for bias in (False, True):
                    @probe(f"matmul_int4w {name} group{group} M{rows} bias={bias}")
                    def _(dtype=dtype, group=group, rows=rows, bias=bias):
                        w = kernels.quantize_int4(tensor(4096, 4096, dtype=torch.float32), group)
                        c = tensor(4096, dtype=dtype) if bias else None
                        run(lambda: kernels.matmul_int4w(tensor(rows, 4096, dtype=dtype), w, c), False)
    # FP8 (bf16 activations only): both scalings, bias or not, decode to prefill rows. Below sm_89 the kernel
    # refuses the GPU (UnsupportedDevice): reported as not on that target.
    for scaling in ("row", "tensor"):
        for rows in (1, 16, 4096):
            for bias in (False, True):
                @probe(f"matmul_fp8 {scaling} M{rows} bias={bias}")
                def _(scaling=scaling, rows=rows, bias=bias):
                    w = kernels.quantize_fp8_weight(tensor(4096, 4096, dtype=torch.bfloat16), scaling)
                    c = tensor(4096, dtype=torch.bfloat16) if bias else None
                    run(lambda: kernels.matmul_fp8(tensor(rows, 4096, dtype=torch.bfloat16), w, c), False)
    return probes


# The report ------------------------------------------------------------------------------------------

@dataclass
class KernelSummary:
    """One kernel on one target, over every variant compiled for it."""

    kernel: str
    variants: int = 0
    failures: list[tuple[Variant, str]] = field(default_factory=list)
    max_shared: int = 0
    max_registers: int = 0
    spilling: list[tuple[Variant, int]] = field(default_factory=list)
    over_limit: list[tuple[Variant, int]] = field(default_factory=list)
    dots: Counter = field(default_factory=Counter)


@dataclass
class TargetReport:
    target: Target
    kernels: dict[str, KernelSummary]
    #: Launches whose every variant failed or needs more shared memory than the target has.
    unfit: list[Launch]
    drive_errors: list[DriveError]
    launches: list[Launch] = field(default_factory=list)

    def launches_of(self, *kernels: str) -> list[Launch]:
        """The launches of the kernels named ("module.kernel", as in `kernels`)."""
        return [launch for launch in self.launches if launch.variants[0].name in kernels]

    @property
    def variants(self) -> int:
        return sum(k.variants for k in self.kernels.values())

    @property
    def failures(self) -> int:
        return sum(len(k.failures) for k in self.kernels.values())


def fits(result: CompileResult, target: Target) -> bool:
    return result.error is None and result.shared <= target.shared_limit


def dot_label(variant: Variant, result: CompileResult) -> str | None:
    """The dot path, with why a dot runs on FMA when that is by choice: fp32 with TF32 off."""
    if result.dot != "FMA":
        return result.dot
    precision = dict(variant.call).get("PRECISION", dict(variant.call).get("DOT_PRECISION"))
    return "FMA (fp32, TF32 off)" if precision == "ieee" else "FMA"


def summarize(target: Target, launches: list[Launch], errors: list[DriveError],
              results: dict[Variant, CompileResult]) -> TargetReport:
    kernels: dict[str, KernelSummary] = {}
    for variant in dict.fromkeys(v for launch in launches for v in launch.variants):
        result = results[variant]
        summary = kernels.setdefault(variant.name, KernelSummary(variant.name))
        summary.variants += 1
        if result.error is not None:
            summary.failures.append((variant, result.error))
            continue
        summary.max_shared = max(summary.max_shared, result.shared)
        summary.max_registers = max(summary.max_registers, result.registers or 0)
        if result.spill_bytes:
            summary.spilling.append((variant, result.spill_bytes))
        if result.shared > target.shared_limit:
            summary.over_limit.append((variant, result.shared))
        label = dot_label(variant, result)
        if label:
            summary.dots[label] += 1
    unfit = [launch for launch in launches if not any(fits(results[v], target) for v in launch.variants)]
    return TargetReport(target, dict(sorted(kernels.items())), unfit, errors, launches)


def _bytes(n: int) -> str:
    return f"{n:,} B"


@dataclass
class CompileCheck:
    """What `run_check` found: a report per target, and what the compiles cost."""

    reports: list[TargetReport]
    preset: str
    seconds: float
    cpu_seconds: float
    workers: int

    @property
    def exit_code(self) -> int:
        return exit_code(self.reports)

    def text(self) -> str:
        """The report `wattbench selfcheck compile` prints: a table per target, then every finding."""
        import triton

        lines = [f"wattbench selfcheck compile: Triton {triton.__version__}; every variant the registry's GPU cases "
                 f"(preset {self.preset}) and the API probes launch", f"not driven: {NOT_DRIVEN[1]}"]
        for report in self.reports:
            t = report.target
            cuda, driver = driver_requirement(t.cc)
            lines += ["", f"{t.arch}: stands for {t.gpu} ({t.sm_count} SMs, {_bytes(t.shared_limit)} shared memory "
                          f"per block); cubins from ptxas {cuda}, which need driver {driver} or newer"]
            header = ("kernel", "variants", "failed", "max shared", "max regs", "spilling", "max spill", "over limit",
                      "dot instructions")
            rows = [(k.kernel, str(k.variants), str(len(k.failures)), _bytes(k.max_shared), str(k.max_registers),
                     str(len(k.spilling)), _bytes(max((b for _, b in k.spilling), default=0)), str(len(k.over_limit)),
                     ", ".join(f"{label} {n}" for label, n in k.dots.most_common()) or "no dot")
                    for k in report.kernels.values()]
            widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
            for row in [header, tuple("-" * w for w in widths), *rows]:
                lines.append("  ".join(cell.ljust(w) if i in (0, 8) else cell.rjust(w)
                                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
            lines += [f"  FAILED {k.kernel} {variant.describe()}: {error}"
                      for k in report.kernels.values() for variant, error in k.failures]
            lines += [f"  over the limit: {k.kernel} {variant.describe()}: {_bytes(shared)}"
                      for k in report.kernels.values() for variant, shared in k.over_limit]
            lines += [f"  spills: {k.kernel} {variant.describe()}: {_bytes(spill)} per thread"
                      for k in report.kernels.values() for variant, spill in k.spilling]
            lines += [f"  NO FITTING CONFIG: {launch.variants[0].name} for {launch.origin} "
                      f"({len(launch.variants)} of {launch.configs_listed} configs tried)" for launch in report.unfit]
            lines += [f"  {'not on this target' if error.unsupported else 'DRIVE ERROR'}: {error.origin}: "
                      f"{error.message}" for error in report.drive_errors]
            spilling = sum(len(k.spilling) for k in report.kernels.values())
            over = sum(len(k.over_limit) for k in report.kernels.values())
            lines.append(f"  {t.arch}: {report.variants} variants of {len(report.kernels)} kernels, {report.failures} "
                         f"failed, {spilling} spill, {over} over the shared-memory limit, {len(report.unfit)} launches "
                         f"without a fitting config, {len(failed_drives(report))} drive errors")
        lines += ["", f"compiled in {self.seconds:.0f} s with {self.workers} worker processes; the compiles took "
                      f"{self.cpu_seconds:.0f} s of CPU time"]
        return "\n".join(lines)


def exit_code(reports: list[TargetReport]) -> int:
    """1 when a launch would fail on a GPU of a target: a variant that does not compile, a launch with
    no config that fits, or an entry point that raised; 0 otherwise (spills and configs over the limit,
    which the autotuner skips, are reported only)."""
    return int(any(r.failures or r.unfit or failed_drives(r) for r in reports))


def failed_drives(report: TargetReport) -> list[DriveError]:
    """The drives that raised, less those that refused the target as meant (UnsupportedDevice)."""
    return [error for error in report.drive_errors if not error.unsupported]


# Running it ------------------------------------------------------------------------------------------

def _enumerate_worker(arch: str, preset: str, select: str | None):
    pattern = re.compile(select) if select else None
    return enumerate_launches(TARGETS[arch], preset, pattern.search if pattern else None)


def run_check(archs: Iterable[str], preset: str = "full", select: str | dict[str, str] | None = None,
              workers: int | None = None) -> CompileCheck:
    """Enumerate and compile for every target in `archs` the variants of `preset`'s registry GPU cases and
    of the API probes (a UsageError for an unknown target or preset).

    `select` is a regular expression over the drives' labels (registry case ids, "api ..." probes), or one per
    target ({arch: expression}), all compiled by the same workers.
    """
    from wattbench.workloads import check_preset

    check_preset(preset)
    archs = list(archs)
    unknown = [a for a in archs if a not in TARGETS]
    if unknown or not archs:
        raise UsageError(f"unknown target {', '.join(unknown) or '(none)'}: choose from {', '.join(TARGETS)}")
    workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wattbench-triton-cache-") as cache, \
            ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                initargs=(cache,)) as pool:
        selects = [select[arch] if isinstance(select, dict) else select for arch in archs]
        found = list(pool.map(_enumerate_worker, archs, [preset] * len(archs), selects))
        variants = list(dict.fromkeys(v for launches, _ in found for launch in launches for v in launch.variants))
        results = dict(zip(variants, pool.map(compile_variant, variants, chunksize=1)))
    reports = [summarize(TARGETS[arch], launches, errors, results) for arch, (launches, errors) in zip(archs, found)]
    return CompileCheck(reports, preset, time.perf_counter() - start, sum(r.cpu_seconds for r in results.values()),
                        workers)
