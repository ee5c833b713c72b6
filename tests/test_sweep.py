"""`wattbench sweep` end to end on this CPU against the fake GPU (tests/fake_knobs.py) and a replayed power log: one
run file holding every setting's records, each naming its setting in its identity, the settings read back over the
energy windows, and the GPU put back afterwards; bad input refused before anything changes."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fake_knobs import GPU, INITIAL

from wattbench import cli
from wattbench.config import from_command
from wattbench.power import knobs
from wattbench.record import records
from wattbench.report.settings import compare_settings, setting_rows
from wattbench.sweep import run_sweep

#: One llm.decode case (one GEMM where the case does not matter), measured in short windows of a replayed meter log.
DECODE, GEMM = "llm.decode-torch-fp32-tiny-B1-", "gemm.infer-torch-fp32-M1-"
SHORT = ["--wattbench-idle=0", "--wattbench-energy-window=0.05", "--wattbench-energy-max-window=0.1",
         "--wattbench-energy-repeats=2", "--wattbench-min-time=0.02"]


def replay_log(path, watts=120.0, seconds=300):
    """A meter log at a constant `watts`, from a little before now to well after."""
    start = time.time() - 5
    lines = ["timestamp,watts"] + [f"{start + i * 0.1:.3f},{watts}" for i in range(int(seconds * 10))]
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep(tmp_path, plan, keyword):
    config, pytest_args = from_command("cpu", "quick", keyword, SHORT,
                                       power_replay=replay_log(tmp_path / "meter.csv"))
    code = run_sweep(config, plan, pytest_args, tmp_path / "results", report=False)
    (run_file,) = (tmp_path / "results" / "runs").glob("*-sweep_*.json")
    return code, json.loads(run_file.read_text())


def test_a_sweep_of_sm_clocks_writes_one_run_file_and_puts_the_gpu_back(tmp_path, gpu):
    """Two clocks besides the default: enough to show each lock put back before the next."""
    locked = []
    gpu.before_change = lambda name, args: locked.append((name, args))
    code, run = sweep(tmp_path, knobs.plan_sweep(GPU, sm_clocks="1200,1800"), DECODE)
    assert code == 0
    found = records(run)
    assert sorted({record.setting_id for record in found}) == ["default", "sm1200mhz", "sm1800mhz"]
    assert len(found) == 3 and len({record.identity() for record in found}) == 3  # one case, three identities
    assert {record.identity()[:5] for record in found} == {found[0].identity()[:5]}
    for record in found:
        check = record.energy.extra["setting"]
        assert record.energy.measured and check["held"] is True, check
        clocks = {reading["in_force"]["gpu_sm_clock"]["sm_clock_mhz"] for reading in check["readbacks"]}
        assert clocks == ({1980} if record.setting_id == "default" else {int(record.setting_id[2:6])})
    block = run["wattbench"]
    assert block["complete"] and block["sweep"]["planned"] == ["default", "sm1200mhz", "sm1800mhz"]
    assert [s["id"] for s in block["sweep"]["settings"]] == block["sweep"]["planned"]
    assert all(s["settle_s"] >= 0 and s["complete"] for s in block["sweep"]["settings"])
    # Locked one at a time, each put back before the next; the GPU ends as found, with no state file left.
    assert [name for name, _ in locked if name != "nvmlDeviceResetGpuLockedClocks"] == \
        ["nvmlDeviceSetGpuLockedClocks"] * 2
    assert gpu.state()["sm_lock"] is None and gpu.state() == {**INITIAL, "sm_lock": None}
    assert not knobs.state_file().exists()
    (comparison,) = compare_settings(setting_rows([(tmp_path / "run.json", run)]))
    assert sorted(p.setting for p in comparison.points) == sorted(block["sweep"]["planned"])


def test_a_setting_that_does_not_hold_is_flagged_and_the_sweep_goes_on(tmp_path, gpu, monkeypatch):
    # Given up on after 2 s rather than the sweep's 10 (twice here): the fake GPU's settings hold within 0.3 s.
    monkeypatch.setattr(knobs.KnobSession, "applied", functools.partialmethod(knobs.KnobSession.applied, timeout_s=2.0))

    def another_process(name, args):
        if name == "nvmlDeviceSetPowerManagementLimit" and args[-1] == 300_000:
            gpu.update(ignores_changes=True)  # the driver takes the change but keeps 700 W
    gpu.before_change = another_process
    code, run = sweep(tmp_path, knobs.plan_sweep(GPU, power_limits="300,400"), GEMM)
    assert code == 1  # pl300w did not take effect: no record at it
    assert sorted(record.setting_id for record in records(run)) == ["default"]
    assert not run["wattbench"]["complete"]
    gpu.update(ignores_changes=False)


def test_bad_values_are_refused_before_anything_changes(tmp_path, gpu, capsys):
    for args, message in [(["--sm-clocks", "1201"], "not a supported SM clock"),
                          (["--power-limits", "900"], "outside the"),
                          (["--power-limits", "200:100:50"], "min is above max"),
                          (["--restore", "--sm-clocks", "1200"], "give it alone")]:
        assert cli.main(["sweep", "--device", "cpu", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "wattbench: error:" in err, err
        assert message in err or "need a CUDA device" in err, err
    assert gpu.state() == INITIAL and not knobs.state_file().exists()


def test_sigterm_mid_sweep_puts_the_originals_back_and_keeps_every_measured_record(tmp_path, gpu):
    """A sweep in a process of its own, SIGTERM while the second setting's benchmark runs."""
    child = Path(__file__).parent / "knob_child.py"
    proc = subprocess.Popen([sys.executable, str(child), "run-sweep", str(tmp_path / "gpu.json"),
                             str(replay_log(tmp_path / "meter.csv")), str(tmp_path / "results"), GEMM],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=child.parent,
                            env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "wattbench sweep: setting 2/3: sm1200mhz" in line:
            break
    assert seen and "setting 2/3" in seen[-1], (seen, proc.communicate(timeout=60))
    for line in proc.stdout:  # the suites start at sm1200mhz: the clock is locked
        if line.startswith("wattbench: quick preset on cpu"):
            break
    assert gpu.state()["sm_lock"] == 1200 and knobs.state_file().exists()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert gpu.state() == INITIAL and not knobs.state_file().exists()
    assert "sweep interrupted" in err and "the device settings are put back" in err
    (run_file,) = (tmp_path / "results" / "runs").glob("*-sweep_*.json")
    run = json.loads(run_file.read_text())
    assert "default" in {record.setting_id for record in records(run)} and not run["wattbench"]["complete"]
    assert "sm1500mhz" not in {record.setting_id for record in records(run)}


def test_the_run_table_names_each_records_setting_once_a_run_holds_several():
    from wattbench.results import format_table

    def bench(setting=None):
        info = {"workload": "gemm.infer", "style": "infer", "impl": "torch", "precision": "fp32", "size": "M1",
                "median_s": 1e-3, "unit": "tokens", **({"setting": setting} if setting else {})}
        return {"name": "gemm", "extra_info": info}

    plain = format_table({"benchmarks": [bench()], "wattbench": {}})
    assert "setting" not in plain.splitlines()[0]
    swept = format_table({"benchmarks": [bench(), bench("pl300w")], "wattbench": {}}).splitlines()
    assert swept[0].split()[5] == "setting" and swept[2].split()[5] == "default" and swept[3].split()[5] == "pl300w"
