"""Gate settings: thresholds from `[tool.wattbench.gate]` in pyproject.toml, then the command line.

    [tool.wattbench.gate]
    time = "5%"          # median time per call
    energy = "5%"        # energy per unit of work (and work per joule, its reciprocal)
    drift = "0%"         # run-to-run spread of medians your runner shows (see docs/ci.md)
    confidence = 0.95
    resamples = 2000
    seed = 0

    [tool.wattbench.gate.patterns."attention.*"]   # fnmatch on the benchmark id
    time = "10%"

Patterns are tried in file order and each match overrides what came before; a threshold
given on the command line has the last word for every benchmark.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.pyproject import tool_table

GATE_METRICS = schema.GATE_METRICS  # the metrics a threshold is set for: 'time', 'energy'
#: Energy as time: two energy records at the monitor's default ±2% target combine to ±2.8%, so an
#: 8% threshold could flag only changes above 11%; at 5% a +10% change is flagged and an unchanged
#: pair would need a ratio above 1.08 (`wattbench selfcheck gate` measures both).
DEFAULT_THRESHOLDS = {"time": 0.05, "energy": 0.05}


@dataclass(frozen=True)
class GateConfig:
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    #: (pattern, {metric: threshold}) in file order.
    patterns: tuple[tuple[str, dict[str, float]], ...] = ()
    #: Command-line thresholds: they apply to every benchmark, patterns included.
    overrides: dict[str, float] = field(default_factory=dict)
    drift: float = 0.0
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    source: str = "defaults"

    def threshold(self, benchmark_id: str, metric: str) -> float:
        if metric not in GATE_METRICS:
            raise ValueError(f"metric must be one of {GATE_METRICS}, got {metric!r}")
        if metric in self.overrides:
            return self.overrides[metric]
        value = self.thresholds[metric]
        for pattern, values in self.patterns:
            if metric in values and fnmatch.fnmatchcase(benchmark_id, pattern):
                value = values[metric]
        return value

    def with_overrides(self, **thresholds: str | float | None) -> "GateConfig":
        """Command-line thresholds (`time=`, `energy=`); None leaves a metric as configured."""
        given = {metric: parse_fraction(value, f"--{metric}-threshold")
                 for metric, value in thresholds.items() if value is not None}
        unknown = set(given) - set(GATE_METRICS)
        if unknown:
            raise UsageError(f"unknown gate metric {sorted(unknown)[0]!r}: choose from {', '.join(GATE_METRICS)}")
        return replace(self, overrides={**self.overrides, **given})


def parse_fraction(value, where: str) -> float:
    """'5%' or 0.05 -> 0.05. Bare numbers must be fractions below 1, so that 5 is not read as 500%."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise UsageError(f"{where}: expected a percentage like '5%' or a fraction like 0.05, got {value!r}") \
                from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise UsageError(f"{where}: expected a percentage like '5%' or a fraction like 0.05, got {value!r}")
    if not math.isfinite(number) or not 0 <= number < 1:
        raise UsageError(f"{where}: must lie in [0%, 100%), got {value!r} (write '5%' or 0.05 for five percent)")
    return number


def load_config(start: Path = Path(".")) -> GateConfig:
    """Settings from the nearest pyproject.toml's `[tool.wattbench.gate]`, or the defaults."""
    table, where = tool_table("gate", start, "gate settings")
    return GateConfig() if table is None else parse_table(table, where)


def parse_table(table, where: str) -> GateConfig:
    """Settings from the `[tool.wattbench.gate]` table, checked against `schema.GATE_SETTINGS`."""
    if isinstance(table, dict) and not isinstance(table.get("patterns", {}), dict):
        raise UsageError(f"{where}: 'patterns' must be a table of tables")  # as earlier versions said it
    schema.validate(table, schema.GATE_SETTINGS, where)
    patterns = tuple((pattern, _metric_values(values, where, ("patterns", pattern)))
                     for pattern, values in table.get("patterns", {}).items())
    return GateConfig(thresholds={**DEFAULT_THRESHOLDS, **_metric_values(table, where)}, patterns=patterns,
                      drift=parse_fraction(table.get("drift", 0.0), f"{where} drift"),
                      confidence=float(table.get("confidence", 0.95)), resamples=table.get("resamples", 2000),
                      seed=table.get("seed", 0), source=where)


def _metric_values(table: dict, where: str, path: tuple = ()) -> dict[str, float]:
    return {metric: parse_fraction(table[metric], f"{where} {schema.field_path((*path, metric))}")
            for metric in GATE_METRICS if metric in table}
