"""`wattbench selfcheck kernels`: do the Triton kernels meet their performance targets (issue 4)?

Each target is measured on the workload registry's kernel-level cases for its kernel. The Triton
case is first checked against the registry's PyTorch path on identical inputs (a fast wrong kernel
meets nothing), then, on a GPU, it and its baseline are timed as the harness plans a benchmark
(warm-up, enough rounds to span the plan's minimum time, the L2 flushed before each round), and
the table prints achieved TFLOP/s and GB/s, % of the roofline bound from the device spec table,
the speed ratio to the baseline and the verdict.

Without a GPU, Triton runs through its interpreter, whose timings mean nothing. The reduced mode
then runs each kernel once at the registry's interpreter-sized (CPU) shapes, checks the result
against its reference, and prints "interpreted, no timing" in place of every timing figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from wattbench import kernels, timing
from wattbench.device import INTERPRET_ENV, Device, detect
from wattbench.errors import UsageError
from wattbench.precision import Precision
from wattbench.results import aligned_lines, format_seconds
from wattbench.specs import DeviceSpec, load_specs
from wattbench.timing import median_time
from wattbench.workloads import Case, Step, check_preset, workloads

#: Fixed, so that every run checks and times the same inputs.
SEED = 0
NO_TIMING = "interpreted, no timing"
NO_SPEC = "no spec"
#: Relative-norm tolerance of the Triton result against the PyTorch one, by the activations' dtype
#: (both sides round to that dtype, so the bound is a few of its ulps).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
TARGET_METRICS = ("speedup", "bandwidth")


@dataclass(frozen=True)
class Target:
    """A lower bound on one figure of a Triton case.

    `speedup` is the baseline's median time over Triton's (above 1: Triton is faster);
    `bandwidth` is Triton's achieved GB/s as a % of the device's peak memory bandwidth.
    """

    text: str
    metric: str
    minimum: float
    strict: bool = False  # the figure must exceed `minimum`, not merely reach it

    def __post_init__(self):
        if self.metric not in TARGET_METRICS:
            raise ValueError(f"Target.metric must be one of {TARGET_METRICS}, got {self.metric!r}")
        if not isinstance(self.minimum, (int, float)) or not math.isfinite(self.minimum) or self.minimum <= 0:
            raise ValueError(f"Target.minimum must be a positive number, got {self.minimum!r}")

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets the target; None when the figure is unknown (no spec for the device)."""
        if value is None:
            return None
        return value > self.minimum if self.strict else value >= self.minimum

    @property
    def needs(self) -> str:
        bound = ">" if self.strict else ">="
        if self.metric == "speedup":
            return f"{bound} {self.minimum:.3g}x"
        return f"{bound} {self.minimum:g}% BW"


def torch_case(case: Case) -> Case:
    """The registry's PyTorch path of `case`: identical inputs, since seeds ignore the implementation."""
    return replace(case, impl="torch")


def _torch_baseline(case: Case, device: Device, seed: int) -> Step:
    return torch_case(case).build(device, seed)


def _dense_torch_baseline(case: Case, device: Device, seed: int) -> Step:
    """The unquantised PyTorch GEMM at the activations' precision (int8w-bf16 -> bf16)."""
    return replace(case, impl="torch", precision=str(Precision.parse(case.precision).dense())).build(device, seed)


def _sdpa_flash_baseline(case: Case, device: Device, seed: int) -> Step:
    """PyTorch's SDPA held to its flash backend (left alone, it may pick cuDNN or another one)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    step = torch_case(case).build(device, seed)

    def flash_step():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return step()

    return flash_step


def _adamw_foreach_baseline(case: Case, device: Device, seed: int) -> Step:
    """`torch.optim.AdamW(foreach=True)` stepping the case's parameters with its gradients,
    with the hyperparameters of the registry's step (its moments start at zero, which costs the same)."""
    generator = torch.Generator(device=device.torch).manual_seed(case.seed(seed))
    params, grads, _, _ = case.workload.make_inputs(case.size.params, case.precision, device.torch,
                                                    generator)["tensors"]
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=True)

    def step():
        optimizer.step()
        return params

    return step


def every_size(cases: list[Case]) -> list[Case]:
    return cases


def decode_sizes(cases: list[Case]) -> list[Case]:
    """Decode-sized GEMMs (M <= 16), where the weight's bytes are the whole cost."""
    return [case for case in cases if case.size.params["M"] <= 16]


def most_bytes(cases: list[Case]) -> list[Case]:
    """Per precision, the case that moves the most bytes: small ones are launch-bound, not bandwidth-bound."""
    largest: dict[str, Case] = {}
    for case in cases:
        best = largest.get(case.precision)
        if best is None or case.accounting()["bytes"] > best.accounting()["bytes"]:
            largest[case.precision] = case
    return list(largest.values())


@dataclass(frozen=True)
class Check:
    """One kernel's target, the registry workload it is measured on, and the baseline it is timed against."""

    kernel: str
    workload: str
    #: "cuda" (timed) or "cpu" (the interpreter's shapes) -> precisions of the Triton cases.
    precisions: Mapping[str, tuple[str, ...]]
    target: Target
    baseline: str
    build_baseline: Callable[[Case, Device, int], Step] = _torch_baseline
    pick: Callable[[list[Case]], list[Case]] = every_size
    #: Replay both sides as CUDA graphs: their kernels take microseconds, less than launching them from Python.
    cuda_graph: bool = False

    def cases(self, preset: str, interpreted: bool) -> list[Case]:
        """The Triton cases of the preset: the registry's GPU shapes, or its small CPU ones for the interpreter."""
        where = "cpu" if interpreted else "cuda"
        workload = next(w for w in workloads() if w.name == self.workload)
        found = [Case(workload, "triton", precision, size)
                 for precision in self.precisions[where]
                 for size in workload.sizes if preset in size.presets and where in size.devices]
        return self.pick(found)


_BANDWIDTH = Target("at least 80% of the device's peak memory bandwidth", "bandwidth", 80.0)
_ROW_OPS = {"cuda": ("bf16", "fp32"), "cpu": ("fp32",)}

CHECKS = (
    Check("matmul", "gemm.train", {"cuda": ("bf16",), "cpu": ("fp32",)},
          Target("time within 10% of torch's at large bf16 shapes (forward + both backward GEMMs)",
                 "speedup", 1 / 1.1),
          baseline="torch (cuBLAS)"),
    Check("matmul_int8w", "gemm.infer", {"cuda": ("int8w-bf16",), "cpu": ("int8w-fp32",)},
          Target("at least 1.5x faster than the bf16 torch path for M <= 16 (half the weight bytes)",
                 "speedup", 1.5),
          baseline="torch bf16 GEMM (cuBLAS)", build_baseline=_dense_torch_baseline, pick=decode_sizes,
          cuda_graph=True),
    Check("attention", "attention.infer", {"cuda": ("bf16",), "cpu": ("fp32",)},
          Target("forward time within 20% of torch SDPA's flash backend", "speedup", 1 / 1.2),
          baseline="torch SDPA, flash backend", build_baseline=_sdpa_flash_baseline),
    *(Check(op, f"{op}.infer", _ROW_OPS, _BANDWIDTH, baseline="torch", pick=most_bytes, cuda_graph=True)
      for op in ("rms_norm", "layer_norm", "softmax", "swiglu")),
    Check("cross_entropy", "cross_entropy.train", _ROW_OPS, _BANDWIDTH, baseline="torch", pick=most_bytes,
          cuda_graph=True),
    Check("adamw_step", "adamw_step.train", {"cuda": ("fp32", "bf16"), "cpu": ("fp32",)},
          Target("faster than torch.optim.AdamW(foreach=True)", "speedup", 1.0, strict=True),
          baseline="torch.optim.AdamW(foreach=True)", build_baseline=_adamw_foreach_baseline),
)


@dataclass(frozen=True)
class Outcome:
    """What one Triton case did: its error against the reference and, when timed, both median times."""

    check: Check
    case: Case
    error: float | None = None
    failure: str | None = None  # why the case could not run
    triton_s: float | None = None
    baseline_s: float | None = None

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.case.dtype]

    @property
    def correct(self) -> bool:
        return self.failure is None and self.error is not None and self.error <= self.tolerance


def output_tensors(outputs: Any) -> list[torch.Tensor]:
    """A step's outputs (one tensor, or a tuple/list such as (out, *grads) or the updated parameters)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [item for item in outputs if isinstance(item, torch.Tensor)]


def relative_error(actual: Any, expected: Any) -> float:
    """The worst ||actual - expected|| / ||expected|| over the outputs; inf for a non-finite value,
    a shape mismatch or a different number of outputs. Computed in float32, plenty for tolerances
    of 1e-5 and up (float64 copies would not fit beside the largest GPU cases)."""
    actual, expected = output_tensors(actual), output_tensors(expected)
    if len(actual) != len(expected):
        return math.inf
    worst = 0.0
    for got, want in zip(actual, expected):
        if got.shape != want.shape or not torch.isfinite(got).all():
            return math.inf
        got, want = got.detach().float(), want.detach().float()
        diff, norm = torch.linalg.vector_norm(got - want).item(), torch.linalg.vector_norm(want).item()
        worst = max(worst, diff / norm if norm > 0 else diff)
    return worst


def measure(check: Check, case: Case, device: Device, timed: bool, plan: timing.TimingPlan) -> Outcome:
    """Check `case` against its reference; when `timed` and correct, time it and its baseline."""
    try:
        step = case.build(device, SEED)
        error = relative_error(step(), torch_case(case).build(device, SEED)())
        outcome = Outcome(check, case, error=error)
        if not timed or not outcome.correct:
            return outcome
        case_plan = replace(plan, cuda_graph=check.cuda_graph)
        triton_s = median_time(step, device, case_plan)
        del step  # free the Triton side's inputs before the baseline makes its own
        baseline_s = median_time(check.build_baseline(case, device, SEED), device, case_plan)
        return replace(outcome, triton_s=triton_s, baseline_s=baseline_s)
    except Exception as exc:  # noqa: BLE001  one broken case (out of memory, a compile error) must not hide the rest
        first_line = next(iter(str(exc).splitlines()), "")  # compile errors run to many lines
        return Outcome(check, case, failure=f"{type(exc).__name__}: {first_line}")


def roofline_tflops(spec: DeviceSpec | None, precision: str, flops: float, bytes_moved: float) -> float | None:
    """The bound on TFLOP/s of a call moving `bytes_moved` (DeviceSpec.attainable_tflops); None without the spec
    figures."""
    if spec is None or bytes_moved <= 0:
        return None
    return spec.attainable_tflops(precision, flops / bytes_moved)


@dataclass(frozen=True)
class Figures:
    """The figures of a timed Triton case; the spec-derived ones are None when the device has no spec."""

    tflops: float
    gbps: float
    pct_bound: float | None
    pct_bandwidth: float | None
    speedup: float


def figures(outcome: Outcome, spec: DeviceSpec | None) -> Figures:
    """Achieved throughput from the registry's FLOP and byte counts and Triton's median time."""
    accounting = outcome.case.accounting()
    seconds = outcome.triton_s
    tflops, gbps = accounting["flops"] / seconds / 1e12, accounting["bytes"] / seconds / 1e9
    bound = roofline_tflops(spec, outcome.case.precision, accounting["flops"], accounting["bytes"])
    bandwidth = spec.memory_bandwidth_gbps if spec else None
    return Figures(tflops=tflops, gbps=gbps, pct_bound=100 * tflops / bound if bound else None,
                   pct_bandwidth=100 * gbps / bandwidth if bandwidth else None,
                   speedup=outcome.baseline_s / seconds)


def verdict(outcome: Outcome, spec: DeviceSpec | None) -> tuple[str, bool]:
    """(what the result column says, whether the case counts as passed)."""
    if outcome.failure is not None:
        return f"ERROR: {outcome.failure}", False
    if not outcome.correct:
        return f"WRONG: rel err {outcome.error:.1e} > {outcome.tolerance:.0e}", False
    if outcome.triton_s is None:  # interpreted: correctness is all there is
        return "ok", True
    found = figures(outcome, spec)
    target = outcome.check.target
    met = target.met(found.speedup if target.metric == "speedup" else found.pct_bandwidth)
    if met is None:
        return f"{NO_SPEC}: unchecked", False
    return ("PASS", True) if met else ("FAIL", False)


def _percent(value: float | None) -> str:
    return NO_SPEC if value is None else f"{value:.1f}%"


def case_name(case: Case) -> str:
    return f"{case.workload.name} {case.precision} {case.size.name}"


def _row(outcome: Outcome, spec: DeviceSpec | None, interpreted: bool) -> list[str]:
    error = "-" if outcome.error is None else f"{outcome.error:.1e}"
    result = verdict(outcome, spec)[0]
    start = [outcome.check.kernel, case_name(outcome.case), error]
    if interpreted:
        return [*start, f"{outcome.tolerance:.0e}", result, NO_TIMING]
    if outcome.triton_s is None:
        return [*start, "-", "-", "-", "-", "-", "-", outcome.check.target.needs, result]
    found = figures(outcome, spec)
    return [*start, format_seconds(outcome.triton_s), f"{found.tflops:.3g}", f"{found.gbps:.4g}",
            _percent(found.pct_bound), format_seconds(outcome.baseline_s), f"{found.speedup:.2f}x",
            outcome.check.target.needs, result]


def format_table(outcomes: list[Outcome], spec: DeviceSpec | None, interpreted: bool) -> str:
    """Aligned text: one row per case. Interpreted, one column stands in for every timing figure."""
    if interpreted:
        header = ["kernel", "case", "rel err", "tolerance", "result", "time, TFLOP/s, GB/s, % of bound, vs baseline"]
    else:
        header = ["kernel", "case", "rel err", "Triton", "TFLOP/s", "GB/s", "% of bound", "baseline",
                  "vs baseline", "target", "result"]
    rows = [_row(outcome, spec, interpreted) for outcome in outcomes]
    return "\n".join(aligned_lines(header, rows))


def _preamble(device: Device, preset: str, spec: DeviceSpec | None, interpreted: bool) -> list[str]:
    lines = [f"kernel performance check on {device.spec} ({device.name}), preset {preset}", "targets:"]
    for check in CHECKS:
        graph = "; timed as CUDA graph replays" if check.cuda_graph else ""
        lines.append(f"  {check.kernel:<14} {check.target.text} (baseline: {check.baseline}{graph})")
    if interpreted:
        lines.append("Triton runs through its interpreter here: each kernel runs once at the registry's small CPU "
                     "shapes and is checked against its PyTorch reference; nothing is timed. The targets are "
                     "checked on a GPU host (docs/kernel-performance.md).")
        return lines
    lines.append("times: median device time over rounds (CUDA events, L2 flushed before each round); "
                 "vs baseline = baseline time / Triton time")
    if spec is None:
        lines.append(f"{NO_SPEC}: no device spec matches {device.name!r}, so % of bound and the bandwidth targets "
                     f"cannot be computed; add the device with a spec file (--specs FILE)")
    else:
        lines.append(f"spec: {spec.name}; % of bound = achieved TFLOP/s / min(peak TFLOP/s of the precision, "
                     f"FLOP/byte x {spec.memory_bandwidth_gbps:g} GB/s)")
    return lines


def _summary(outcomes: list[Outcome], spec: DeviceSpec | None, interpreted: bool) -> str:
    passed = sum(verdict(outcome, spec)[1] for outcome in outcomes)
    if interpreted:
        return f"result: {passed} of {len(outcomes)} Triton results match their references ({NO_TIMING})"
    return f"result: {passed} of {len(outcomes)} cases meet their targets"


@dataclass(frozen=True)
class KernelReport:
    """What `selfcheck kernels` found: every case's outcome on `device`, judged against `spec`."""

    device: Device
    preset: str
    spec: DeviceSpec | None
    interpreted: bool
    outcomes: list[Outcome]

    @property
    def passed(self) -> bool:
        """Every target met (interpreted: every Triton result matched its reference)."""
        return all(verdict(outcome, self.spec)[1] for outcome in self.outcomes)

    def text(self) -> str:
        return "\n".join([*_preamble(self.device, self.preset, self.spec, self.interpreted),
                          format_table(self.outcomes, self.spec, self.interpreted),
                          _summary(self.outcomes, self.spec, self.interpreted)])


def check_kernels(device: str | None = None, preset: str = "quick", specs: Path | None = None) -> KernelReport:
    """Check (and on a GPU, time) every kernel's cases; bad input raises UsageError."""
    check_preset(preset)
    target = detect(device)
    interpreted = kernels.INTERPRETED
    if target.type == "cpu" and not interpreted:
        raise UsageError(f"Triton kernels run on a CPU only through Triton's interpreter, and this process "
                         f"compiles them for CUDA: set {INTERPRET_ENV}=1 before starting")
    spec = load_specs(specs).find(target.name)
    plan = timing.TimingPlan()
    with target.current():
        outcomes = [measure(check, case, target, not interpreted, plan)
                    for check in CHECKS for case in check.cases(preset, interpreted)]
    return KernelReport(target, preset, spec, interpreted, outcomes)
