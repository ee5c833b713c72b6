"""How long a run will take, before it starts: the plan `wattbench run --dry-run` prints and the ETA's base.

A benchmark's estimate has four parts, each from a documented cost model (the figures are assumptions, named
below; the run's progress lines correct them by what it measures, see wattbench.progress):

- **timing**: the build of its inputs and first call (`SETUP_S`, models `MODEL_SETUP_S`), then warm-up and timed
  rounds as the TimingPlan asks (`TimingPlan.rounds_for`), each round one call plus `ROUND_OVERHEAD_S` (the
  clock reads, the L2 flush). One call takes the roofline time of the case's FLOPs and bytes against the
  device's peak figures (the spec table's, `specs.py`) at `ATTAINED` of peak, plus a launch overhead per kernel
  (`launches`; `LAUNCH_S`, or `GRAPH_LAUNCH_S` for the steps that replay CUDA graphs).
- **energy windows**: what `WindowRule` would plan (`first_length`, from the sensor's update period, poll
  interval and read cost), times `EXPECTED_WINDOWS` (2 at least, to reach the target; `selfcheck
  power-accuracy` sees 2.1-2.6 on stable power), plus the steady runs around each window (EDGE_RUN_UPDATES
  update periods on both sides, half an update period of random offset). NVML's energy counter is taken to
  update every `NVML_UPDATE_S` (100 ms on A100/H100, docs/power.md), polled at PowerConfig's `sample_hz`, a
  read costing `NVML_READ_S`. A CPU run without a power source here has no windows.
- **compilation**: a Triton kernel (an op's forward pass, shared by its inference and training workloads, and a
  training workload's backward pass; a model's kernels count as one per pass) compiles each of its autotuner's
  configs once (`COMPILE_S_PER_CONFIG` x `CONFIGS_PER_KERNEL`) and benchmarks them once per distinct shape
  (`AUTOTUNE_S_PER_CONFIG`, triton's do_bench: 25 ms warm-up, 100 ms of repetitions); the `compiled` impl
  costs `TORCH_COMPILE_S` per case. On a CPU, Triton runs in its interpreter: nothing is compiled, and
  every interpreted call is `INTERPRETER_SLOWDOWN` times the roofline's.
- **idle baseline** once per run (`--wattbench-idle`), and in a sweep **settling** per setting
  (`SETTLE_S`, knobs' readbacks until a setting holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattbench.device import Device, detect
from wattbench.errors import UsageError
from wattbench.power.monitor import EDGE_RUN_UPDATES, PowerConfig, WindowRule
from wattbench.precision import Precision
from wattbench.specs import SpecTable, load_specs
from wattbench.timing import TimingPlan
from wattbench.workloads import Case

#: The GPU a `--device cuda --dry-run` plans for on a host without one, unless --device-name says otherwise.
DEFAULT_GPU_NAME = "NVIDIA H100 80GB HBM3"

#: The share of the roofline's peak a benchmark is assumed to reach.
ATTAINED = 0.6
#: Host-side cost of one kernel launch, seconds: eager PyTorch on a GPU, and one kernel of a CUDA graph's replay.
LAUNCH_S = 6e-6
GRAPH_LAUNCH_S = 1.5e-6
#: Workloads whose steps decode through CUDA graphs of their own on a GPU, one replay per token (unless
#: --wattbench-eager-decode): wattbench.models.decode.StaticDecoder's users.
GRAPH_REPLAYED = ("llm.decode", "llm.generate", "scenario.single_stream", "scenario.offline", "scenario.server",
                  "scenario.server_search")
#: Kernel launches per call: one op's forward (infer), forward + backward (train); model-level steps launch
#: about MODEL_LAUNCHES_PER_STEP kernels per forward step, one step per generated token ("T").
OP_LAUNCHES = {"infer": 1, "train": 3}
MODEL_LAUNCHES_PER_STEP = 150
#: Per timed round beyond the call itself: two clock reads, the L2 flush, pytest-benchmark's loop.
ROUND_OVERHEAD_S = {"cuda": 60e-6, "cpu": 20e-6}
#: Building a case's inputs and its first call, seconds; a model-level case also builds its model (a 125M or 8B
#: one on a GPU, a tiny one on a CPU).
SETUP_S = 0.3
MODEL_SETUP_S = {"cuda": 3.0, "cpu": 0.5}
#: NVML's energy counter: update period and read cost (docs/power.md).
NVML_UPDATE_S = 0.1
NVML_READ_S = 20e-6
#: Windows per benchmark until the target is reached (at least 2; `selfcheck power-accuracy`: 2.1-2.6).
EXPECTED_WINDOWS = 2.5
#: Triton: configs an autotuner tries after pruning to the GPU, compile seconds per config, autotune seconds
#: per config and shape.
CONFIGS_PER_KERNEL = 6
COMPILE_S_PER_CONFIG = 1.0
AUTOTUNE_S_PER_CONFIG = 0.15
#: torch.compile of one case (the `compiled` impl), seconds, on a GPU and on a CPU (a cold Inductor cache; a warm
#: one, from an earlier run on the host, takes a few seconds).
TORCH_COMPILE_S = {"cuda": 40.0, "cpu": 10.0}
#: Triton's interpreter on a CPU against the roofline time of the same work.
INTERPRETER_SLOWDOWN = 400.0
#: A sweep setting's settle time, seconds.
SETTLE_S = 2.0
#: A CPU that is not in the spec table: per core fp32 TFLOP/s (AVX2 FMA at ~2.5 GHz) and memory GB/s.
CPU_TFLOPS_PER_CORE = 0.08
CPU_BANDWIDTH_GBPS = 20.0


@dataclass(frozen=True)
class Machine:
    """The figures a plan is made from: the device's peaks and its power sensor's timing."""

    device: Device
    peak_tflops: dict[str, float]
    bandwidth_gbps: float
    #: The energy counter's update period, poll interval and read cost; None: no power source, no windows.
    update_s: float | None
    poll_s: float = 0.0
    read_s: float = 0.0
    source: str = ""

    def peak_for(self, case: Case) -> float:
        """TFLOP/s at the case's compute dtype, else the fp32 peak (the table may lack a dtype's figure)."""
        peak = self.peak_tflops.get(Precision.parse(case.precision).peak_dtype)
        return peak or self.peak_tflops.get("fp32") or min(self.peak_tflops.values())


def planning_device(requested: str | None, name: str | None) -> Device:
    """The device a dry run plans for: the one here, or (on a host without a GPU) `cuda:N` named `name`."""
    import re

    import torch

    spec = (requested or "").strip().lower()
    if spec.startswith("cuda") and not torch.cuda.is_available():
        match = re.fullmatch(r"cuda(?::(\d+))?", spec)
        if not match:
            raise UsageError(f"unknown device {requested!r}: use 'cpu', 'cuda' or 'cuda:N'")
        return Device("cuda", int(match.group(1) or 0), name or DEFAULT_GPU_NAME)
    found = detect(requested)
    return Device(found.type, found.index, name, found.uuid) if name else found


def machine_for(device: Device, power: PowerConfig, specs: SpecTable | None = None) -> Machine:
    """The device's figures: a GPU's from the spec table (refused when it is not there), a CPU's from the table
    or from the per-core defaults; the sensor's timing from NVML's (GPU) or the host's own sources (CPU)."""
    table = specs or load_specs()
    spec = table.find(device.name)
    poll_s = 1 / power.sample_hz
    if device.type == "cuda":
        if spec is None or not spec.peak_tflops or spec.memory_bandwidth_gbps is None:
            raise UsageError(f"no spec-table figures for {device.name!r}: name a GPU of the table (wattbench "
                             f"devices; e.g. --device-name {DEFAULT_GPU_NAME!r}) or give --specs")
        return Machine(device, spec.peak_tflops, spec.memory_bandwidth_gbps, NVML_UPDATE_S, poll_s, NVML_READ_S,
                       spec.name)
    if spec is not None and spec.peak_tflops and spec.memory_bandwidth_gbps:
        peaks, bandwidth, source = spec.peak_tflops, spec.memory_bandwidth_gbps, spec.name
    else:
        from wattbench.threads import usable_cpus

        peaks = {"fp32": CPU_TFLOPS_PER_CORE * usable_cpus()}
        bandwidth, source = CPU_BANDWIDTH_GBPS, f"{usable_cpus()} cores at the per-core defaults"
    return Machine(device, peaks, bandwidth, _cpu_update_s(device, power), poll_s, 0.0, source)


def _cpu_update_s(device: Device, power: PowerConfig) -> float | None:
    """The update period assumed for this host's CPU power source; None when it has none."""
    from wattbench.power.monitor import describe_sources

    if not any(status.available for status in describe_sources(device, power)):
        return None
    return power.offset_period_s


@dataclass(frozen=True)
class Estimate:
    """One benchmark's estimated seconds, part by part."""

    case_id: str
    call_s: float
    timing_s: float
    energy_s: float
    compile_s: float

    @property
    def total_s(self) -> float:
        return self.timing_s + self.energy_s + self.compile_s


@dataclass(frozen=True)
class Plan:
    """A run's (or a sweep's) benchmarks and their estimates: `settings` passes over the benchmarks, the idle
    baseline once per pass, settling before each pass of a sweep."""

    benchmarks: list[Estimate]
    idle_s: float
    settings: int = 1
    settle_s: float = 0.0
    parts: dict = field(init=False)

    def __post_init__(self):
        sums = {name: sum(getattr(b, f"{name}_s") for b in self.benchmarks) for name in ("timing", "energy")}
        compile_s = sum(b.compile_s for b in self.benchmarks)  # compiled once: caches outlive a setting
        object.__setattr__(self, "parts", {
            "timing": self.settings * sums["timing"], "energy windows": self.settings * sums["energy"],
            "idle baseline": self.settings * self.idle_s, "compilation": compile_s,
            "settling": self.settings * self.settle_s if self.settings > 1 else 0.0})

    @property
    def total_s(self) -> float:
        return sum(self.parts.values())


def call_seconds(case: Case, machine: Machine, eager_decode: bool = False) -> float:
    """One call by the roofline at ATTAINED of peak, plus its launches (interpreted Triton: INTERPRETER_SLOWDOWN
    times the roofline)."""
    work = case.accounting()
    roofline = max(work["flops"] / (machine.peak_for(case) * 1e12), work["bytes"] / (machine.bandwidth_gbps * 1e9))
    seconds = roofline / ATTAINED
    if machine.device.type == "cuda":
        graphed = case.workload.name in GRAPH_REPLAYED and not eager_decode
        return seconds + launches(case) * (GRAPH_LAUNCH_S if graphed else LAUNCH_S)
    return seconds * (INTERPRETER_SLOWDOWN if case.impl == "triton" else 1.0)


def launches(case: Case) -> int:
    if case.workload.suite == "kernels":
        return OP_LAUNCHES[case.workload.style]
    steps = case.size.params.get("T", 1)
    return MODEL_LAUNCHES_PER_STEP * (steps if isinstance(steps, int) else 1)


def triton_kernels(case: Case) -> list[tuple[str, str, str]]:
    """The Triton kernels a case launches, as (op, precision, pass): its forward kernel (shared by the op's
    inference and training workloads), and a training workload's backward kernel."""
    passes = ("forward", "backward") if case.workload.style == "train" else ("forward",)
    return [(case.workload.op, case.precision, one) for one in passes]


def timing_seconds(case: Case, call_s: float, plan: TimingPlan, device_type: str) -> float:
    rounds = plan.warmup_rounds + plan.rounds_for(call_s)
    setup = MODEL_SETUP_S[device_type] if case.workload.suite == "models" else SETUP_S
    return setup + call_s + rounds * (call_s + ROUND_OVERHEAD_S[device_type])


def energy_seconds(call_s: float, rule: WindowRule | None) -> float:
    """The windows WindowRule plans for a call of `call_s`, and the steady runs around them."""
    if rule is None:
        return 0.0
    windows = rule.max_windows if rule.target is None else min(rule.max_windows, EXPECTED_WINDOWS)
    around = 2 * EDGE_RUN_UPDATES * rule.update_s + rule.update_s / 2 + call_s
    return windows * (rule.first_length(call_s) + around)


def window_rule(machine: Machine, power: PowerConfig) -> WindowRule | None:
    if machine.update_s is None:
        return None
    return WindowRule.from_config(power, machine.update_s, machine.poll_s, machine.read_s)


def estimate(cases: list[Case], machine: Machine, plan: TimingPlan, power: PowerConfig, settings: int = 1,
             settle_s: float = SETTLE_S, eager_decode: bool = False) -> Plan:
    """The plan of running `cases` on `machine` (once per setting of a sweep)."""
    rule = window_rule(machine, power)
    kernels, shapes = set(), set()
    found = []
    for case in cases:
        call_s = call_seconds(case, machine, eager_decode)
        compile_s = 0.0
        if case.impl == "compiled":
            compile_s = TORCH_COMPILE_S[machine.device.type]
        elif case.impl == "triton" and machine.device.type == "cuda":
            for kernel in triton_kernels(case):
                shape = (*kernel, case.size.name)
                compile_s += 0.0 if kernel in kernels else CONFIGS_PER_KERNEL * COMPILE_S_PER_CONFIG
                compile_s += 0.0 if shape in shapes else CONFIGS_PER_KERNEL * AUTOTUNE_S_PER_CONFIG
                kernels.add(kernel)
                shapes.add(shape)
        found.append(Estimate(case.id, call_s, timing_seconds(case, call_s, plan, machine.device.type),
                              energy_seconds(call_s, rule), compile_s))
    idle_s = power.idle_s if rule is not None else 0.0
    return Plan(found, idle_s, settings, settle_s if settings > 1 else 0.0)


def duration(seconds: float) -> str:
    """0.4 s, 12 s, 3 min 05 s, 1 h 02 min."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_plan(plan: Plan, machine: Machine, preset: str, keyword: str = "") -> str:
    """The dry run's listing: each benchmark with its estimate, then the total split into its parts."""
    where = f"{machine.device.spec} ({machine.device.name}; figures: {machine.source})"
    lines = [f"wattbench dry run: {preset} preset on {where}" + (f", -k {keyword!r}" if keyword else ""),
             f"{'benchmark':<64} {'call':>10} {'timing':>8} {'energy':>8} {'compile':>8}"]
    for b in plan.benchmarks:
        lines.append(f"{b.case_id:<64} {b.call_s * 1e3:>8.3f}ms {b.timing_s:>7.1f}s {b.energy_s:>7.1f}s "
                     f"{b.compile_s:>7.1f}s")
    per = f" x {plan.settings} settings" if plan.settings > 1 else ""
    lines.append(f"{len(plan.benchmarks)} benchmarks{per}; estimated {duration(plan.total_s)}: "
                 + ", ".join(f"{name} {duration(seconds)}" for name, seconds in plan.parts.items()))
    if machine.update_s is None:
        lines.append("no power source on this host: no energy windows, no idle baseline")
    lines.append("cost model: wattbench/estimate.py (a roofline per call, the timing plan, WindowRule's windows)")
    return "\n".join(lines)


#: Each suite's test module and function: the names pytest's -k matches a benchmark's item against.
SUITE_TESTS = {"kernels": ("test_kernels.py", "test_kernel"), "models": ("test_models.py", "test_model")}


def selected(cases: list[Case], keyword: str) -> list[Case]:
    """The cases a -k expression selects, matched as pytest matches its items: a name is selected when it is
    part of (case-insensitively) the item's name, its module's, its folder's or a marker's."""
    if not keyword:
        return cases
    from _pytest.mark.expression import Expression  # pytest's own -k parser

    expression = Expression.compile(keyword)
    found = []
    for case in cases:
        module, function = SUITE_TESTS[case.workload.suite]
        names = [f"{function}[{case.id}]".lower(), module, "suites", "wattbench", "benchmark", "parametrize"]
        if expression.evaluate(lambda name, **_: any(name.lower() in item for item in names)):
            found.append(case)
    return found


def dry_run(config, settings: int = 1) -> str:
    """`wattbench run --dry-run`'s output for a RunConfig (a sweep's: `settings` passes): what would run, and for
    how long. A -k that selects nothing is a UsageError, as in a run."""
    from wattbench.workloads import cases

    machine = machine_for(config.device, config.power, config.specs)
    chosen = selected(cases(config.preset, config.device), config.keyword)
    if not chosen:
        what = f"-k {config.keyword!r} matches" if config.keyword else "the suites hold"
        raise UsageError(f"{what} no benchmark for preset {config.preset!r} on {config.device.spec}")
    plan = estimate(chosen, machine, config.plan, config.power, settings, eager_decode=config.eager_decode)
    return format_plan(plan, machine, config.preset, config.keyword)


def sweep_settings(asked: dict[str, str]) -> int:
    """How many settings a sweep of `asked` (its knob options' values as plan_sweep takes them: {"power_limits":
    "200:400:100"}) runs, the default included; parsed as the sweep parses them, not checked against a device
    (a dry run plans a GPU sweep on a host without one)."""
    from wattbench.power.knobs import KNOBS, parse_values

    return 1 + sum(len(parse_values(asked[knob.argument], name)) for name, knob in KNOBS.items()
                   if knob.argument in asked)
