"""Cost and carbon per 1M units of work: opt-in, labelled as derived, and equal to a hand computation.

The two run files hold round numbers, so every figure below is worked out by hand:
- device A: 0.036 J/token at 1,000 tokens/s (1 ms per call); a second, cheaper configuration takes 80 ms per call.
- device B: 0.018 J/token at 250 tokens/s (4 ms per call).
With PUE 1.5, 0.20 per kWh, 400 gCO2e/kWh, A at 3.60 per hour and B at 0.72 per hour, per 1M tokens:
- A: 0.036 x 1e6 J = 36,000 J = 0.01 kWh, x 1.5 = 0.015 kWh facility energy; energy cost 0.015 x 0.20 = 0.003;
  CO2e 0.015 x 400 g = 6 g = 0.006 kg; 1e6 / 1,000 tokens/s = 1,000 s = 1/3.6 h, x 3.60 = 1.00 hardware;
  total 1.003.
- B: 0.018 x 1e6 J = 0.005 kWh, x 1.5 = 0.0075 kWh; energy cost 0.0015; CO2e 0.003 kg; 1e6 / 250 = 4,000 s
  = 1/0.9 h, x 0.72 = 0.80 hardware; total 0.8015: B is cheaper, A's energy per token is twice B's.
"""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from wattbench import cli
from wattbench.errors import UsageError
from wattbench.report import cost, write_report
from wattbench.report.load import load_runs

DATA = Path(__file__).parent / "data" / "report"
INPUTS = {"electricity_per_kwh": 0.20, "pue": 1.5, "carbon_g_per_kwh": 400, "currency": "EUR",
          "device_per_hour": {"DEVICE-A": 3.60, "DEVICE-B": 0.72}}


def record(template: dict, device: str, size: str, tokens_per_call: float, seconds: float, joules_per_token: float):
    bench = copy.deepcopy(template)
    info = bench["extra_info"]
    joules = joules_per_token * tokens_per_call
    info.update(workload="gemm.infer", style="infer", impl="torch", precision="bf16", size=size, device_name=device,
                units_per_call=tokens_per_call, median_s=seconds, units_per_s=tokens_per_call / seconds)
    info["timing"]["samples_s"] = [seconds] * 10
    info["energy"].update(joules_per_call=joules, joules_per_unit=joules_per_token,
                          units_per_joule=1 / joules_per_token, uncertainty_pct=1.0)
    bench["stats"].update(median=seconds)
    return bench


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two run files (devices A and B) of round numbers, from the H100 fixture's format."""
    folder = tmp_path_factory.mktemp("cost")
    template = json.loads((DATA / "fixture_h100.json").read_text())
    paths = []
    for device, benchmarks in (
            ("DEVICE-A", [("M1", 1.0, 0.001, 0.036), ("M80", 80.0, 0.080, 0.009)]),
            ("DEVICE-B", [("M1", 1.0, 0.004, 0.018)])):
        run = copy.deepcopy(template)
        run["wattbench"]["device_name"] = device
        run["benchmarks"] = [record(template["benchmarks"][0], device, *case) for case in benchmarks]
        paths.append(folder / f"{device}.json")
        paths[-1].write_text(json.dumps(run))
    return paths


def test_derived_figures_per_million_units_match_the_hand_computation(runs):
    rows = load_runs(runs).frame.set_index("size", drop=False)
    a = rows[(rows["device_name"] == "DEVICE-A") & (rows["size"] == "M1")]
    b = rows[rows["device_name"] == "DEVICE-B"]
    inputs = cost.load_cost(Path("/"), INPUTS)
    derived = cost.derive(pd.concat([a, b]), inputs)
    assert derived["facility_kwh"].tolist() == pytest.approx([0.015, 0.0075])
    assert derived["energy_cost"].tolist() == pytest.approx([0.003, 0.0015])
    assert derived["co2e_kg"].tolist() == pytest.approx([0.006, 0.003])
    assert derived["hardware_cost"].tolist() == pytest.approx([1.00, 0.80])
    assert derived["total_cost"].tolist() == pytest.approx([1.003, 0.8015])


def test_devices_are_ranked_by_total_cost_under_the_latency_bound(runs):
    from wattbench.report.verdict import compared
    from wattbench.report.settings import setting_rows

    rows = compared(setting_rows(load_runs(runs).runs))
    (ranking,) = cost.rank_costs(rows, cost.load_cost(Path("/"), INPUTS))
    assert [(e.pick.device_name, e.pick.size) for e in ranking.entries] == [("DEVICE-B", "M1"), ("DEVICE-A", "M80")]
    # A's 80 ms configuration costs 0.009 J/token (0.00075 energy) and 1e6/1000 s of A (1.00): 1.00075 < 1.003.
    assert ranking.entries[1].total_cost == pytest.approx(1.00075)
    bounded = cost.rank_costs(rows, cost.load_cost(Path("/"), {**INPUTS, "max_latency_ms": 10}))[0]
    assert [(e.pick.device_name, e.pick.size, round(e.total_cost, 6)) for e in bounded.entries] == [
        ("DEVICE-B", "M1", 0.8015), ("DEVICE-A", "M1", 1.003)]
    carbon_only = cost.rank_costs(rows, cost.load_cost(Path("/"), {"carbon_g_per_kwh": 400, "pue": 1.5}))[0]
    # Without a price, by CO2e: A's 80 ms configuration, 0.009 J/token, emits 0.00375 kWh x 0.4 = 0.0015 kg.
    assert [(e.pick.device_name, e.pick.size) for e in carbon_only.entries] == [("DEVICE-A", "M80"), ("DEVICE-B", "M1")]
    assert carbon_only.key == "co2e_kg"
    assert [e.co2e_kg for e in carbon_only.entries] == pytest.approx([0.0015, 0.003])


def test_the_report_shows_cost_columns_only_when_their_inputs_are_given(runs, tmp_path):
    assert write_report(runs, tmp_path / "plain").out == tmp_path / "plain"
    for name in ("summary.md", "report.html"):
        text = (tmp_path / "plain" / name).read_text()
        assert "derived" not in text.lower() and "CO2e" not in text and "cost" not in text.lower()
    assert write_report(runs, tmp_path / "priced", cost=INPUTS).out == tmp_path / "priced"
    summary = (tmp_path / "priced" / "summary.md").read_text()
    assert "## Cost and carbon per 1M units (derived)" in summary
    assert "DERIVED, not measured" in summary and "electricity 0.2 EUR/kWh, PUE 1.5, grid 400 gCO2e/kWh" in summary
    assert ("| gemm.infer | 1 | DEVICE-B | torch bf16 M1 | tokens | 0.0075 | 0.0015 | 0.8 | 0.8015 | 0.003 | 4 |"
            in summary)
    assert "| gemm.infer | 2 | DEVICE-A | torch bf16 M80 | tokens | 0.00375 | 0.00075 | 1 | 1.001 | 0.0015 | 80 |" \
        in summary
    assert "derived: energy cost/1M (EUR)" in summary  # the every-record table's derived columns
    assert "Cost and carbon per 1M units (derived)" in (tmp_path / "priced" / "report.html").read_text()


def test_carbon_alone_gives_co2e_and_no_cost_column(runs, tmp_path):
    assert write_report(runs, tmp_path / "out", cost={"carbon_g_per_kwh": 400}).out == tmp_path / "out"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| workload | rank | device | configuration | per 1M | facility kWh | kg CO2e | median ms |" in summary
    assert "total cost" not in summary and "PUE not given (1: the device's energy only)" in summary


def test_the_pyproject_table_is_read_and_options_override_it(runs, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.wattbench.cost]\nelectricity_per_kwh = 0.5\npue = 1.5\ncurrency = "USD"\n'
        '[tool.wattbench.cost.device_per_hour]\n"DEVICE-B" = 0.72\n')
    inputs = cost.load_cost(tmp_path)
    assert (inputs.electricity_per_kwh, inputs.pue, inputs.currency) == (0.5, 1.5, "USD")
    assert inputs.price_per_hour("device-b rev 2") == 0.72 and inputs.price_per_hour("DEVICE-A") is None
    overridden = cost.load_cost(tmp_path, {"electricity_per_kwh": 0.2, "device_per_hour": {"B$": 1.0}})
    assert overridden.electricity_per_kwh == 0.2 and overridden.price_per_hour("DEVICE-B") == 1.0
    assert cost.load_cost(Path("/"), {}) is None  # no table, no option: no cost at all
    assert write_report(runs, tmp_path / "out", config_root=tmp_path).out == tmp_path / "out"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "not ranked: DEVICE-A: no device price matches its name" in summary
    assert "| gemm.infer | 1 | DEVICE-B | torch bf16 M1 | tokens | 0.0075 | 0.00375 | 0.8 | 0.8038 | 4 |" in summary


@pytest.mark.parametrize("given, message", [
    ({"electricity_per_kwh": -1}, r"--electricity-price: expected a price per kWh, a number >= 0, got -1"),
    ({"pue": 0.9, "carbon_g_per_kwh": 1}, r"--pue: expected a PUE, a number >= 1, got 0.9"),
    ({"pue": 1.2}, r"the cost inputs give only pue: no electricity price, carbon intensity or device price"),
    ({"max_latency_ms": 0, "carbon_g_per_kwh": 1}, r"--max-latency-ms: expected milliseconds, a number > 0"),
    ({"device_per_hour": {"[": 1.0}}, r"--device-price: '\[': bad device-name pattern"),
])
def test_bad_inputs_are_refused_in_one_line(given, message):
    with pytest.raises(UsageError, match=message):
        cost.load_cost(Path("/"), given)


def test_a_bad_pyproject_value_names_the_file_and_key(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.wattbench.cost]\ncarbon_g_per_kwh = "lots"\nprice = 1\n')
    with pytest.raises(UsageError, match=r"pyproject.toml \[tool.wattbench.cost\] price: unknown key"):
        cost.load_cost(tmp_path)


def test_the_command_line_options_reach_the_report_and_bad_ones_exit_2(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no pyproject.toml with a cost table here or above
    args = ["report", *map(str, runs), "--out", str(tmp_path / "out"), "--electricity-price", "0.2", "--pue", "1.5",
            "--carbon-intensity", "400", "--currency", "EUR", "--device-price", "DEVICE-A=3.6",
            "--device-price", "DEVICE-B=0.72"]
    assert cli.main(args) == 0
    assert "| gemm.infer | 1 | DEVICE-B | torch bf16 M1 | tokens | 0.0075 | 0.0015 | 0.8 | 0.8015 | 0.003 | 4 |" \
        in (tmp_path / "out" / "summary.md").read_text()
    capsys.readouterr()
    assert cli.main([*args[:-1], "DEVICE-B"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "wattbench: error: --device-price: expected PATTERN=PRICE_PER_HOUR such as 'H100=2.5', got 'DEVICE-B'"]
