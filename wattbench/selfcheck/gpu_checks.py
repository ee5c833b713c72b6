"""The steps of `wattbench selfcheck gpu` (wattbench.selfcheck.gpu runs each in its own child).

Each step is a function of a StepContext returning a step result (selfcheck.gpu.step_result):
its checks, each passed, failed or not applicable with the detail that decided it, and the
figures behind them. The harness's own code is what is checked (its clock, graph capture,
power monitor, 2:4 probe, registry and kernel tests) on the device; the one exception is the
NVML truth step, which asks pynvml directly: it checks the assumptions wattbench.power.nvml is
built on (units, value types, update periods, read costs), so it must not go through them.
Everything heavy (torch, Triton, CUDA) is imported inside the steps, in the child.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Callable

import pynvml
from pynvml import (NVML_CLOCK_MEM, NVML_CLOCK_SM, NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_ENABLE,
                    NVML_ERROR_NOT_SUPPORTED, NVML_FI_DEV_POWER_INSTANT, NVML_POWER_SCOPE_GPU, NVML_SUCCESS,
                    NVML_TEMPERATURE_GPU, NVMLError)

import wattbench
from wattbench.conditions import decode_clock_events, is_throttle
from wattbench.results import format_seconds
from wattbench.selfcheck.gpu import StepContext, check, first_line, step_result

#: Fixed inputs: every run checks the same thing.
SEED = 0


def environment(context: StepContext) -> dict:
    """The run file's environment block for the device (versions, driver, NVML's GPU facts)."""
    from wattbench.environment import describe

    facts = describe(context.device)
    unknown = sorted(key for key, value in facts["gpu"].items() if isinstance(value, dict) and value.get("unknown"))
    detail = "recorded" + (f"; GPU facts NVML did not give: {', '.join(unknown)}" if unknown else "")
    return step_result([check("environment", True, detail)], **facts)


# -- NVML truth -----------------------------------------------------------------------------

#: How long each reading is polled back to back to see its updates (a 100 ms counter: ~15).
POLL_S = 1.5
#: Reads per call for its cost, and the most time one call's cost measurement may take.
COST_READS, COST_SPAN_S = 200, 0.5
#: Field value members by NVML_VALUE_TYPE_* (0 double ... 6 unsigned short), and the types' names.
VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
VALUE_TYPES = {getattr(pynvml, name): name for name in dir(pynvml)
               if name.startswith("NVML_VALUE_TYPE_") and name != "NVML_VALUE_TYPE_COUNT"}
#: Power scopes this binding knows (the memory scope is newer than nvidia-ml-py 12.535).
SCOPES = {name: getattr(pynvml, name) for name in ("NVML_POWER_SCOPE_GPU", "NVML_POWER_SCOPE_MODULE",
                                                   "NVML_POWER_SCOPE_MEMORY") if hasattr(pynvml, name)}
#: Plausible board power limits, in W: a limit off this range by 1000x is a unit mistake.
LIMIT_RANGE_W = (10.0, 2000.0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _error(err: NVMLError) -> str:
    return f"NVML error {err.value}: {err}"


def instant_field(handle, scope: int) -> tuple[Any, str]:
    """The instant power field at `scope`: its raw value (mW) and NVML's name for its type."""
    value = pynvml.nvmlDeviceGetFieldValues(handle, [(NVML_FI_DEV_POWER_INSTANT, scope)])[0]
    if value.nvmlReturn != NVML_SUCCESS:
        raise NVMLError(value.nvmlReturn)
    return getattr(value.value, VALUE_MEMBERS[value.valueType]), VALUE_TYPES.get(value.valueType, str(value.valueType))


def clock_event_reasons(handle, supported: bool = False) -> int:
    """The clock-event bitmask (current or supported), by the newer name where the binding has it."""
    newer, older = (("nvmlDeviceGetSupportedClocksEventReasons", "nvmlDeviceGetSupportedClocksThrottleReasons")
                    if supported else
                    ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"))
    return getattr(pynvml, newer if hasattr(pynvml, newer) else older)(handle)


#: The calls the sampler polls: the counter and the instant field (power usage where neither exists).
COUNTER = "counter (nvmlDeviceGetTotalEnergyConsumption, mJ)"
INSTANT = "instant (nvmlDeviceGetFieldValues POWER_INSTANT, mW)"


def sampler_calls(handle) -> dict[str, Callable[[], Any]]:
    """The NVML calls a run makes while measuring (sampler and energy-window conditions), raw."""
    return {
        COUNTER: lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle),
        INSTANT: lambda: instant_field(handle, NVML_POWER_SCOPE_GPU)[0],
        "power usage (nvmlDeviceGetPowerUsage, mW)": lambda: pynvml.nvmlDeviceGetPowerUsage(handle),
        "temperature (nvmlDeviceGetTemperature)": lambda: pynvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU),
        "SM clock (nvmlDeviceGetClockInfo)": lambda: pynvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM),
        "memory clock (nvmlDeviceGetClockInfo)": lambda: pynvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_MEM),
        "clock events": lambda: clock_event_reasons(handle),
    }


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def updates(read: Callable[[], float], seconds: float) -> dict:
    """Poll `read` back to back for `seconds` and note when its value changes (stamped at the
    middle of the read, as the sampler stamps): how often the sensor updates, the mean
    reading, and the slowest read (a stall that blurs the stamps)."""
    start = time.perf_counter()
    last = read()
    total, reads, slowest, changes = float(last), 1, 0.0, []
    while (before := time.perf_counter()) - start < seconds:
        value = read()
        after = time.perf_counter()
        total, reads, slowest = total + value, reads + 1, max(slowest, after - before)
        if value != last:
            changes.append(((before + after) / 2 - start, value))
            last = value
    gaps = [b[0] - a[0] for a, b in zip(changes, changes[1:])]
    return {"reads": reads, "seconds": seconds, "changes": len(changes), "mean": total / reads,
            "slowest_read_s": slowest, "period_s": statistics.median(gaps) if gaps else None,
            "min_gap_s": min(gaps, default=None), "max_gap_s": max(gaps, default=None),
            "first_change": changes[0] if changes else None, "last_change": changes[-1] if changes else None}


def read_cost(read: Callable[[], Any], reads: int = COST_READS, span_s: float = COST_SPAN_S) -> dict:
    """Seconds per call of `read`: median, p99 and worst over up to `reads` calls in `span_s`."""
    costs = []
    end = time.perf_counter() + span_s
    while len(costs) < reads and time.perf_counter() < end:
        begin = time.perf_counter()
        read()
        costs.append(time.perf_counter() - begin)
    return {"calls": len(costs), "median_s": statistics.median(costs), "p99_s": percentile(costs, 0.99),
            "max_s": max(costs)}


def find_by_uuid(uuid: str):
    """NVML's handle for torch's UUID (given without its prefix): a whole GPU's, else a MIG slice's."""
    try:
        return pynvml.nvmlDeviceGetHandleByUUID("GPU-" + uuid), "GPU-" + uuid
    except NVMLError:
        return pynvml.nvmlDeviceGetHandleByUUID("MIG-" + uuid), "MIG-" + uuid


def identity_check(device) -> tuple[dict, Any]:
    """Torch's UUID found in NVML, and whether NVML's device at torch's index is the same GPU
    (it need not be: CUDA orders fastest first and through CUDA_VISIBLE_DEVICES)."""
    name = "torch and NVML identity"
    env = {key: os.environ.get(key) for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    if device.uuid is None:
        return check(name, False, "torch reported no UUID for the device", **env), None
    try:
        handle, wanted = find_by_uuid(device.uuid)
        found = _text(pynvml.nvmlDeviceGetUUID(handle))
    except NVMLError as err:
        return check(name, False, f"no NVML device has torch's UUID {device.uuid}: {_error(err)}", **env), None
    try:
        at_index = _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(device.index)))
    except NVMLError as err:
        at_index = f"unreadable: {_error(err)}"
    same = at_index == found
    detail = (f"torch {device.spec} UUID {device.uuid} is NVML's {found}; NVML's device at index {device.index} "
              + ("is the same GPU" if same else
                 f"is another ({at_index}): finding it by index would read the wrong GPU"))
    return check(name, found == wanted, detail, torch_uuid=device.uuid, nvml_uuid=found,
                 nvml_uuid_at_torch_index=at_index, index_agrees=same, **env), handle


def mig_check(handle) -> tuple[dict, bool]:
    """MIG mode of the physical GPU and whether the device is a slice (which NVML meters not at all)."""
    try:
        slice_ = bool(pynvml.nvmlDeviceIsMigDeviceHandle(handle))
        board = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle) if slice_ else handle
        current, pending = pynvml.nvmlDeviceGetMigMode(board)
    except NVMLError as err:
        if err.value == NVML_ERROR_NOT_SUPPORTED:
            return check("MIG mode", None, "this GPU has no MIG"), False
        return check("MIG mode", False, _error(err)), False
    state = {NVML_DEVICE_MIG_ENABLE: "enabled", NVML_DEVICE_MIG_DISABLE: "disabled"}
    detail = f"MIG {state.get(current, current)} (pending: {state.get(pending, pending)})" + \
        ("; the device is a MIG slice: NVML measures no energy or power per slice" if slice_ else "")
    return check("MIG mode", True, detail, current=state.get(current, current), pending=state.get(pending, pending),
                 mig_slice=slice_), slice_


def _unmeasurable(name: str, err: NVMLError, mig_slice: bool) -> dict:
    """A power reading that fails: expected on a MIG slice, a fault on a whole GPU."""
    if mig_slice:
        return check(name, None, f"a MIG slice: {_error(err)}")
    return check(name, False, _error(err))


def units_check(handle, mig_slice: bool, limits_w: dict) -> tuple[dict, dict]:
    """Types and units: the counter (int mJ), instant (mW) and power usage (int mW) must agree
    on the GPU's power within a factor of 2 (a unit mistake is a factor of 1000)."""
    name = "units and value types"
    try:
        counter, usage = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), pynvml.nvmlDeviceGetPowerUsage(handle)
        instant, instant_type = instant_field(handle, NVML_POWER_SCOPE_GPU)
        counter_updates = updates(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), POLL_S)
        instant_updates = updates(lambda: instant_field(handle, NVML_POWER_SCOPE_GPU)[0], POLL_S)
        usage_updates = updates(lambda: pynvml.nvmlDeviceGetPowerUsage(handle), POLL_S)
    except NVMLError as err:
        return _unmeasurable(name, err, mig_slice), {}
    periods = {"counter": counter_updates, "instant": instant_updates, "power usage": usage_updates}
    types = {"counter": type(counter).__name__, "instant": instant_type, "power usage": type(usage).__name__}
    first, last = counter_updates["first_change"], counter_updates["last_change"]
    if counter_updates["changes"] < 2:
        return check(name, False, f"the energy counter changed {counter_updates['changes']} times in {POLL_S:g} s of "
                                  f"polling: no power can be derived from it", types=types), periods
    counter_w = (last[1] - first[1]) / 1000.0 / (last[0] - first[0])
    instant_w, usage_w = instant_updates["mean"] / 1000.0, usage / 1000.0
    ceiling = 2 * (limits_w.get("enforced") or LIMIT_RANGE_W[1])
    ratio = counter_w / instant_w if instant_w > 0 else math.inf
    ok = isinstance(counter, int) and isinstance(usage, int) and 0.5 <= ratio <= 2 and 1.0 <= counter_w <= ceiling
    detail = (f"counter {types['counter']} -> {counter_w:.1f} W as mJ; "
              f"instant {instant_type} -> {instant_w:.1f} W as mW; "
              f"power usage {types['power usage']} -> {usage_w:.1f} W as mW; counter/instant {ratio:.2f}")
    return check(name, ok, detail, types=types, counter_w=counter_w, instant_w=instant_w, power_usage_w=usage_w,
                 counter_over_instant=ratio), periods


def period_check(periods: dict) -> dict:
    """How often each reading updates; the energy counter must update for windows to mean anything."""
    from wattbench.power.monitor import MIN_UPDATES, PowerConfig

    counter = periods["counter"]
    if counter["period_s"] is None:
        return check("update periods", False, f"the counter showed {counter['changes']} changes in {POLL_S:g} s",
                     **periods)
    window_s = PowerConfig().min_window_s
    per_window = window_s / counter["period_s"]
    parts = [f"{what} every {format_seconds(found['period_s'])} ({found['changes']} changes in {found['reads']} reads)"
             if found["period_s"] else f"{what}: {found['changes']} changes (repeated values hide updates at idle)"
             for what, found in periods.items()]
    detail = "; ".join(parts) + (f"; a default {window_s:g} s energy window spans {per_window:.0f} counter updates "
                                 f"(the monitor warns under {MIN_UPDATES})")
    return check("update periods", True, detail, updates_per_default_window=per_window, **periods)


def cost_check(handle) -> dict:
    """Per-call cost of each call a run makes; the sampler's two reads per tick must fit in its tick."""
    from wattbench.power.monitor import PowerConfig

    costs = {}
    for what, read in sampler_calls(handle).items():
        try:
            costs[what] = read_cost(read)
        except NVMLError as err:
            costs[what] = {"error": _error(err)}
    tick_s = 1.0 / PowerConfig().sample_hz
    polled = [costs[what] for what in (COUNTER, INSTANT) if "median_s" in costs[what]]
    if not polled:
        return check("read costs", None, "neither the counter nor instant power can be read", costs=costs)
    median_s, p99_s = sum(c["median_s"] for c in polled), sum(c["p99_s"] for c in polled)
    detail = (f"one sampler tick's reads: median {format_seconds(median_s)}, p99 {format_seconds(p99_s)} of a "
              f"{format_seconds(tick_s)} tick ({100 * median_s / tick_s:.1f}% at the median)")
    return check("read costs", p99_s < tick_s, detail, tick_s=tick_s, tick_median_s=median_s, tick_p99_s=p99_s,
                 costs=costs)


def limits(handle) -> tuple[dict, dict]:
    """Power limits in W (NVML gives mW) and whether they are plausible board limits."""
    reads = {"limit": lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle),
             "enforced": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle),
             "default": lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle),
             "constraints": lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)}
    found, errors, types = {}, {}, {}
    for what, read in reads.items():
        try:
            value = read()
        except NVMLError as err:
            errors[what] = _error(err)
            continue
        types[what] = type(value).__name__
        found[what] = [v / 1000.0 for v in value] if what == "constraints" else value / 1000.0
    if "enforced" not in found:
        return check("power limits", None, f"unreadable: {errors}", errors=errors), found
    low, high = found.get("constraints", (None, None))
    plausible = LIMIT_RANGE_W[0] <= found["enforced"] <= LIMIT_RANGE_W[1]
    within = low is None or low <= found["enforced"] <= high
    detail = f"enforced {found['enforced']:g} W ({types['enforced']} mW)" + \
        (f", settable {low:g}-{high:g} W" if low is not None else "")
    return check("power limits", plausible and within, detail, watts=found, types=types, errors=errors), found


def scopes_check(handle, mig_slice: bool) -> dict:
    """Which power scopes answer the instant field (GPU; module on Grace Hopper; memory)."""
    answers = {}
    for scope, scope_id in SCOPES.items():
        try:
            answers[scope] = instant_field(handle, scope_id)[0] / 1000.0
        except NVMLError as err:
            answers[scope] = _error(err)
    answered = [scope for scope, value in answers.items() if isinstance(value, float)]
    detail = ", ".join(f"{scope}: {value:.1f} W" if isinstance(value, float) else f"{scope}: {value}"
                       for scope, value in answers.items())
    return check("power scopes", True if answered else (None if mig_slice else False), detail, answers=answers)


def clock_events_check(handle) -> dict:
    """The clock-event reasons active now (at idle: gpu_idle, no throttle) and those supported."""
    try:
        current, supported = clock_event_reasons(handle), clock_event_reasons(handle, supported=True)
    except NVMLError as err:
        return check("clock events", False, _error(err))
    active = decode_clock_events(current)
    throttles = [name for name in active if is_throttle(name)]
    detail = f"active: {', '.join(active) or 'none'}"
    if throttles:
        detail += f"; THROTTLED at idle: {', '.join(throttles)}"
    return check("clock events", True, detail, current_mask=current, active=active, throttles=throttles,
                 supported_mask=supported, supported=decode_clock_events(supported))


def nvml_truth(context: StepContext) -> dict:
    """What NVML really returns on this GPU, against what wattbench.power.nvml assumes."""
    device = context.device
    try:
        pynvml.nvmlInit()
    except NVMLError as err:
        return step_result([check("nvmlInit", False, _error(err))])
    try:
        identity, handle = identity_check(device)
        if handle is None:
            return step_result([identity])
        mig, mig_slice = mig_check(handle)
        limit_check, limits_w = limits(handle)
        units, periods = units_check(handle, mig_slice, limits_w)
        checks = [identity, mig, limit_check, units]
        if periods:
            checks.append(period_check(periods))
        checks += [cost_check(handle), scopes_check(handle, mig_slice), clock_events_check(handle)]
        return step_result(checks, nvml_version=_text(pynvml.nvmlSystemGetNVMLVersion()),
                           driver=_text(pynvml.nvmlSystemGetDriverVersion()))
    finally:
        pynvml.nvmlShutdown()


# -- the event clock against triton.testing.do_bench ----------------------------------------

#: Registry cases the clock is compared on: (workload, impl, precision, size).
TINY_KERNEL = ("rms_norm.infer", "triton", "bf16", "M1-N4096")
GEMV = ("gemm.infer", "torch", "bf16", "M1-K4096-N4096")
#: The agreement rule: within 3% above 50 us, within 1 us + 5% at or below.
CLOCK_SPLIT_S, LONG_PCT, SHORT_ABS_S, SHORT_PCT = 50e-6, 3.0, 1e-6, 5.0


def registry_case(workload: str, impl: str, precision: str, size: str):
    from wattbench.workloads import Case, workloads

    found = next(w for w in workloads() if w.name == workload)
    return Case(found, impl, precision, next(s for s in found.sizes if s.name == size))


def clock_agreement(harness_s: float, reference_s: float) -> tuple[bool, float, str]:
    """Whether the harness's median agrees with do_bench's: (agrees, allowed difference, rule)."""
    if reference_s > CLOCK_SPLIT_S:
        allowed, rule = LONG_PCT / 100 * reference_s, f"{LONG_PCT:g}% above {format_seconds(CLOCK_SPLIT_S)}"
    else:
        allowed, rule = SHORT_ABS_S + SHORT_PCT / 100 * reference_s, \
            f"{format_seconds(SHORT_ABS_S)} + {SHORT_PCT:g}% at or below {format_seconds(CLOCK_SPLIT_S)}"
    return abs(harness_s - reference_s) <= allowed, allowed, rule


def do_bench_median_s(call: Callable[[], Any]) -> float:
    from triton.testing import do_bench

    return do_bench(call, warmup=25, rep=100, return_mode="median") / 1e3


def compare_clocks(name: str, call: Callable[[], Any], device, reference: Callable[[Callable], float]) -> dict:
    """The harness's median for `call` (timed as `selfcheck kernels` times a case) against `reference`."""
    from wattbench.timing import TimingPlan, median_time

    try:
        harness_s = median_time(call, device, TimingPlan())
        reference_s = reference(call)
    except Exception as exc:  # noqa: BLE001  one case failing must not hide the others
        return check(name, False, f"raised {first_line(exc)}")
    agrees, allowed, rule = clock_agreement(harness_s, reference_s)
    difference = harness_s - reference_s
    detail = (f"event clock {format_seconds(harness_s)}, do_bench {format_seconds(reference_s)}: "
              f"{'+' if difference >= 0 else '-'}{format_seconds(abs(difference))}, allowed {format_seconds(allowed)} "
              f"({rule})")
    return check(name, agrees, detail, harness_s=harness_s, do_bench_s=reference_s, difference_s=difference,
                 allowed_s=allowed)


def event_clock(context: StepContext, reference: Callable[[Callable], float] = do_bench_median_s) -> dict:
    """No-op, a tiny Triton kernel, a 1x4096x4096 GEMV and its graph replay, on both clocks."""
    from wattbench.timing import TimingPlan, timed_target

    device = context.device
    checks = []
    with device.current():
        tiny = registry_case(*TINY_KERNEL)
        gemv = registry_case(*GEMV)
        gemv_step = gemv.build(device, SEED)
        graph = timed_target(gemv_step, device, TimingPlan(cuda_graph=True), gemv.workload.not_capturable)
        calls = [("no-op", lambda: None), (f"tiny kernel {tiny.id}", tiny.build(device, SEED)),
                 (f"GEMV {gemv.id}", gemv_step)]
        if graph.method == "cuda_graph":
            calls.append((f"GEMV {gemv.id} graph replay", graph.call))
        else:
            checks.append(check(f"GEMV {gemv.id} graph replay", False, f"not captured: {graph.graph_note}"))
        for name, call in calls:
            checks.append(compare_clocks(name, call, device, reference))
            context.progress(step_result(checks))
    return step_result(checks)


# -- graph capture and its refusals ---------------------------------------------------------

def capture_refused(name: str, step: Callable[[], Any], index: int, graph_error_only: bool) -> dict:
    """Whether cuda.capture_graph refuses `step` on cuda:`index`: with GraphCaptureError when
    `graph_error_only` (the capture holds nothing), else with whatever CUDA raises."""
    from wattbench import cuda

    try:
        cuda.capture_graph(step, index)
    except cuda.GraphCaptureError as exc:
        return check(name, True, f"refused: {exc}", raised=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001  what CUDA raises here is the finding
        if graph_error_only:
            return check(name, False, f"raised {first_line(exc)} instead of GraphCaptureError")
        return check(name, True, f"refused: {first_line(exc)}", raised=type(exc).__name__)
    return check(name, False, "accepted: the graph's replay would not do the step's work")


def replay_matches_eager(index: int) -> dict:
    """A GEMV captured on cuda:`index`, replayed into a poisoned output, gives the eager result."""
    import torch

    from wattbench import cuda
    from wattbench.selfcheck.kernels import TOLERANCE, relative_error

    name = "replay gives the eager result"
    device = torch.device("cuda", index)
    generator = torch.Generator(device=device).manual_seed(SEED)
    x, w = (torch.randn(*shape, device=device, dtype=torch.bfloat16, generator=generator)
            for shape in ((1, 4096), (4096, 4096)))
    out = torch.empty(1, 4096, device=device, dtype=torch.bfloat16)

    def step():
        torch.mm(x, w, out=out)

    try:
        step()
        torch.cuda.synchronize(index)
        expected = out.clone()
        replay = cuda.capture_graph(step, index)
        out.fill_(float("nan"))
        replay()
        torch.cuda.synchronize(index)
    except Exception as exc:  # noqa: BLE001
        return check(name, False, f"raised {first_line(exc)}")
    error = relative_error(out, expected)
    tolerance = TOLERANCE[torch.bfloat16]
    return check(name, error <= tolerance, f"rel err {error:.1e} against eager (tolerance {tolerance:.0e})",
                 rel_error=error if math.isfinite(error) else None)


def graph_capture(context: StepContext) -> dict:
    """Capture on the device works; an empty capture, work on another device and a host
    synchronisation during capture are refused. The synchronisation goes last: a capture it
    broke can leave the context unusable."""
    import torch

    device = context.device
    index = device.index
    with device.current():
        checks = [replay_matches_eager(index), capture_refused("empty capture", lambda: None, index, True)]
        count = torch.cuda.device_count()
        if count > 1:
            other = 1 if index == 0 else 0
            elsewhere = torch.zeros(1, device=torch.device("cuda", other))

            def on_other_device():
                with torch.cuda.device(other):
                    elsewhere.add_(1)

            checks.append(capture_refused(f"work on cuda:{other} only", on_other_device, index, True))
        else:
            checks.append(check("work on another device only", None, "one CUDA device: there is no other"))
        buffer = torch.zeros(1, device=device.torch)

        def synchronising():
            buffer.add_(1)
            torch.cuda.synchronize()

        checks.append(capture_refused("host synchronisation during capture", synchronising, index, False))
    return step_result(checks)


# -- 2:4 sparsity ---------------------------------------------------------------------------

SPARSE_SHAPE = (64, 4096, 4096)  # M, K, N


def sparse_24(context: StepContext) -> dict:
    """The probe the suites use (workloads.gemm.sparse_24_unsupported); where it finds support,
    a 2:4 GEMM against the dense GEMM of the same pruned weight."""
    import torch

    from wattbench.selfcheck.kernels import TOLERANCE, relative_error
    from wattbench.workloads.gemm import prune_2_4, sparse_24_unsupported

    device = context.device
    with device.current():
        reason = sparse_24_unsupported(device.torch)
        if reason is not None:
            return step_result([check("2:4 probe", None, f"this torch build cannot run a 2:4 sparse GEMM here: "
                                                         f"{reason}", supported=False)], torch=torch.__version__)
        M, K, N = SPARSE_SHAPE
        generator = torch.Generator(device=device.torch).manual_seed(SEED)
        weight, x = (torch.randn(*shape, device=device.torch, dtype=torch.bfloat16, generator=generator)
                     for shape in ((K, N), (M, K)))
        dense = prune_2_4(weight).t().contiguous()  # (N, K), as linear takes it
        try:
            got = torch.nn.functional.linear(x, torch.sparse.to_sparse_semi_structured(dense))
            error = relative_error(got, torch.nn.functional.linear(x, dense))
        except Exception as exc:  # noqa: BLE001
            return step_result([check("2:4 probe", True, "supported", supported=True),
                                check("2:4 GEMM vs dense", False, f"raised {first_line(exc)}")])
    tolerance = TOLERANCE[torch.bfloat16]
    return step_result([check("2:4 probe", True, "supported", supported=True),
                        check("2:4 GEMM vs dense", error <= tolerance,
                              f"M{M}-K{K}-N{N} bf16: rel err {error:.1e} (tolerance {tolerance:.0e})",
                              rel_error=error if math.isfinite(error) else None)], torch=torch.__version__)


# -- a short energy run ---------------------------------------------------------------------

#: (M, K, N): two compute-bound GEMMs and a launch-bound GEMV.
ENERGY_GEMMS = ((8192, 8192, 8192), (4096, 4096, 4096), (1, 4096, 4096))


def energy_config():
    """Short windows, to fit the step's time limit: at most three of 1 to 3 s (adaptive, to the run's
    2% target) after a 2 s idle baseline (a run: up to 3 windows of 1 to 20 s after 10 s)."""
    from wattbench.power import PowerConfig

    return PowerConfig(min_window_s=1.0, max_window_s=3.0, repeats=3, idle_s=2.0)


def _gemm_step(shape: tuple[int, int, int], device, dtype) -> Callable[[], Any]:
    import torch

    M, K, N = shape
    generator = torch.Generator(device=device.torch).manual_seed(SEED)
    a = torch.randn(M, K, device=device.torch, dtype=dtype, generator=generator)
    b = torch.randn(K, N, device=device.torch, dtype=dtype, generator=generator)
    out = torch.empty(M, N, device=device.torch, dtype=dtype)
    return lambda: torch.mm(a, b, out=out)


def energy_check(name: str, record: dict) -> dict:
    """A valid energy record whose counter and instant energies agree within their combined
    uncertainty; failed where both channels of one sensor were sampled but not cross-checked."""
    if record["method"] == "none":
        return check(name, None, record["reason"])
    if not record["valid"]:
        return check(name, False, record["reason"])
    joules = f"{record['joules_per_call']:.4g} J/call at {record['avg_power_w']:.0f} W"
    disagreement = record.get("disagreement_pct")
    if disagreement is None:
        sensor = record["channel"].rsplit(":", 1)[0] + ":"
        twins = [n for n, c in record["channels"].items() if c["method"] == "instant" and n.startswith(sensor)]
        if twins:
            return check(name, False, f"{joules}; {', '.join(twins)} was sampled beside {record['channel']} but "
                                      "the record has no counter/instant disagreement")
        return check(name, True, f"{joules}; no instant channel of the same sensor to cross-check")
    twin = next((c for c in record["channels"].values() if c["method"] == record["cross_check_method"]
                 and c["joules_per_call"] == record["cross_check_joules_per_call"]), {})
    uncertainties = (record["uncertainty_pct"], twin.get("uncertainty_pct"))
    if None in uncertainties:
        return check(name, False, f"{joules}; disagreement {disagreement:+.2f}% with no uncertainty to judge it by")
    bound = sum(uncertainties)
    return check(name, abs(disagreement) <= bound,
                 f"{joules} (counter ±{uncertainties[0]:.2f}%); instant disagrees by {disagreement:+.2f}%, "
                 f"allowed ±{bound:.2f}% (both uncertainties)", disagreement_pct=disagreement, allowed_pct=bound)


def energy_run(context: StepContext, gemms=ENERGY_GEMMS, config=None, probes=None) -> dict:
    """A few GEMMs through PowerMonitor, as a run measures a benchmark (bf16 on a GPU)."""
    import torch

    from wattbench.power import PowerMonitor

    device = context.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    checks, records = [], {}
    with device.current(), PowerMonitor(device, config or energy_config(), probes=probes) as monitor:
        if monitor.sampler is None:
            return step_result([check("energy", None, monitor.reason)], run_info=monitor.run_info())
        for shape in gemms:
            name = "GEMM {}x{}x{} {}".format(*shape, str(dtype).removeprefix("torch."))
            step = _gemm_step(shape, device, dtype)
            step()
            device.synchronize()
            records[name] = monitor.measure(step, device.synchronize, units_per_call=2.0 * math.prod(shape))
            checks.append(energy_check(name, records[name]))
            context.progress(step_result(checks, records=records))
        info = monitor.run_info()
    return step_result(checks, records=records, run_info=info)


# -- sampler overhead -----------------------------------------------------------------------

def sampler_overhead(context: StepContext, run: Callable[..., int] | None = None) -> dict:
    """`wattbench selfcheck sampler-overhead --device <the GPU>`: its own targets and output."""
    if run is None:
        from wattbench.selfcheck.power import sampler_overhead as run
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = run(device=context.device)
    lines = output.getvalue().splitlines()
    result = next((line for line in reversed(lines) if line.startswith("result:")), "printed no result line")
    return step_result([check("sampler overhead", code == 0, result, exit_code=code)], output=lines)


# -- the registry's GPU shapes against torch ------------------------------------------------

def registry_cases(device_type: str, preset: str = "quick") -> list:
    """Every Triton case of every kernel-level op at the registry's shapes for `device_type`."""
    from wattbench.workloads import Case, workloads

    return [Case(workload, "triton", precision, size)
            for workload in workloads() if workload.suite == "kernels" and "triton" in workload.impls
            for size in workload.sizes if preset in size.presets and device_type in size.devices
            for precision in workload.precisions.get(device_type, ())]


def registry_check(case, device) -> dict:
    """`case` against the registry's PyTorch path on identical inputs (selfcheck kernels' tolerances)."""
    import torch

    from wattbench.selfcheck.kernels import TOLERANCE, relative_error, torch_case
    from wattbench.measure import skip_reason

    reason = skip_reason(case, device)
    if reason:
        return check(case.id, None, reason)
    began = time.perf_counter()
    try:
        error = relative_error(case.build(device, SEED)(), torch_case(case).build(device, SEED)())
    except torch.cuda.OutOfMemoryError as exc:
        return check(case.id, None, f"does not fit in the device's memory: {first_line(exc)}")
    except Exception as exc:  # noqa: BLE001  one broken case must not hide the rest
        return check(case.id, False, f"raised {first_line(exc)}")
    tolerance = TOLERANCE[case.dtype]
    return check(case.id, error <= tolerance, f"rel err {error:.1e} (tolerance {tolerance:.0e})",
                 rel_error=error if math.isfinite(error) else None, seconds=round(time.perf_counter() - began, 2))


def registry_shapes(context: StepContext, cases: list | None = None) -> dict:
    """Each case's result as it comes (a timeout keeps those done), memory freed between cases."""
    from wattbench.measure import release_memory

    device = context.device
    cases = registry_cases(device.type) if cases is None else cases
    checks = []
    with device.current():
        for case in cases:
            checks.append(registry_check(case, device))
            release_memory(device)
            context.progress(step_result(checks))
    return step_result(checks)


# -- the kernel tests, compiled -------------------------------------------------------------

KERNEL_TESTS = "test_kernel_*.py"
#: Left to the step after pytest's own timeout, to report what it printed.
REPORT_MARGIN_S = 10.0
#: Failures and skip reasons kept in the evidence.
KEPT = 30
#: pytest-xdist workers for the kernel tests (each compiles its own kernels on the one GPU).
XDIST_WORKERS = 4


def junit_counts(text: str) -> dict:
    """Outcome counts of a pytest JUnit XML report, overall and for the bf16 tests, with the
    failures and the skip reasons."""
    counts = {"all": dict.fromkeys(("passed", "failed", "errors", "skipped"), 0)}
    counts["bf16"] = dict(counts["all"])
    failures, skips = [], {}
    for case in ElementTree.fromstring(text).iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        found = {child.tag: child for child in case}
        outcome = next((key for tag, key in (("error", "errors"), ("failure", "failed"), ("skipped", "skipped"))
                        if tag in found), "passed")
        groups = ["all"] + (["bf16"] if "bfloat16" in test or "bf16" in test else [])
        for group in groups:
            counts[group][outcome] += 1
        if outcome in ("failed", "errors"):
            message = found.get("failure", found.get("error")).get("message", "")
            failures.append({"test": test, "message": next(iter(message.splitlines()), "")})
        elif outcome == "skipped":
            reason = found["skipped"].get("message", "")
            skips[reason] = skips.get(reason, 0) + 1
    return {**counts, "failures": failures[:KEPT], "skip_reasons": dict(list(skips.items())[:KEPT])}


def kernel_tests(context: StepContext, root: Path | None = None, extra_args: tuple[str, ...] = ()) -> dict:
    """tests/test_kernel_*.py in a pytest child with Triton compiling (the interpreter switch
    removed), on the checked GPU; counts overall and for bf16, which the CPU runs skip."""
    from wattbench.device import INTERPRET_ENV

    root = Path(wattbench.__file__).resolve().parent.parent if root is None else root
    paths = sorted(str(path) for path in (root / "tests").glob(KERNEL_TESTS))
    if not paths:
        return step_result([check("kernel tests", None, f"no {KERNEL_TESTS} under {root / 'tests'}: run from a "
                                                        "wattbench checkout")])
    device = context.device
    env = {key: value for key, value in os.environ.items() if key != INTERPRET_ENV}
    if device.type == "cuda" and device.index != 0:  # the tests use torch's default device: make it this GPU
        env["CUDA_VISIBLE_DEVICES"] = "GPU-" + device.uuid
    # Compiling the kernels is most of the time: spread it over CPU cores where pytest-xdist is installed.
    workers = ("-n", str(XDIST_WORKERS)) if importlib.util.find_spec("xdist") else ()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        command = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                   *workers, *extra_args]
        timeout = max(context.seconds_left() - REPORT_MARGIN_S, 1.0)
        try:
            done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            return step_result([check("kernel tests", False, f"pytest did not finish in {timeout:.0f} s")],
                               output_tail=output[-3000:])
        counts = junit_counts(report.read_text()) if report.exists() else None
    tail = done.stdout[-3000:]
    if counts is None:
        return step_result([check("kernel tests", False, f"pytest exited {done.returncode} without a report")],
                           output_tail=tail + done.stderr[-2000:])
    every, bf16 = counts["all"], counts["bf16"]
    ran = sum(every.values())
    checks = [
        check("kernel tests", done.returncode == 0 and every["passed"] > 0,
              f"{every['passed']} passed, {every['failed']} failed, {every['errors']} errors, {every['skipped']} "
              f"skipped of {ran} (pytest exit {done.returncode})", exit_code=done.returncode, **every),
        check("bf16 kernel tests compiled", bf16["passed"] > 0 and bf16["failed"] + bf16["errors"] == 0,
              f"{bf16['passed']} passed, {bf16['failed']} failed, {bf16['errors']} errors, {bf16['skipped']} skipped",
              **bf16),
    ]
    return step_result(checks, failures=counts["failures"], skip_reasons=counts["skip_reasons"],
                       xdist_workers=XDIST_WORKERS if workers else None, output_tail=tail)
