"""`wattbench run`: the suites through pytest and pytest-benchmark, into one run file and a table."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

import wattbench.suites
from wattbench import results, summary
from wattbench.conditions import throttled_benchmarks
from wattbench.config import RunConfig, run_file_name
from wattbench.errors import UsageError
from wattbench.journal import recorded_cases
from wattbench.signals import Handlers, SignalInterrupt
from wattbench.specs import SpecTable

SUITES_DIR = Path(wattbench.suites.__file__).resolve().parent

#: The exit code of a run that a signal (Ctrl-C, SIGTERM, SIGHUP) cut short: 128 + SIGINT, as shells report it.
INTERRUPTED = 130


def placed(config: RunConfig, out: Path, save_trace: bool = False) -> RunConfig:
    """`config` writing its run file to OUT/runs/HOST_DEVICE_TIME.json (a resumed run: its own file), with the
    power trace beside it when `save_trace`."""
    final = Path(config.run_file) if config.resume else out / "runs" / run_file_name(
        config.device.slug, datetime.now(timezone.utc))
    return config.writing_to(final, final.with_suffix(".trace.csv") if save_trace else None)


def _interrupt(signum, frame):
    raise SignalInterrupt(signum)


@contextmanager
def interrupting(config: RunConfig):
    """SIGTERM (a scheduler's time limit, `kill`) and SIGHUP (the terminal closed) end what runs inside like
    Ctrl-C (a KeyboardInterrupt); a signal the process ignores (nohup) stays ignored. Triton is set up for
    `config` first (see RunConfig.set_up_triton): a signal while it loads ends the process as it would have."""
    config.set_up_triton()
    handlers = Handlers(_interrupt)
    handlers.install()
    try:
        yield
    finally:
        handlers.restore()


def run(config: RunConfig, *args, **kwargs) -> int:
    """Run the suites (see `run_suites`), `interrupting`: SIGTERM and SIGHUP end it like Ctrl-C."""
    with interrupting(config):
        return run_suites(config, *args, **kwargs)


def run_suites(config: RunConfig, pytest_args: list[str], report: bool = True, resume_with: str | None = None) -> int:
    """Run the suites in this process, handing pytest `config` (which names its run file, see `placed`);
    `pytest_args` are further pytest arguments (no run options: they are in `config`). Returns 0 when every
    benchmark ran, 1 when some failed or the run stopped early, INTERRUPTED (130) when a signal cut it short.
    A run cut short says how to continue it: `resume_with` (a sweep's command), else `wattbench run --resume`.

    The user's spec table (`config.specs`, read once from `config.specs_path`) is used for MFU during the run
    and for the report."""
    from wattbench.plugin import GivenConfig

    final = Path(config.run_file)
    scratch = final.with_name(f".{final.stem}.pytest-benchmark.json")
    trace = Path(config.save_trace) if config.save_trace else None
    args = [str(SUITES_DIR), "-p", "no:cacheprovider", "--rootdir", str(SUITES_DIR), "-o", "addopts=",
            "-v", "--no-header", "--benchmark-quiet",
            "-W", "ignore::pytest_benchmark.logger.PytestBenchmarkWarning", f"--benchmark-json={scratch}",
            *pytest_args, *(["-k", config.keyword] if config.keyword else [])]
    print(f"wattbench: {config.preset} preset on {config.device.spec} ({config.device.name})"
          + (f", resuming {final}" if config.resume else ""), flush=True)
    try:
        status = pytest.main(args, plugins=[GivenConfig(config)])
    except KeyboardInterrupt:  # a signal outside the session's own handling (while pytest starts or ends)
        status = pytest.ExitCode.INTERRUPTED
    finally:
        scratch.unlink(missing_ok=True)

    if status == pytest.ExitCode.NO_TESTS_COLLECTED and not config.resume:
        what = f"-k {config.keyword!r} matches" if config.keyword else "the suites hold"
        raise UsageError(f"{what} no benchmark for preset {config.preset!r} on {config.device.spec}")
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
        data = finish(final, trace if trace and trace.exists() else None, report and not interrupted, config.specs)
    except KeyboardInterrupt:
        interrupted, data = True, results.load_run(final)
    return outcome(final, data, interrupted, report_dir_for(final) if report else None,
                   pytest_failed=status not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED),
                   resume_with=resume_with or f"wattbench run --resume {final}")


def outcome(final: Path, data: dict, interrupted: bool, report_dir: Path | None, pytest_failed: bool,
            resume_with: str) -> int:
    """The exit code of a run that wrote its run file, with what to do next when it was cut short (the command
    `resume_with`). `pytest_failed`: pytest's own exit status was not a success (e.g. an internal error after
    the last write)."""
    block = data["wattbench"]
    if not block.get("complete"):
        planned = set(block.get("planned") or [])
        done = len(planned & recorded_cases(data["benchmarks"], block.get("failed", []), block.get("skipped", [])))
        how = "interrupted" if interrupted else "incomplete"
        print(f"wattbench: run {how}: {done} of {len(planned)} benchmarks recorded in {final}; continue it with "
              f"`{resume_with}`", file=sys.stderr)
        return INTERRUPTED if interrupted else 1
    if interrupted:
        after = f"; write its report with `wattbench report {final} --out {report_dir}`" if report_dir else ""
        print(f"wattbench: interrupted after the run completed: {final} is complete{after}", file=sys.stderr)
        return INTERRUPTED
    return 1 if block.get("failed") or pytest_failed else 0


def report_dir_for(final: Path) -> Path:
    """Where the report of run file RUNS/NAME.json goes: REPORTS/NAME beside RUNS."""
    return final.parent.parent / "reports" / final.stem


def finish(final: Path, trace: Path | None, report: bool, specs: SpecTable | None = None) -> dict:
    """Add the per-watt comparison to a finished run file, print its table, and write its report (with the spec
    table the run loaded, `RunConfig.specs`; None: the shipped one)."""
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
        from wattbench.cli import show_report
        from wattbench.report import write_report

        written = write_report([final], report_dir_for(final), specs=specs, trace=trace, force=True)  # its own folder
        show_report(written)
    return data
