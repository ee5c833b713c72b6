"""Which cases each preset runs on each device type: the one place that decides it.

A workload's sizes say where they may run (`Size.presets`, `Size.devices`, `device_sizes`); on a CPU the quick
preset is those sizes (kept small by the workloads themselves). On a GPU the quick preset is a representative
subset sized to complete, energy included, in about 10 minutes on one H100-class GPU by the dry-run estimate
(wattbench.estimate), where all the GPU sizes would take hours:

- each op of the kernel library once per style, at bf16 (else its first GPU precision), torch and Triton: an
  inference op at a decode-like shape (its smallest) and a prefill-like one (its largest), a training op at its
  training shape (its largest);
- every model-level workload at one batch size (its first GPU size), the same precision;
- one scenario (`QUICK_SCENARIO`, torch only: the serving path, the kernels being compared above).

The full preset runs every case its sizes allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wattbench.workloads import Case

#: The implementations the GPU quick preset compares (the `compiled` impl's compile time belongs to full).
QUICK_IMPLS = ("torch", "triton")
#: The precision the GPU quick preset runs every workload at, where the workload has it.
QUICK_PRECISION = "bf16"
#: The one scenario of the GPU quick preset.
QUICK_SCENARIO = "scenario.single_stream"


def select(cases: list[Case], preset: str, device_type: str) -> list[Case]:
    """The preset's cases among every case its sizes allow on the device type, in their order."""
    if preset != "quick" or device_type != "cuda":
        return cases
    chosen = quick_gpu_sizes(cases)
    return [case for case in cases if (case.workload.name, case.impl, case.precision, case.size.name) in chosen]


def quick_gpu_sizes(cases: list[Case]) -> set[tuple[str, str, str, str]]:
    """(workload, impl, precision, size) of the GPU quick preset (see the module docstring)."""
    by_workload: dict[str, list[Case]] = {}
    for case in cases:
        by_workload.setdefault(case.workload.name, []).append(case)
    chosen = set()
    for name, found in by_workload.items():
        workload = found[0].workload
        if name.startswith("scenario.") and name != QUICK_SCENARIO:
            continue
        precisions = workload.precisions["cuda"]
        precision = QUICK_PRECISION if QUICK_PRECISION in precisions else precisions[0]
        sizes = list({case.size.name: case.size for case in found if case.precision == precision}.values())
        if not sizes:
            continue
        if workload.suite == "kernels":
            by_flops = sorted(sizes, key=lambda size: workload.flops(size.params))
            picked = [by_flops[0], by_flops[-1]] if workload.style == "infer" else [by_flops[-1]]
        else:
            picked = sizes[:1]
        impls = ("torch",) if name == QUICK_SCENARIO else QUICK_IMPLS
        chosen |= {(name, impl, precision, size.name) for impl in impls for size in picked}
    return chosen
