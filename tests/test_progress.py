"""Progress lines with the time left (wattbench.progress): the ETA's arithmetic, the lines, and a run's output."""

import re
import subprocess
import sys

import pytest

from wattbench.progress import Progress, bar, remaining_s


def test_the_rest_of_the_plan_is_scaled_by_how_the_finished_part_compared_with_its_plan():
    assert remaining_s(estimated_done=10.0, measured_done=20.0, estimated_left=30.0) == 60.0
    assert remaining_s(estimated_done=10.0, measured_done=5.0, estimated_left=30.0) == 15.0
    assert remaining_s(estimated_done=0.0, measured_done=0.0, estimated_left=30.0) == 30.0  # nothing measured yet


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_each_benchmark_gets_a_line_and_the_estimate_follows_what_was_measured():
    clock, lines = Clock(), []
    progress = Progress({"a": 2.0, "b": 4.0, "c": 4.0}, lines.append, clock=clock, before_first_s=1.0)
    progress.start()
    progress.measured({"median_s": 0.001, "energy": {"joules_per_call": 0.5}})
    clock.now += 6.0
    progress.finish("a")
    # planned 2 s + the 1 s idle baseline before it, took 6 s: the rest's 8 s take twice as long
    assert progress.remaining_s() == 16.0
    assert lines[-1] == "[1/3] a: 6.0 s, 1 ms/call, 0.5 J/call; ~16 s left"
    progress.start()
    progress.outcome = "skipped"
    clock.now += 1.0
    progress.finish("b")
    assert progress.remaining_s() == pytest.approx(4.0 * 7.0 / 7.0)
    assert lines[-1] == "[2/3] b: 1.0 s, skipped; ~4.0 s left"
    progress.start()
    progress.measured({"median_s": 0.02, "energy": {"reason": "no power source"}})
    clock.now += 3.0
    progress.finish("c")
    assert lines[-1] == "[3/3] c: 3.0 s, 20 ms/call, no energy; done"
    progress.finish("c")  # a second teardown report of the same case writes nothing
    assert len(lines) == 3


def test_a_terminal_gets_a_bar_and_a_ci_log_plain_lines():
    lines = []
    progress = Progress({"a": 1.0, "b": 1.0}, lines.append, interactive=True, clock=Clock())
    progress.start()
    progress.finish("a")
    assert lines == [f"{bar(1, 2)} [1/2] a: 0.0 s; ~1.0 s left"]
    assert bar(1, 2, width=4) == "[##..]" and bar(0, 0, width=2) == "[##]"


def test_a_run_prints_one_progress_line_per_benchmark(tmp_path):
    run = subprocess.run([sys.executable, "-m", "wattbench.cli", "run", "--device", "cpu", "--no-report", "--out",
                          str(tmp_path), "-k", "rms_norm.infer and torch", "--", "--wattbench-idle=0",
                          "--wattbench-energy-window=0.1", "--wattbench-energy-repeats=1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = re.findall(r"^\[(\d)/(\d)\] (rms_norm\.infer-torch\S+): [\d.]+ s, .*ms/call.*; (.*)$", run.stdout,
                       re.MULTILINE)
    assert [(done, total) for done, total, _, _ in lines] == [("1", "2"), ("2", "2")]
    assert re.fullmatch(r"~.+ left", lines[0][3]) and lines[1][3] == "done"
    assert "[#" not in run.stdout  # not a terminal: no bar
