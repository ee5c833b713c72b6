"""The crossover map on synthetic run files with a known answer: which precision wins per batch size, by how much,
with the accuracy budget keeping a precision that changes the answer out of every "best" choice."""

import copy
import json
import math
from pathlib import Path

import pytest

from wattbench.accuracy import Budget
from wattbench.report import plots
from wattbench.report.crossover import ENERGY, TIME, crossover_maps, crossover_table, summary
from wattbench.report.load import load_runs
from wattbench.report.verdict import compared, verdicts

FIXTURE = Path(__file__).parent / "data" / "report" / "fixture_h100.json"
DEVICE = "TEST-FIXTURE NVIDIA H100 80GB HBM3"
#: J/token by (precision, M): int4w wins at small batches, fp8 from batch 32 (by 11% and 20%), bf16 nowhere.
JOULES = {"bf16": [1.0, 1.0, 1.0, 1.0], "fp8": [1.3, 1.1, 0.89, 0.8], "int4w-bf16": [0.6, 0.95, 1.2, 1.5]}
BATCHES = [1, 8, 32, 128]
UNCERTAINTY_PCT = 2.0


def synthetic_run(tmp_path: Path, accuracy: dict | None = None, energy: bool = True, name: str = "run.json") -> Path:
    """A run of gemm.infer at K = N = 4096 whose energy per token is JOULES (time per token the same numbers in
    ms); `accuracy` gives a (precision, M)'s relative error (default: every quantised case at 5%)."""
    run = json.loads(FIXTURE.read_text())
    template = next(b for b in run["benchmarks"] if b["extra_info"]["workload"] == "gemm.infer")
    run["benchmarks"] = []
    for precision, joules in JOULES.items():
        for M, per_token in zip(BATCHES, joules):
            bench = copy.deepcopy(template)
            info = bench["extra_info"]
            size = f"M{M}-K4096-N4096"
            info.update(precision=precision, size=size, shape={"M": M, "K": 4096, "N": 4096}, units_per_call=float(M),
                        median_s=per_token * M * 1e-3, units_per_s=1e3 / per_token)
            info["timing"]["samples_s"] = [per_token * M * 1e-3] * 5
            if precision != "bf16":
                error = (accuracy or {}).get((precision, M), 0.05)
                info.update(accuracy=error, reference_path="triton", within_budget=error <= 0.15)
            if energy:
                info["energy"].update(joules_per_call=per_token * M, joules_per_unit=per_token,
                                      units_per_joule=1 / per_token, uncertainty_pct=UNCERTAINTY_PCT)
            else:
                info["energy"] = {"source": "none", "method": "none", "reason": "no power sensor"}
            bench["name"] = f"test_kernel[gemm.infer-torch-{precision}-{size}]"
            bench["param"] = bench["params"]["wattbench_case"] = f"gemm.infer-torch-{precision}-{size}"
            run["benchmarks"].append(bench)
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return path


def the_map(tmp_path, **kwargs):
    maps = crossover_maps(load_runs([synthetic_run(tmp_path, **kwargs)], budget=Budget()).frame)
    assert len(maps) == 1
    return maps[0]


def test_winners_per_batch_and_the_margin(tmp_path):
    found = the_map(tmp_path)
    assert (found.workload, found.family, found.device_name, found.measure, found.baseline) == \
        ("gemm.infer", "K4096-N4096", DEVICE, ENERGY, "bf16")
    assert found.winners == {1: "int4w-bf16", 8: "int4w-bf16", 32: "fp8", 128: "fp8"}
    saving, plus_minus = found.saving_pct(32)
    assert saving == pytest.approx(11.0)
    assert plus_minus == pytest.approx(0.89 * math.hypot(UNCERTAINTY_PCT, UNCERTAINTY_PCT))
    assert found.cells[("int4w-bf16", 128)].relative == pytest.approx(1.5)
    assert summary(found) == (f"gemm.infer K4096-N4096 (torch) on {DEVICE}, by energy per unit: fp8 wins from batch "
                              "32 on this device, by 11% ± 3% (at batch 32) to 20% ± 2% (at 128) against bf16")


def test_a_precision_outside_the_budget_keeps_its_cell_but_never_wins(tmp_path):
    found = the_map(tmp_path, accuracy={("int4w-bf16", 1): 0.3, ("int4w-bf16", 8): 0.3})
    assert found.winners == {1: "bf16", 8: "bf16", 32: "fp8", 128: "fp8"}
    assert "relative error 0.3 > 0.15" in found.cells[("int4w-bf16", 1)].outside_budget
    table = crossover_table([found])
    assert list(table["winner"]) == ["bf16", "bf16", "fp8", "fp8"]
    assert list(table["outside accuracy budget"]) == ["int4w-bf16", "int4w-bf16", "-", "-"]
    assert list(table["saving vs baseline"])[2] == "+11.0% ± 2.5%"


def test_the_report_budget_overrides_the_runs(tmp_path):
    path = synthetic_run(tmp_path)
    strict = load_runs([path], budget=Budget(gemm_relative_error=0.01)).frame
    found = crossover_maps(strict)[0]
    assert set(found.winners.values()) == {"bf16"}
    assert "bf16 wins at every batch (1-128)" in summary(found)
    assert set(compared(strict.assign(setting_held=True))["precision"]) == {"bf16"}


def test_the_verdict_never_names_a_case_outside_the_budget(tmp_path):
    frame = load_runs([synthetic_run(tmp_path, accuracy={("int4w-bf16", 1): 0.3})], budget=Budget()).frame
    best = verdicts(compared(frame.assign(setting_held=True)))[0].best
    # int4w at M = 1 has the most tokens per joule (1/0.6) but is outside the budget: the next best is named
    assert (best.precision, best.size) == ("fp8", "M128-K4096-N4096")


def test_without_energy_the_map_compares_time_and_says_so(tmp_path):
    found = the_map(tmp_path, energy=False)
    assert found.measure == TIME
    assert found.winners == {1: "int4w-bf16", 8: "int4w-bf16", 32: "fp8", 128: "fp8"}
    assert "time per unit (energy not measured)" in summary(found)
    assert set(crossover_table([found])["compared by"]) == {"s/unit (energy not measured)"}


def test_the_heatmap_draws_one_panel_per_map(tmp_path):
    frame = load_runs([synthetic_run(tmp_path, accuracy={("int4w-bf16", 1): 0.3})], budget=Budget()).frame
    plot = plots.crossover(frame)
    panels = [ax for ax in plot.figure.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == 1 and "gemm.infer" in panels[0].get_title()
    texts = [t.get_text() for t in panels[0].texts]
    assert "0.89x" in texts and any("outside budget" in t for t in texts)
    assert plot.name == "crossover"


def test_no_map_without_two_precisions(tmp_path):
    frame = load_runs([synthetic_run(tmp_path)], budget=Budget()).frame
    with pytest.raises(plots.Skipped, match="two or more precisions"):
        plots.crossover(frame[frame["precision"] == "bf16"])


def test_select_ranks_precisions_for_a_workload(tmp_path, capsys):
    from wattbench import cli

    path = synthetic_run(tmp_path, accuracy={("int4w-bf16", 1): 0.3})
    assert cli.main(["select", str(path), "--workload", "gemm.infer", "--precisions"]) == 0
    out = capsys.readouterr().out
    assert "fp8 wins from batch 32 on this device, by 11% ± 3%" in out
    lines = out.splitlines()
    first_batch = next(line for line in lines if line.startswith("1 "))
    assert first_batch.split()[:2] == ["1", "bf16"] and "int4w-bf16" in first_batch  # flagged, not chosen


def test_select_of_devices_leaves_out_cases_outside_the_budget(tmp_path, capsys):
    from wattbench import cli

    path = synthetic_run(tmp_path, accuracy={("int4w-bf16", 1): 0.3})
    assert cli.main(["select", str(path), "--workload", "gemm.infer"]) == 0
    out = capsys.readouterr().out
    assert "left out:" in out and "int4w-bf16 M1-K4096-N4096: outside the accuracy budget" in out
    assert "fp8" in out.splitlines()[3]  # the best inside the budget: fp8 at M = 128


def test_the_report_shows_the_crossover_and_flags_the_budget(tmp_path):
    from wattbench.report.render import write_report

    path = synthetic_run(tmp_path, accuracy={("int4w-bf16", 1): 0.3})
    out = tmp_path / "report"
    write_report([path], out=out)
    summary_md = (out / "summary.md").read_text()
    assert "Crossover: which precision wins at each batch size" in summary_md
    assert "fp8 wins from batch 32 on this device, by 11% ± 3%" in summary_md
    assert "OUTSIDE BUDGET; error 30.00%" in summary_md
    assert (out / "plots" / "crossover.png").exists() or any(out.rglob("crossover.png"))


def test_a_map_without_a_dense_baseline_says_so(tmp_path):
    frame = load_runs([synthetic_run(tmp_path)], budget=Budget()).frame
    (found,) = crossover_maps(frame[frame["precision"] != "bf16"])
    assert found.baseline is None and math.isnan(found.saving_pct(32)[0])
    assert summary(found).endswith("no dense baseline (bf16 or fp32) ran; the least per unit by batch: "
                                   "1: int4w-bf16, 8: int4w-bf16, 32: fp8, 128: fp8")


def test_the_runs_per_watt_summary_never_names_a_case_outside_the_budget():
    from wattbench.summary import summarize

    def bench(precision, per_s, within):
        info = {"workload": "llm.decode", "impl": "torch", "style": "infer", "precision": precision,
                "size": "tiny-B1-P32-T4", "shape": {"model": "tiny", "B": 1}, "units_per_s": per_s,
                **({"within_budget": within} if within is not None else {})}
        return {"extra_info": info}

    run = {"benchmarks": [bench("fp32", 100.0, None), bench("int4w-fp32", 300.0, False), bench("fp8", 200.0, True)]}
    best = summarize(run)["models"]["tiny"]["phases"]["decode"]
    assert (best["precision"], best["value"]) == ("fp8", 200.0)
