"""Signals at every point of `wattbench run`: the run file stays valid, the run says how to resume it (or,
when it had completed, how to write its report), the exit code is 130, and no traceback is printed.

Each run here is `wattbench run` in a subprocess whose suites folder is a small test suite: two cases of
one workload, one timed in many rounds with energy windows (from a replay log that covers the run), one
interpreted Triton case with a single timed round. The suite's step sends the signal to its own process
at the chosen point, so the signal lands exactly there (inside a timed round, inside an energy window...).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SIGNAL_CONFTEST = '''
import os
import signal

import pytest
import torch

import wattbench.power.monitor as monitor
import wattbench.report
import wattbench.journal
import wattbench.timing as timing
from wattbench.workloads import Size, Workload, register

# WATTBENCH_TEST_SIGNAL = "IMPL:POINT:SIGNAL": the signal the step of case IMPL sends itself at POINT.
IMPL, POINT, SIGNAL = (os.environ.get("WATTBENCH_TEST_SIGNAL") or "::").split(":")
PHASE = {"now": "first_call", "sent": False}


def send():
    PHASE["sent"] = True
    os.kill(os.getpid(), getattr(signal, SIGNAL))


class SentWhenDropped:
    """The signal arrives while a __del__ runs (as in torch._dynamo's weakref callbacks): Python swallows what
    its handler raises there."""

    def __del__(self):
        PHASE["sent"] = True
        signal.raise_signal(getattr(signal, SIGNAL))


def build(impl):
    def make(inputs):
        def step():
            if impl == IMPL and PHASE["now"] == POINT and not PHASE["sent"]:
                SentWhenDropped() if DROPPED else send()
            return inputs["x"] * 2
        return step
    return make


register(Workload(
    name="sig.infer", op="sig", style="infer", unit="items", sizes=(Size({"N": 64}),),
    precisions={"cpu": ("fp32",), "cuda": ("fp32",)},
    make_inputs=lambda params, precision, device, generator: {"x": torch.ones(params["N"], device=device)},
    impls={"torch": build("torch"), "triton": build("triton")}, units_per_call=lambda p: p["N"],
    flops=lambda p: p["N"], bytes=lambda p, precision: 8 * p["N"], suite="signals",
))

_round_setup, _run_for = timing.round_setup, monitor.run_for


def round_setup(device, plan):
    original = _round_setup(device, plan)

    def setup():
        PHASE["now"] = "round"
        if original is not None:
            original()
    return setup


def run_for(step, seconds):
    PHASE["now"] = "energy"
    return _run_for(step, seconds)


timing.round_setup, monitor.run_for = round_setup, run_for

if POINT == "report":
    _write_report = wattbench.report.write_report

    def write_report(*args, **kwargs):
        send()
        return _write_report(*args, **kwargs)
    wattbench.report.write_report = write_report

DROPPED = POINT == "dropped"  # in a timed round, from inside a __del__
if DROPPED:
    POINT = "round"

if POINT == "twice":  # a second signal during every write of the run file after the first signal
    _write = wattbench.journal.write_json_atomic

    def write_json_atomic(path, data):
        if PHASE["sent"]:
            os.kill(os.getpid(), getattr(signal, SIGNAL))
        return _write(path, data)
    wattbench.journal.write_json_atomic = write_json_atomic
    POINT = "round"


def pytest_collection_modifyitems(items):
    if POINT == "collect":
        send()
'''

SIGNAL_SUITE = '''
import pytest


@pytest.mark.wattbench(suite="signals")
def test_signals(wattbench_case, wattbench_benchmark):
    wattbench_benchmark(wattbench_case)
'''

#: `wattbench run` with the runner's suites folder replaced by the test suite (argv[1]).
DRIVER = ("import sys; from pathlib import Path; import wattbench.runner as runner; "
          "runner.SUITES_DIR = Path(sys.argv[1]); from wattbench.cli import main; sys.exit(main(sys.argv[2:]))")
SHORT_POWER = ("--", "--wattbench-idle=0", "--wattbench-energy-window=0.05", "--wattbench-energy-repeats=1",
               "--wattbench-min-time=0.005")
#: The energy window's ceiling too: the replayed meter updates every 0.1 s, so the adaptive window would otherwise
#: grow to 15 s for the torch case (where it lasts does not matter to the signals, which land at its start).
CAPPED_POWER = (*SHORT_POWER, "--wattbench-energy-max-window=0.1")
CASES = {"sig.infer-torch-fp32-N64", "sig.infer-triton-fp32-N64"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signal-suite")
    (folder / "conftest.py").write_text(SIGNAL_CONFTEST)
    (folder / "test_signals.py").write_text(SIGNAL_SUITE)
    now = time.time()
    meter = folder / "meter.csv"  # a meter log covering the whole test session
    meter.write_text("timestamp,watts\n" + "".join(f"{now - 60 + i * 0.1:.3f},50\n" for i in range(9000)))
    return folder


def wattbench_run(suite, out, *args, signal_at=""):
    """`wattbench run` of the test suite (with no report unless asked for: drawing it takes seconds)."""
    env = {**os.environ, "WATTBENCH_TEST_SIGNAL": signal_at}
    report = () if "report" in signal_at else ("--no-report",)
    return subprocess.run([sys.executable, "-c", DRIVER, str(suite), "run", "--device", "cpu", "--out", str(out),
                           "--power-replay", str(suite / "meter.csv"), *report, *args, *CAPPED_POWER],
                          capture_output=True, text=True, timeout=300, env=env)


def run_file(out):
    (path,) = (out / "runs").glob("[!.]*.json")
    return path, json.loads(path.read_text())


def recorded(data):
    block = data["wattbench"]
    return ({b["params"]["wattbench_case"] for b in data["benchmarks"]} | {f["case"] for f in block["failed"]}
            | {s["case"] for s in block["skipped"]})


def assert_interrupted(proc):
    output = proc.stdout + proc.stderr
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    return proc.stderr.strip().splitlines()[-1]


#: Each signal cuts one session of the run short (no record of the case it landed in), in one chain of resumes:
#: Ctrl-C in one of many timed rounds; the terminal closed inside an energy window; SIGTERM while a __del__ runs
#: in a timed round; SIGTERM in the single timed round of an interpreted case; then a second signal while the
#: run file is being written.
CHAIN = ["torch:round:SIGINT", "torch:energy:SIGHUP", "torch:dropped:SIGTERM", "triton:round:SIGTERM",
         "triton:twice:SIGTERM"]


def test_signals_while_measuring_leave_a_run_that_resume_completes(suite, tmp_path):
    """Each signal cuts one session of the run short; resuming after the last completes it."""
    for position, signal_at in enumerate(CHAIN):
        proc = wattbench_run(suite, tmp_path, *(["--resume", str(run_file(tmp_path)[0])] if position else []),
                             signal_at=signal_at)
        path, data = run_file(tmp_path)
        hint = assert_interrupted(proc)
        assert hint.endswith(f"continue it with `wattbench run --resume {path}`"), hint
        block = data["wattbench"]
        assert block["complete"] is False and set(block["planned"]) == CASES
        assert [s["end"] for s in block["segments"]] == ["interrupted"] * (position + 1)
        assert block["segments"][-1]["signal"] == signal_at.split(":")[-1]
        impl = signal_at.split(":")[0]
        assert f"sig.infer-{impl}-fp32-N64" not in recorded(data)  # half-measured: no record, no failure
        assert all(b["stats"]["rounds"] >= 1 for b in data["benchmarks"])
        if position == 0:
            started = block["started_utc"]

    resumed = wattbench_run(suite, tmp_path, "--resume", str(path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _, final = run_file(tmp_path)
    block = final["wattbench"]
    assert block["complete"] is True and recorded(final) == CASES
    assert block["started_utc"] == started  # the first start is kept
    assert [s["end"] for s in block["segments"]] == ["interrupted"] * len(CHAIN) + ["finished"]


def test_a_signal_during_collection_says_nothing_was_measured(suite, tmp_path):
    proc = wattbench_run(suite, tmp_path, signal_at="torch:collect:SIGTERM")
    assert assert_interrupted(proc) == ("wattbench: interrupted before the first benchmark: nothing was measured, "
                                        "nothing to resume")
    assert not list((tmp_path / "runs").glob("*.json"))  # nor a left-over scratch file


def test_a_signal_during_the_report_keeps_the_complete_run_and_says_how_to_report_it(suite, tmp_path):
    proc = wattbench_run(suite, tmp_path, signal_at="torch:report:SIGTERM")
    path, data = run_file(tmp_path)
    hint = assert_interrupted(proc)
    assert f"{path} is complete; write its report with `wattbench report {path} --out " in hint, hint
    assert data["wattbench"]["complete"] is True and recorded(data) == CASES


def test_a_plain_pytest_session_interrupted_in_a_timed_round_keeps_its_run_file(suite, tmp_path):
    run = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(suite), f"--benchmark-json={tmp_path / 'bench.json'}",
                           f"--wattbench-run-file={run}", "--wattbench-device=cpu", *CAPPED_POWER[1:]],
                          capture_output=True, text=True, timeout=300, cwd=suite,
                          env={**os.environ, "WATTBENCH_TEST_SIGNAL": "triton:round:SIGTERM"})
    assert proc.returncode == 2, proc.stdout + proc.stderr  # pytest's "interrupted"
    assert "Traceback" not in proc.stdout + proc.stderr and "min() arg" not in proc.stdout + proc.stderr
    data = json.loads(run.read_text())
    assert data["wattbench"]["complete"] is False
    assert data["wattbench"]["segments"][-1]["signal"] == "SIGTERM"


def test_sigterm_from_outside_at_any_moment_never_gives_a_traceback(suite, tmp_path):
    """An outside signal at a sweep of moments, wherever each lands: exit 130 (or 0 when the run had ended),
    the run file valid whenever one was written. Before Python has started wattbench, SIGTERM just ends it."""
    for delay in (2.0, 4.5):
        out = tmp_path / f"after-{delay}"
        env = {**os.environ, "WATTBENCH_TEST_SIGNAL": ""}
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(suite), "run", "--device", "cpu", "--out",
                                 str(out), "--power-replay", str(suite / "meter.csv"), "--no-report", *SHORT_POWER],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        written = list((out / "runs").glob("*.json")) if (out / "runs").exists() else []
        assert proc.returncode in (0, 130) or (proc.returncode == -signal.SIGTERM and not written), stdout + stderr
        assert "Traceback" not in stdout + stderr, stdout + stderr
        for path in written:
            json.loads(path.read_text())


TRITON_BEFORE_HANDLERS = """
import signal, sys
from wattbench import runner
from wattbench.config import from_command
config, _ = from_command("cpu", "quick", None, [])
before = "triton" in sys.modules
with runner.interrupting(config):
    imported = "triton" in sys.modules
    caught = signal.getsignal(signal.SIGTERM) is runner._interrupt
    from triton.language.standard import cdiv
    from triton.runtime.interpreter import InterpretedFunction
    print(before, imported, caught, isinstance(cdiv, InterpretedFunction))
"""


def test_triton_is_imported_before_a_runs_handlers_go_in_and_after_its_interpreter_is_decided():
    """A KeyboardInterrupt raised while libtriton initialises aborts the process ("Fatal Python error: Aborted";
    4 of 120 SIGTERMs timed over `import triton` did), so a run imports triton before its handlers go in. The
    interpreter must be decided first, since triton reads the switch on import: here, in a process whose
    environment has not decided it, a CPU run's triton is the interpreter's."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", TRITON_BEFORE_HANDLERS], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.stdout.split() == ["False", "True", "True", "True"], done.stdout + done.stderr
