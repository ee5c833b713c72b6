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

The full preset on a GPU runs every case its sizes allow but the combinations that would take it past about
90 minutes (by the same estimate) without answering a further question:

- the model-level curves (llm.*, scenario.*) run the full preset's model (Llama-3.1-8B); the 125M model only
  at the quick preset's point;
- the `compiled` impl (about 40 s of compilation per case) runs at the dense precision only: each op at its
  largest shape (where fusion has the most to win), the model's curves at `FULL_COMPILED_BATCHES`;
- a quantised precision runs the model's curves at `FULL_QUANTISED_BATCHES`, enough for the crossover map;
- the scenarios and `llm.generate` run at the dense precision: the precisions are compared on the curves.
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


#: The model-level batch points of the full GPU preset's `compiled` impl and quantised precisions.
FULL_COMPILED_BATCHES = (1, 64)
FULL_QUANTISED_BATCHES = (1, 32, 256)


def select(cases: list[Case], preset: str, device_type: str) -> list[Case]:
    """The preset's cases among every case its sizes allow on the device type, in their order."""
    if device_type != "cuda":
        return cases
    quick = quick_gpu_sizes(cases)

    def in_quick(case: Case) -> bool:
        return (case.workload.name, case.impl, case.precision, case.size.name) in quick

    if preset == "full":  # the quick preset's cases and the rest
        return [case for case in cases if in_quick(case) or in_full_gpu_preset(case, cases)]
    return [case for case in cases if in_quick(case)]


def in_full_gpu_preset(case: Case, cases: list[Case]) -> bool:
    """Whether the full GPU preset runs `case` (see the module docstring)."""
    from wattbench.precision import Precision
    from wattbench.workloads.llm import FULL_MODEL

    name, params = case.workload.name, case.size.params
    model_level = name.startswith(("llm.", "scenario."))
    if model_level and params.get("model") != FULL_MODEL and any(
            other.workload is case.workload and other.size.params.get("model") == FULL_MODEL for other in cases):
        return False
    quantised = Precision.parse(case.precision).quantized
    dense = case.precision == QUICK_PRECISION
    if case.impl == "compiled":
        if not dense:
            return False
        if model_level:
            return params.get("B") in FULL_COMPILED_BATCHES
        largest = max((other for other in cases if other.workload is case.workload),
                      key=lambda other: other.workload.flops(other.size.params))
        return case.size.name == largest.size.name
    if model_level and quantised:
        return name.startswith("llm.") and name != "llm.generate" and params.get("B") in FULL_QUANTISED_BATCHES
    return True


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
