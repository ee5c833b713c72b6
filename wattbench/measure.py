"""Measuring one registry case: the procedure behind the `wattbench_benchmark` fixture.

A plain function of the case, the run's settings, the power monitor and pytest-benchmark's
fixture, so it can be tested without a pytest session. In order, all with the case's device
current (Triton launches, graph capture, streams and events follow the current device): build
the inputs, a first call checked for NaN/inf, the timed callable (the step, or its captured
CUDA graph's replay), warm-up, a planning call, pytest-benchmark's `pedantic` rounds on the
device clock, then the energy windows over the same callable. An out-of-memory error at any
point skips the case with the reason; memory is released after every case.
"""

from __future__ import annotations

import gc
import statistics
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from wattbench import timing
from wattbench.device import INTERPRET_ENV, Device
from wattbench.metrics import model_flops_utilization
from wattbench.power import PowerMonitor
from wattbench.record import Record
from wattbench.results import format_seconds
from wattbench.workloads import Case, Context

#: Under Triton's interpreter timing and energy mean nothing (the records say so): one round is enough.
INTERPRETED_ROUNDS = 1
INTERPRETED_ENERGY_REASON = "Triton ran through its interpreter, so energy would mean nothing"


class WorkloadFailure(Exception):
    """A workload ran but produced something unusable (NaN or inf in its outputs)."""


@dataclass(frozen=True)
class Settings:
    """What measuring a case needs from its run."""

    device: Device
    plan: timing.TimingPlan
    seed: int
    #: The user's spec table for MFU (--wattbench-specs); None: the shipped table.
    specs: Any = None
    preset: str = "quick"
    #: Decode-style steps run eagerly on a GPU too, rather than as CUDA graph replays (--wattbench-eager-decode).
    eager_decode: bool = False
    #: A power sweep's setting, named in every record (None outside a sweep: the records name none).
    setting: str | None = None

    @property
    def context(self) -> Context:
        return Context(self.device, self.preset, self.eager_decode)


def skip_reason(case: Case, device: Device) -> str | None:
    if case.impl == "triton":
        from wattbench.kernels import INTERPRETED

        if device.type == "cpu" and not INTERPRETED:
            return (f"Triton runs on a CPU only through its interpreter, and kernels were already "
                    f"compiled for CUDA in this process: set {INTERPRET_ENV}=1 before starting")
    return case.workload.skip(case.impl, case.precision, device)


def check_finite(outputs: Any, case: Case) -> None:
    tensors = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    for position, tensor in enumerate(tensors):
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WorkloadFailure(f"{case.id}: output {position} holds NaN or inf")


def release_memory(device: Device) -> None:
    """Free what the last case allocated: the references are gone by now, so collect the
    cycles among them and hand the allocator's cached blocks back to the device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(case: Case, settings: Settings, clock: Callable[[], float], power: PowerMonitor, benchmark) -> dict:
    """Measure `case` into `benchmark` (pytest-benchmark's fixture) and return wattbench's fields
    of its record. Skips (pytest.skip) a case that does not apply or does not fit in memory."""
    device = settings.device
    reason = skip_reason(case, device)
    if reason:
        pytest.skip(reason)
    try:
        with device.current():
            info = _measure_on_device(case, settings, clock, power, benchmark)
    except BaseException as exc:
        # No half-measured record may reach pytest-benchmark's JSON (an empty one breaks it).
        benchmark.has_error = True
        # The traceback's frames hold the case's tensors: clear them, or nothing can be freed.
        traceback.clear_frames(exc.__traceback__)
        release_memory(device)
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            pytest.skip(f"does not fit in the memory of {device.name}: {str(exc).splitlines()[0]}")
        raise
    release_memory(device)
    return info


def _measure_on_device(case: Case, settings: Settings, clock, power: PowerMonitor, benchmark) -> dict:
    from wattbench.kernels import INTERPRETED

    device, plan = settings.device, settings.plan
    interpreted = case.impl == "triton" and INTERPRETED
    step = case.build(device, settings.seed, settings.context)
    outputs = step()
    device.synchronize()
    check_finite(outputs, case)
    guarded = step.guard(outputs) if step.guard else {}  # the accuracy guard, on the first call's outputs
    del outputs
    if interpreted:
        target, warmup = timing.Target(step, "perf_counter"), 0
    else:
        target = timing.timed_target(step, device, plan, case.workload.not_capturable)
        warmup = plan.warmup_rounds
    for _ in range(warmup):
        target.call()
    planning_s = None if interpreted else timing.time_once(target.call, device)
    rounds = INTERPRETED_ROUNDS if interpreted else plan.rounds_for(planning_s)
    step.reset()  # what the step records (e.g. request timelines) covers the timed rounds only
    clock.reset()
    benchmark.pedantic(target.call, setup=timing.round_setup(device, plan), rounds=rounds, iterations=1)
    samples = list(benchmark.stats.stats.data) if benchmark.stats else []
    info = record_fields(case, settings, target, samples, rounds, warmup, interpreted)
    info.update(step.metrics())
    info.update(guarded)
    if case.workload.reports_mfu:
        info.update(model_flops_utilization(info["tflops"], device.name, case.precision, interpreted,
                                            settings.specs))
    if interpreted:
        info["energy"] = power.not_measured(INTERPRETED_ENERGY_REASON)
    else:
        info["energy"] = power.measure(target.call, device.synchronize, info["units_per_call"])
    info.update(step.energy_metrics(info["energy"]))  # figures derived from energy, e.g. MLPerf's mJ per query
    windows = None if interpreted else power.window_energy(info["energy"])
    if windows is not None:
        info.update(step.energy_windows(*windows))  # energy shared within the windows, e.g. per request
    if planning_s is not None:
        info["timing"]["planning_call_s"] = planning_s
        found = disagreements(samples, planning_s, info["energy"].get("window_seconds_per_call"), device.type)
        if found:
            info["timing"]["disagreements"] = found
    benchmark.extra_info.update(info)
    return info


#: How far outside the timed rounds' range another estimate of the same call may land before the case's
#: measurements are said to disagree: twice as slow as the slowest round, or twice as fast as the fastest.
DISAGREEMENT_FACTOR = 2.0
#: On a GPU, host-clock estimates are compared with device-timed rounds only for calls this long or longer.
HOST_COMPARABLE_S = 1e-3


def disagreements(samples: list[float], planning_s: float, window_s_per_call: float | None,
                  device_type: str) -> list[str]:
    """Where one case's repeated measurements of the same call contradict each other (empty: they agree).

    A case measures one call three ways: the planning call (one call, host clock, after the warm-up),
    the timed rounds (one call each, device clock; on a GPU, caches flushed before each) and the energy
    windows (calls back to back, host clock, warm caches). Their conditions differ, so they need not be
    equal; but on a machine whose state holds still, neither host-clock estimate can land far outside the
    range the rounds themselves spanned. The interval here is that range widened by DISAGREEMENT_FACTOR,
    not the confidence interval of the rounds' median: that interval only says where the median of these
    rounds lies and shrinks with every round however unsteady the host (a ±0.02% interval on a median
    that is 16 ms in one run and 44 us in the next); a single call, or the mean of back-to-back calls,
    is to be compared with what single calls did. Landing outside means something changed between the
    measurements: other load, threads contending for the cores, clocks throttling.

    On a CPU all three are the same host-clock measurement of the same work. On a GPU a host-clock
    estimate includes launch and synchronisation time and runs with warm caches, which for short kernels
    legitimately differs from the flushed device time by more than the factor, so there the check is made
    only for calls of HOST_COMPARABLE_S or more.
    """
    if not samples or (device_type == "cuda" and min(samples) < HOST_COMPARABLE_S):
        return []
    low, high = min(samples), max(samples)
    found = []
    for name, value in (("planning call", planning_s), ("energy windows (per call)", window_s_per_call)):
        if value is not None and not low / DISAGREEMENT_FACTOR <= value <= high * DISAGREEMENT_FACTOR:
            found.append(f"{name} {format_seconds(value)} vs timed rounds {format_seconds(low)} to "
                         f"{format_seconds(high)}")
    return found


def record_fields(case: Case, settings: Settings, target: timing.Target, samples: list[float], rounds: int,
                  warmup: int, interpreted: bool) -> dict:
    """wattbench's fields of one benchmark record (everything except energy), as record.Record writes them."""
    device, plan = settings.device, settings.plan
    accounting = case.accounting()
    median_s = statistics.median(samples) if samples else None
    return Record(
        workload=case.workload.name,
        op=case.workload.op,
        style=case.workload.style,
        impl=case.impl,
        precision=case.precision,
        size=case.size.name,
        setting=settings.setting,
        shape=dict(case.size.params),
        device=device.spec,
        device_name=device.name,
        interpreted=interpreted,
        seed=case.seed(settings.seed),
        **accounting,
        timing={
            "method": target.method,
            "rounds": rounds,
            "warmup_rounds": warmup,
            "flush_l2": plan.flush_l2 and device.type == "cuda",
            "samples_s": samples,
            **({"graph_note": target.graph_note} if target.graph_note else {}),
        },
        median_s=median_s,
        units_per_s=accounting["units_per_call"] / median_s if median_s else None,
        tflops=accounting["flops"] / median_s / 1e12 if median_s else None,
        gbps=accounting["bytes"] / median_s / 1e9 if median_s else None,
        note="Triton interpreter on CPU: timing is meaningless and must not be compared" if interpreted else None,
        fp32_dots=fp32_dots(case, device),
    ).to_json()


def fp32_dots(case: Case, device: Device) -> str | None:
    """What an fp32 case's dots ran on a GPU ("ieee" or "tf32"); imported late, as the kernels read the
    interpreter switch when first imported."""
    if device.type != "cuda" or case.dtype != torch.float32:
        return None
    from wattbench.kernels.matmul import dot_precision

    return dot_precision(torch.float32)
