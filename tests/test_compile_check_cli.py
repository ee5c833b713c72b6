"""`wattbench selfcheck compile` on the command line: cli prints the check's report and maps its verdict to the exit
code."""

from __future__ import annotations

import pytest

from wattbench import cli
from wattbench.selfcheck import compilation
from wattbench.selfcheck.compilation import TARGETS, CompileCheck, DriveError, summarize


@pytest.fixture
def checked(monkeypatch):
    """cli's run_check answering with the reports given, recording what it was asked."""
    asked = []

    def answer(reports):
        def run_check(archs, preset, select):
            asked.append((archs, preset, select))
            return CompileCheck(reports, preset, 3.0, 5.0, 2)
        monkeypatch.setattr(compilation, "run_check", run_check)
        return asked
    return answer


def test_a_clean_check_is_printed_and_exits_0(checked, capsys):
    asked = checked([summarize(TARGETS["sm_80"], [], [], {}), summarize(TARGETS["sm_89"], [], [], {})])
    assert cli.main(["selfcheck", "compile", "--arch", "sm_80, sm_89,", "--only", "^api "]) == 0
    assert asked == [(["sm_80", "sm_89"], "full", "^api ")]
    printed = capsys.readouterr().out
    assert printed.startswith("wattbench selfcheck compile: Triton ") and "(preset full)" in printed
    assert "  sm_89: 0 variants of 0 kernels, 0 failed" in printed
    assert printed.endswith("compiled in 3 s with 2 worker processes; the compiles took 5 s of CPU time\n")


def test_a_drive_error_exits_1_and_a_refused_target_does_not(checked, capsys):
    refused = DriveError("api matmul_fp8 row M1 bias=False", "needs 8.9", unsupported=True)
    checked([summarize(TARGETS["sm_80"], [], [refused], {})])
    assert cli.main(["selfcheck", "compile", "--arch", "sm_80", "--preset", "quick"]) == 0
    assert "not on this target: api matmul_fp8" in capsys.readouterr().out
    checked([summarize(TARGETS["sm_80"], [], [refused, DriveError("case", "KeyError: 'x'")], {})])
    assert cli.main(["selfcheck", "compile", "--arch", "sm_80"]) == 1
    assert "DRIVE ERROR: case: KeyError: 'x'" in capsys.readouterr().out


def test_an_unknown_preset_is_refused_in_one_line_before_anything_compiles(capsys):
    assert cli.main(["selfcheck", "compile", "--arch", "sm_80", "--preset", "huge"]) == 2
    captured = capsys.readouterr()
    assert "unknown preset 'huge'" in captured.err and captured.out == "" and "Traceback" not in captured.err

