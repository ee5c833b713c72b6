"""`wattbench sweep --resume`: a sweep cut short continues where it stopped, against the fake GPU (tests/fake_knobs.py)
and a replayed power log: the settings that finished are kept (and not applied again), the one cut short continues
its own run file, the rest run; what cannot continue a sweep is refused in one line before anything changes."""

import json

import pytest
from fake_knobs import GPU, INITIAL
from test_sweep import SHORT, replay_log

from wattbench import cli, runner
from wattbench.config import from_command
from wattbench.errors import UsageError
from wattbench.power import knobs
from wattbench.record import records
from wattbench.sweep import resumed_plan, run_sweep

#: Two cheap GEMM cases: enough to cut a setting's run file short after its first record.
CASES = "gemm.infer and torch and M1- and not int4w and fp32"


def interrupted_sweep(tmp_path, monkeypatch, stop_at):
    """A sweep of two SM clocks that a signal stops as setting `stop_at` starts; returns its run file."""
    run_suites = runner.run_suites

    def signalled(config, *args, **kwargs):
        if config.setting == stop_at:
            raise KeyboardInterrupt("SIGTERM")
        return run_suites(config, *args, **kwargs)

    monkeypatch.setattr(runner, "run_suites", signalled)
    config, pytest_args = from_command("cpu", "quick", CASES, SHORT, power_replay=replay_log(tmp_path / "meter.csv"))
    code = run_sweep(config, knobs.plan_sweep(GPU, sm_clocks="1200,1500"), pytest_args, tmp_path / "results",
                     report=False)
    monkeypatch.setattr(runner, "run_suites", run_suites)
    assert code == runner.INTERRUPTED
    (final,) = (tmp_path / "results" / "runs").glob("*-sweep_*.json")
    return final


def resume(tmp_path, final):
    """What `wattbench sweep --resume FINAL -- SHORT...` does, with the replayed meter log as the power source
    (planned for the fake GPU: the benchmarks run on this CPU)."""
    config, pytest_args = from_command(None, None, None, SHORT, resume=final,
                                       power_replay=tmp_path / "meter.csv")
    plan = knobs.plan_sweep(GPU, **resumed_plan(final))
    return run_sweep(config, plan, pytest_args, tmp_path / "results", report=False, resume=final)


def test_a_resumed_sweep_keeps_what_finished_continues_the_setting_cut_short_and_runs_the_rest(
        tmp_path, gpu, monkeypatch, capsys):
    """Stopped as sm1500mhz starts, with sm1200mhz's run file short of its last record (as when a signal arrives
    between its benchmarks): the resumed sweep keeps `default` as it was, runs the one missing benchmark at
    sm1200mhz in a second segment of that setting's file, then runs sm1500mhz."""
    final = interrupted_sweep(tmp_path, monkeypatch, stop_at="sm1500mhz")
    err = capsys.readouterr().err
    assert f"continue it with `wattbench sweep --resume {final}`" in err, err
    before = json.loads(final.read_text())
    assert sorted({r.setting_id for r in records(before)}) == ["default", "sm1200mhz"]
    assert before["wattbench"]["sweep"]["arguments"] == {"sm_clocks": "1200,1500"}
    part = final.parent / f".{final.stem}.settings" / "sm1200mhz.json"
    cut = json.loads(part.read_text())
    dropped = cut["benchmarks"].pop()
    cut["wattbench"]["complete"] = False
    part.write_text(json.dumps(cut))
    check_refusals(final, tmp_path, gpu, capsys)

    locked = []
    gpu.before_change = lambda name, args: locked.append((name, args[-1] if args else None))
    assert resume(tmp_path, final) == 0
    out = capsys.readouterr().out
    assert "setting 1/3: default: kept from the run being resumed" in out, out
    assert "setting 2/3: sm1200mhz\n" in out and "setting 3/3: sm1500mhz (~" in out, out  # the pace once known
    assert "left in the sweep at its pace so far)" in out
    after = json.loads(final.read_text())
    assert after["wattbench"]["complete"]
    found = records(after)
    assert sorted(r.setting_id for r in found) == ["default"] * 2 + ["sm1200mhz"] * 2 + ["sm1500mhz"] * 2
    assert len({r.identity() for r in found}) == 6
    kept = [b for b in before["benchmarks"] if "@default" in b["fullname"]]
    assert [b for b in after["benchmarks"] if "@default" in b["fullname"]] == kept  # as they were
    resumed = json.loads(part.read_text())
    assert [b["name"] for b in resumed["benchmarks"]] == [b["name"] for b in cut["benchmarks"]] + [dropped["name"]]
    assert len(resumed["wattbench"]["segments"]) == 2 and resumed["wattbench"]["complete"]
    # The settings still to run were applied, in order; the GPU ends as found.
    assert [value for name, value in locked if name == "nvmlDeviceSetGpuLockedClocks"] == [1200, 1500]
    assert gpu.state() == {**INITIAL, "sm_lock": None} and not knobs.state_file().exists()
    assert [s["id"] for s in after["wattbench"]["sweep"]["settings"]] == ["default", "sm1200mhz", "sm1500mhz"]
    assert cli.main(["sweep", "--resume", str(final)]) == 2
    assert "this sweep is complete; there is nothing to resume" in capsys.readouterr().err


def check_refusals(final, tmp_path, gpu, capsys):
    """What cannot continue the sweep in `final` is refused in one line (exit 2), before any setting changes."""
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"benchmarks": [], "wattbench": {"complete": False}}))
    for args, message in [(["--resume", str(final), "--sm-clocks", "1200"], "give it no settings"),
                          (["--resume", str(final), "--dry-run"], "give it no settings or --dry-run"),
                          (["--resume", str(plain)], "not a sweep's run file"),
                          (["--resume", str(tmp_path / "none.json")], "none.json"),
                          (["--resume", str(final), "-k", "softmax"], "resume it with the same selection")]:
        assert cli.main(["sweep", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "wattbench: error:" in err and message in err, (args, err)
    # Other timing options than the sweep's: refused before any setting is applied.
    config, pytest_args = from_command(None, None, None, [*SHORT[:-1], "--wattbench-min-time=0.05"], resume=final)
    plan = knobs.plan_sweep(GPU, **resumed_plan(final))
    locked = []
    gpu.before_change = lambda name, args: locked.append(name)
    with pytest.raises(UsageError, match="resume it with the same settings"):
        run_sweep(config, plan, pytest_args, tmp_path, resume=final)
    assert locked == [] and gpu.state() == INITIAL
