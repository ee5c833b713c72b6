"""The accuracy budget: how far a quantised case may land from its dense reference and still count as a win.

Every quantised case records its distance from the bf16 (fp32 on a CPU) reference on the same inputs: a GEMM its
output's relative error (`accuracy`), a model the top-1 agreement of its next-token predictions
(`top1_agreement`) and the KL divergence of its output distributions (`kl_divergence`, nats per token) over the
decoded tokens. A case outside the budget is flagged (`within_budget: false` and `accuracy_note` in its record,
"outside budget" in the report's tables) and left out of every "best" choice (the report's verdict and crossover
map, `wattbench select`).

The defaults, and why:

- `gemm_relative_error = 0.15`: on Gaussian inputs at K = 4096 (docs/kernel-performance.md) int8 weight-only is
  under 1%, e4m3 3.7% and int4 in groups of 128 9.9% (asymmetric) to 11.7% (symmetric), groups of 256 up to
  12.6%. Random inputs have no outliers, so these are floors, not typical model errors; 15% admits every
  working format with room and refuses a broken kernel, a bad group size or a non-finite output (inf).
- `top1_agreement = 0.90` and `kl_divergence = 0.10`: llama.cpp's `perplexity --kl-divergence` figures for
  Llama-class models put 8-bit formats at >= 98% same top token and KL about 0.001, 4-bit group formats at
  88-95% and 0.03-0.1; a bound of 90% / 0.1 keeps 8-bit formats and the better 4-bit ones, and flags
  quantisation that changes the answer as often as one token in ten.

Configure them in the nearest pyproject.toml (the run and the report read the same table):

    [tool.wattbench.accuracy]
    gemm_relative_error = 0.05
    top1_agreement = 0.95
    kl_divergence = 0.05
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from wattbench.errors import UsageError
from wattbench.pyproject import tool_table

#: The record fields the accuracy guard writes (declared in wattbench.record).
FIGURES = ("accuracy", "top1_agreement", "kl_divergence")


@dataclass(frozen=True)
class Budget:
    """The worst a quantised case may do: GEMM relative error at most, top-1 agreement at least, KL at most."""

    gemm_relative_error: float = 0.15
    top1_agreement: float = 0.90
    kl_divergence: float = 0.10

    def outside(self, figures: Mapping) -> str | None:
        """Why a case with these figures (record fields, FIGURES; None or NaN: not measured) is outside the
        budget, or None when it is inside or measured nothing (a dense case)."""
        reasons = []
        error, top1, kl = (_number(figures.get(name)) for name in FIGURES)
        if error is not None and not error <= self.gemm_relative_error:
            reasons.append(f"relative error {error:.3g} > {self.gemm_relative_error:g}")
        if top1 is not None and not top1 >= self.top1_agreement:
            reasons.append(f"top-1 agreement {top1:.3g} < {self.top1_agreement:g}")
        if kl is not None and not kl <= self.kl_divergence:
            reasons.append(f"KL divergence {kl:.3g} > {self.kl_divergence:g}")
        return "outside the accuracy budget: " + ", ".join(reasons) if reasons else None

    def fields(self, figures: Mapping) -> dict:
        """A record's verdict fields for these figures: `within_budget` and, outside it, `accuracy_note`."""
        why = self.outside(figures)
        return {"within_budget": why is None, **({"accuracy_note": why} if why else {})}


def _number(value) -> float | None:
    """A figure as a float; None for a missing one (null or NaN: not measured); inf stays inf (infinitely far)."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def guard_fields(figures: Mapping, path: str) -> dict:
    """A quantised case's record fields: its figures (a non-finite one left out, the verdict saying why), the
    path that ran and the verdict under the run's budget (`load_budget`)."""
    written = {name: value for name, value in figures.items() if value is not None and math.isfinite(value)}
    return {**written, "reference_path": path, **load_budget().fields(figures)}


def parse_budget(table, where: str) -> Budget:
    """A Budget from a `[tool.wattbench.accuracy]` table: known keys only, each a number in range."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table")
    known = {f.name for f in dataclasses.fields(Budget)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}: expected {', '.join(sorted(known))}")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UsageError(f"{where}: {key} must be a non-negative number, got {value!r}")
        if key == "top1_agreement" and value > 1:
            raise UsageError(f"{where}: top1_agreement is a fraction from 0 to 1, got {value!r}")
    return Budget(**{key: float(value) for key, value in table.items()})


def load_budget(start: Path = Path(".")) -> Budget:
    """The budget of the nearest pyproject.toml's `[tool.wattbench.accuracy]`, else the defaults."""
    table, where = tool_table("accuracy", start, "the accuracy budget")
    return Budget() if table is None else parse_budget(table, where)
