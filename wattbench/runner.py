"""`wattbench run`: the suites through pytest and pytest-benchmark, into one run file and a table."""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

import wattbench.suites
from wattbench import plugin, results, summary
from wattbench.conditions import throttled_benchmarks
from wattbench.device import INTERPRET_ENV, detect, host_name
from wattbench.errors import UsageError
from wattbench.journal import recorded_cases
from wattbench.power.replay import check_log
from wattbench.results import check_writable
from wattbench.workloads import check_preset

SUITES_DIR = Path(wattbench.suites.__file__).resolve().parent

#: The exit code of a run that a signal (Ctrl-C, SIGTERM, SIGHUP) cut short: 128 + SIGINT, as shells report it.
INTERRUPTED = 130


def run_file_name(device_slug: str, when: datetime) -> str:
    return f"{host_name()}_{device_slug}_{when.strftime('%Y%m%dT%H%M%SZ')}.json"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(*args, **kwargs) -> int:
    """Run the suites (see `run_suites`), with SIGTERM (a scheduler's time limit, `kill`) and SIGHUP (the
    terminal closed) ending it like Ctrl-C; a signal the process ignores (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return run_suites(*args, **kwargs)
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        return run_suites(*args, **kwargs)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_suites(device: str | None, preset: str | None, select: str | None, out: Path, pytest_args: list[str],
               resume: Path | None = None, save_trace: bool = False, power_replay: Path | None = None,
               report: bool = True, specs: Path | None = None) -> int:
    """Run the suites; returns 0 when every benchmark ran, 1 when some failed or the run stopped early,
    INTERRUPTED (130) when a signal cut it short; bad input raises UsageError before anything runs.

    `specs` is the user's device spec file, used for MFU during the run and for the report."""
    seed = 0
    if resume:
        block = results.load_run(resume)["wattbench"]
        if block.get("complete"):
            raise UsageError(f"{resume}: this run is complete; there is nothing to resume")
        for name, given in (("--device", device), ("--preset", preset), ("-k", select)):
            recorded = block.get({"-k": "select"}.get(name, name.lstrip("-"))) or None
            if given is not None and given != recorded:
                was = f"with {name} {recorded}" if recorded else f"without {name}"
                raise UsageError(f"{resume}: was run {was}, not {name} {given}: resume it with the same selection")
        device, preset, seed = block.get("device"), block.get("preset"), block.get("seed", 0)
        select = block.get("select") or None
    preset = preset or "quick"
    chosen = detect(device)
    check_preset(preset)
    if select:
        check_select(select)
    runs_dir = resume.parent if resume else out / "runs"
    check_writable(runs_dir)
    plugin.check_arguments(pytest_args)
    if power_replay is not None:
        check_log(power_replay)
    check_specs(specs)
    if chosen.type == "cpu":
        os.environ.setdefault(INTERPRET_ENV, "1")

    final = resume or runs_dir / run_file_name(chosen.slug, datetime.now(timezone.utc))
    scratch = final.with_name(f".{final.stem}.pytest-benchmark.json")
    trace = final.with_suffix(".trace.csv") if save_trace else None
    args = [str(SUITES_DIR), "-p", "no:cacheprovider", "--rootdir", str(SUITES_DIR), "-o", "addopts=",
            "-v", "--no-header", "--benchmark-quiet",
            "-W", "ignore::pytest_benchmark.logger.PytestBenchmarkWarning", f"--benchmark-json={scratch}",
            "--wattbench-run-file", str(final), "--wattbench-device", chosen.spec, "--wattbench-preset", preset,
            "--wattbench-seed", str(seed), *(["--wattbench-resume"] if resume else []),
            *(["--wattbench-save-trace", str(trace)] if trace else []),
            *(["--wattbench-power-replay", str(power_replay)] if power_replay else []),
            *(["--wattbench-specs", str(specs)] if specs else []), *pytest_args]
    if select:
        args += ["-k", select]
    print(f"wattbench: {preset} preset on {chosen.spec} ({chosen.name})"
          + (f", resuming {final}" if resume else ""), flush=True)
    try:
        status = pytest.main(args)
    except KeyboardInterrupt:  # a signal outside the session's own handling (while pytest starts or ends)
        status = pytest.ExitCode.INTERRUPTED
    finally:
        scratch.unlink(missing_ok=True)

    if status == pytest.ExitCode.NO_TESTS_COLLECTED and not resume:
        what = f"-k {select!r} matches" if select else "the suites hold"
        raise UsageError(f"{what} no benchmark for preset {preset!r} on {chosen.spec}")
    if status == pytest.ExitCode.USAGE_ERROR:
        raise UsageError("pytest rejected the arguments (see above)")
    interrupted = status == pytest.ExitCode.INTERRUPTED
    if not final.exists():
        if interrupted:
            print("wattbench: interrupted before the first benchmark: nothing was measured, nothing to resume",
                  file=sys.stderr)
            return INTERRUPTED
        print(f"wattbench: no results were written (pytest exit status {int(status)})", file=sys.stderr)
        return 1
    try:
        data = finish(final, trace if trace and trace.exists() else None, report and not interrupted, specs)
    except KeyboardInterrupt:
        interrupted, data = True, results.load_run(final)
    return outcome(final, data, interrupted, report_dir_for(final) if report else None,
                   pytest_failed=status not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED))


def outcome(final: Path, data: dict, interrupted: bool, report_dir: Path | None, pytest_failed: bool) -> int:
    """The exit code of a run that wrote its run file, with what to do next when it was cut short.
    `pytest_failed`: pytest's own exit status was not a success (e.g. an internal error after the last write)."""
    block = data["wattbench"]
    if not block.get("complete"):
        planned = set(block.get("planned") or [])
        done = len(planned & recorded_cases(data["benchmarks"], block.get("failed", []), block.get("skipped", [])))
        how = "interrupted" if interrupted else "incomplete"
        print(f"wattbench: run {how}: {done} of {len(planned)} benchmarks recorded in {final}; continue it with "
              f"`wattbench run --resume {final}`", file=sys.stderr)
        return INTERRUPTED if interrupted else 1
    if interrupted:
        after = f"; write its report with `wattbench report {final} --out {report_dir}`" if report_dir else ""
        print(f"wattbench: interrupted after the run completed: {final} is complete{after}", file=sys.stderr)
        return INTERRUPTED
    return 1 if block.get("failed") or pytest_failed else 0


def check_select(select: str) -> None:
    """A -k expression pytest cannot parse, refused in one line before pytest starts."""
    from _pytest.mark.expression import Expression  # pytest's own -k parser

    try:
        Expression.compile(select)
    except Exception as exc:  # pytest raises SyntaxError (9.x) or its own ParseError (7.x, 8.x)
        raise UsageError(f"-k {select!r} is not a valid expression: {getattr(exc, 'msg', None) or exc}") from None


def check_specs(specs: Path | None) -> None:
    """A bad spec file is refused before anything runs, not after the benchmarks."""
    if specs is not None:
        from wattbench.specs import load_specs

        load_specs(specs)


def report_dir_for(final: Path) -> Path:
    """Where the report of run file RUNS/NAME.json goes: REPORTS/NAME beside RUNS."""
    return final.parent.parent / "reports" / final.stem


def finish(final: Path, trace: Path | None, report: bool, specs: Path | None = None) -> dict:
    """Add the per-watt comparison to a finished run file, print its table, and write its report."""
    data = results.load_run(final)
    block = data["wattbench"]
    if not (data["benchmarks"] or block.get("failed") or block.get("skipped")):
        return data  # cut short before anything was recorded: nothing to show
    data["wattbench"]["summary"] = summary.summarize(data)
    results.write_json_atomic(final, data)
    print()
    print(results.format_table(data))
    print(summary.format_summary(data["wattbench"]["summary"]))
    throttled = throttled_benchmarks(data)
    if throttled:
        print(f"\nwarning: {len(throttled)} benchmark(s) measured while the GPU was throttled (power cap, thermal, "
              f"...): {', '.join(throttled)}")
    unsteady = results.disagreeing_benchmarks(data)
    if unsteady:
        print(f"\nwarning: {len(unsteady)} benchmark(s) measured the same call inconsistently (other load, threads "
              "contending for the cores, throttling): their medians are not stable figures")
        for case, how in unsteady:
            print(f"  {case}: {'; '.join(how)}")
    print(f"\nrun file: {final}")
    if report and data["benchmarks"]:
        from wattbench.report import write_report

        write_report([final], report_dir_for(final), specs=specs, trace=trace, force=True)  # its own folder
    return data
