"""Cost and carbon per million units of work: derived from the measured energy per unit and throughput and from
prices the user gives, never measured, and labelled so wherever they appear.

Opt-in: the inputs come from `[tool.wattbench.cost]` in the nearest pyproject.toml, then from the `report`
command's options (which have the last word); without an electricity price, a carbon intensity or a device price
no cost or carbon figure appears.

    [tool.wattbench.cost]
    electricity_per_kwh = 0.30     # price of a kWh, in `currency`
    currency = "USD"               # a label only
    pue = 1.2                      # facility energy / IT energy; not given: 1, the device's own energy only
    carbon_g_per_kwh = 400         # grid carbon intensity, gCO2e per kWh
    max_latency_ms = 50            # rank only configurations whose median latency per call meets the bound

    [tool.wattbench.cost.device_per_hour]   # hardware cost per device-hour, by device-name pattern
    "H100" = 2.50                           # (a regular expression searched case-insensitively, in file order)

Per million units of work (tokens, samples, ... as the record counts them):

    facility energy (kWh) = J/unit x 1e6 / 3.6e6 x PUE
    energy cost           = facility energy x electricity price
    CO2e (kg)             = facility energy x gCO2e/kWh / 1000
    hardware cost         = device price per hour x (1e6 / units per second) / 3600
    total cost            = energy cost (with an electricity price) + hardware cost (with device prices)

Devices are ranked per workload by total cost (by CO2e when no price is given), each by its cheapest
configuration under the latency bound.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wattbench.errors import UsageError
from wattbench.pyproject import tool_table
from wattbench.report.verdict import Pick, unit_of, workload_order

#: Each number the table or the options may give: (lowest value allowed, whether that value is allowed, words).
NUMBERS = {"electricity_per_kwh": (0.0, True, "a price per kWh"), "pue": (1.0, True, "a PUE"),
           "carbon_g_per_kwh": (0.0, True, "gCO2e per kWh"), "max_latency_ms": (0.0, False, "milliseconds")}
KEYS = (*NUMBERS, "currency", "device_per_hour")
#: The command-line option of each key, for error messages.
OPTIONS = {"electricity_per_kwh": "--electricity-price", "pue": "--pue", "carbon_g_per_kwh": "--carbon-intensity",
           "max_latency_ms": "--max-latency-ms", "currency": "--currency", "device_per_hour": "--device-price"}
JOULES_PER_KWH = 3.6e6
MILLION = 1e6


@dataclass(frozen=True)
class CostInputs:
    """The user's prices and factors; None where not given."""

    electricity_per_kwh: float | None = None
    pue: float | None = None
    carbon_g_per_kwh: float | None = None
    #: (pattern, price per device-hour), tried in order.
    device_per_hour: tuple[tuple[str, float], ...] = ()
    currency: str = ""
    max_latency_ms: float | None = None

    def price_per_hour(self, device_name: str) -> float | None:
        return next((price for pattern, price in self.device_per_hour
                     if re.search(pattern, device_name, re.IGNORECASE)), None)

    @property
    def priced(self) -> bool:
        return self.electricity_per_kwh is not None or bool(self.device_per_hour)

    @property
    def needs_energy(self) -> bool:
        """Whether the ranking's figure rests on measured energy (an electricity price, or carbon alone)."""
        return self.electricity_per_kwh is not None or not self.device_per_hour

    def describe(self) -> str:
        """The inputs in one line, as the report states them beside every derived figure."""
        money = f" {self.currency}" if self.currency else ""
        parts = []
        if self.electricity_per_kwh is not None:
            parts.append(f"electricity {self.electricity_per_kwh:g}{money}/kWh")
        parts.append(f"PUE {self.pue:g}" if self.pue is not None else "PUE not given (1: the device's energy only)")
        if self.carbon_g_per_kwh is not None:
            parts.append(f"grid {self.carbon_g_per_kwh:g} gCO2e/kWh")
        parts += [f"{pattern!r} {price:g}{money}/h" for pattern, price in self.device_per_hour]
        if self.max_latency_ms is not None:
            parts.append(f"median latency per call <= {self.max_latency_ms:g} ms")
        return ", ".join(parts)


def _check_number(value, key: str, where: str) -> float:
    low, inclusive, words = NUMBERS[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (value == low and not inclusive):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise UsageError(f"{where}: expected {words}, a number {bound}, got {value!r}")
    return float(value)


def _check_prices(prices, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(prices, dict):
        raise UsageError(f"{where}: expected a table of device-name pattern = price per hour, got {prices!r}")
    checked = []
    for pattern, price in prices.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"{where}: {pattern!r}: bad device-name pattern: {exc}") from None
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise UsageError(f"{where}: {pattern!r}: expected a price per device-hour, a number >= 0, got {price!r}")
        checked.append((pattern, float(price)))
    return tuple(checked)


def _checked(values: dict, where) -> dict:
    """`values` (table or options) checked key by key; `where(key)` names the key's source in an error."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UsageError(f"{where(unknown[0])}: unknown key (known: {', '.join(KEYS)})")
    checked = {}
    for key, value in values.items():
        if key in NUMBERS:
            checked[key] = _check_number(value, key, where(key))
        elif key == "currency":
            if not isinstance(value, str):
                raise UsageError(f"{where(key)}: expected a currency's name such as 'USD', got {value!r}")
            checked[key] = value
        else:
            checked[key] = _check_prices(value, where(key))
    return checked


def parse_device_prices(values: list[str]) -> dict[str, float]:
    """`--device-price PATTERN=PRICE` options as a pattern -> price table (checked with the table's rules)."""
    prices = {}
    for value in values:
        pattern, equals, price = value.rpartition("=")
        try:
            prices[pattern] = float(price)
        except ValueError:
            equals = ""
        if not equals or not pattern:
            raise UsageError(f"--device-price: expected PATTERN=PRICE_PER_HOUR such as 'H100=2.5', got {value!r}")
    return prices


def read_table(start: Path) -> tuple[dict, str]:
    """`[tool.wattbench.cost]` of the nearest pyproject.toml ({} when there is none) and where it is."""
    table, where = tool_table("cost", start, "cost settings")
    if table is not None and not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table")
    return table or {}, where


def load_cost(start: Path = Path("."), options: dict | None = None) -> CostInputs | None:
    """The inputs from `[tool.wattbench.cost]`, then `options` (keys as the table's; None values not given;
    device prices given there are tried before the table's). None when nothing is given at all."""
    table, source = read_table(start)
    values = _checked(table, lambda key: f"{source} {key}")
    given = {key: value for key, value in (options or {}).items() if value is not None and value != {}}
    overrides = _checked(given, lambda key: OPTIONS.get(key, key))
    prices = overrides.pop("device_per_hour", ()) + values.pop("device_per_hour", ())
    values.update(overrides)
    if not values and not prices:
        return None
    inputs = CostInputs(device_per_hour=prices, **values)
    if inputs.electricity_per_kwh is None and inputs.carbon_g_per_kwh is None and not prices:
        raise UsageError(f"the cost inputs give only {', '.join(sorted(values))}: no electricity price, carbon "
                         "intensity or device price to derive a cost or CO2e from")
    return inputs


def derive(rows: pd.DataFrame, inputs: CostInputs) -> pd.DataFrame:
    """Per record of `rows`: facility kWh, energy cost, hardware cost, total cost and CO2e (kg) per 1M units,
    NaN where an input was not given or the record lacks the measurement it rests on."""
    pue = inputs.pue if inputs.pue is not None else 1.0
    kwh = rows["joules_per_unit"] * MILLION / JOULES_PER_KWH * pue
    per_hour = rows["device_name"].map(lambda name: inputs.price_per_hour(name)).astype(float)
    derived = pd.DataFrame(index=rows.index)
    derived["facility_kwh"] = kwh
    derived["energy_cost"] = kwh * inputs.electricity_per_kwh if inputs.electricity_per_kwh is not None else math.nan
    derived["hardware_cost"] = per_hour * MILLION / rows["units_per_s"] / 3600 if inputs.device_per_hour \
        else math.nan
    parts = [derived[column] for column, given in (("energy_cost", inputs.electricity_per_kwh is not None),
                                                   ("hardware_cost", bool(inputs.device_per_hour))) if given]
    derived["total_cost"] = sum(parts) if parts else math.nan
    derived["co2e_kg"] = kwh * inputs.carbon_g_per_kwh / 1000 if inputs.carbon_g_per_kwh is not None else math.nan
    return derived


@dataclass
class CostEntry:
    """A device's cheapest configuration for a workload, with its derived figures per 1M units."""

    pick: Pick
    facility_kwh: float
    energy_cost: float
    hardware_cost: float
    total_cost: float
    co2e_kg: float


@dataclass
class CostRanking:
    workload: str
    unit: str
    key: str  # total_cost or co2e_kg
    entries: list[CostEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _why_unranked(device: str, rows: pd.DataFrame, inputs: CostInputs) -> str:
    if inputs.needs_energy and not rows["energy_measured"].any():
        return "energy not measured"
    if inputs.device_per_hour and inputs.price_per_hour(device) is None:
        return "no device price matches its name"
    return "no figure to rank it by"


def rank_costs(rows: pd.DataFrame, inputs: CostInputs) -> list[CostRanking]:
    """Per workload of `rows` (verdict.compared), devices by their lowest total cost (CO2e when no price is
    given) per 1M units among configurations meeting the latency bound."""
    key = "total_cost" if inputs.priced else "co2e_kg"
    derived = pd.concat([rows, derive(rows, inputs)], axis=1)
    rankings = []
    for workload, part in sorted(derived.groupby("workload"), key=lambda item: workload_order(item[0])):
        ranking = CostRanking(workload, unit_of(part), key)
        if inputs.max_latency_ms is not None:
            fast = part[part["median_ms"] <= inputs.max_latency_ms]
            for device in sorted(set(part["device_name"]) - set(fast["device_name"])):
                best = part.loc[part["device_name"] == device, "median_ms"].min()
                ranking.notes.append(f"not ranked: {device}: fastest median {best:.4g} ms is over the "
                                     f"{inputs.max_latency_ms:g} ms bound")
            part = fast
        ranked = part[part[key].notna()]
        for device in sorted(set(part["device_name"]) - set(ranked["device_name"])):
            why = _why_unranked(device, part[part["device_name"] == device], inputs)
            ranking.notes.append(f"not ranked: {device}: {why}")
        cheapest = ranked.sort_values(key, kind="stable").drop_duplicates("device_name", keep="first")
        ranking.entries = [
            CostEntry(Pick(r.device_name, r.host, r.impl, r.precision, r.size, r.setting, getattr(r, key), math.nan,
                           r.median_ms), r.facility_kwh, r.energy_cost, r.hardware_cost, r.total_cost, r.co2e_kg)
            for r in cheapest.itertuples()]
        rankings.append(ranking)
    return rankings
