"""`wattbench run`: the suites through pytest and pytest-benchmark, into one run file and a table."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import wattbench.suites
from wattbench import results, summary
from wattbench.conditions import throttled_benchmarks
from wattbench.device import INTERPRET_ENV, detect, host_name
from wattbench.errors import UsageError
from wattbench.workloads import check_preset

SUITES_DIR = Path(wattbench.suites.__file__).resolve().parent


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".wattbench-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output folder {str(directory)!r} is not writable: {exc.strerror or exc}") from None


def run_file_name(device_slug: str, when: datetime) -> str:
    return f"{host_name()}_{device_slug}_{when.strftime('%Y%m%dT%H%M%SZ')}.json"


def run(device: str | None, preset: str | None, select: str | None, out: Path, pytest_args: list[str],
        resume: Path | None = None, save_trace: bool = False, power_replay: Path | None = None,
        report: bool = True, specs: Path | None = None) -> int:
    """Run the suites; returns 0 when every benchmark ran, 1 when some failed or the run was cut short.

    `specs` is the user's device spec file, used for MFU during the run and for the report."""
    seed = 0
    if resume:
        block = results.load_run(resume)["wattbench"]
        if block.get("complete"):
            raise UsageError(f"{resume}: this run is complete; there is nothing to resume")
        for name, given in (("device", device), ("preset", preset)):
            if given is not None and given != block.get(name):
                raise UsageError(f"{resume}: was run with --{name} {block.get(name)}, not {given}")
        device, preset, seed = block.get("device"), block.get("preset"), block.get("seed", 0)
        select = select or block.get("select") or None
    preset = preset or "quick"
    chosen = detect(device)
    check_preset(preset)
    runs_dir = resume.parent if resume else out / "runs"
    check_writable(runs_dir)
    if chosen.type == "cpu":
        os.environ.setdefault(INTERPRET_ENV, "1")

    final = resume or runs_dir / run_file_name(chosen.slug, datetime.now(timezone.utc))
    scratch = final.with_name(f".{final.stem}.pytest-benchmark.json")
    trace = final.with_suffix(".trace.csv") if save_trace else None
    if power_replay is not None and not power_replay.is_file():
        raise UsageError(f"power log {str(power_replay)!r} does not exist")
    check_specs(specs)
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
    status = pytest.main(args)
    scratch.unlink(missing_ok=True)

    if status == pytest.ExitCode.NO_TESTS_COLLECTED and resume:
        data = results.load_run(final)
        data["wattbench"]["complete"] = True
        results.write_json_atomic(final, data)
    elif status == pytest.ExitCode.NO_TESTS_COLLECTED:
        what = f"-k {select!r} matches" if select else "the suites hold"
        raise UsageError(f"{what} no benchmark for preset {preset!r} on {chosen.spec}")
    elif status == pytest.ExitCode.USAGE_ERROR:
        raise UsageError("pytest rejected the arguments (see above)")
    if not final.exists():
        print(f"wattbench: no results were written (pytest exit status {int(status)})", file=sys.stderr)
        return 1
    data = finish(final, trace if trace and trace.exists() else None, report, specs)
    if not data["wattbench"].get("complete"):
        print(f"run incomplete: continue it with `wattbench run --resume {final}`")
        return 130 if status == pytest.ExitCode.INTERRUPTED else 1
    return 1 if data["wattbench"]["failed"] else 0


def check_specs(specs: Path | None) -> None:
    """A bad spec file is refused before anything runs, not after the benchmarks."""
    if specs is not None:
        from wattbench.report.specs import load_specs

        load_specs(specs)


def finish(final: Path, trace: Path | None, report: bool, specs: Path | None = None) -> dict:
    """Add the per-watt comparison to a finished run file, print its table, and write its report."""
    data = results.load_run(final)
    data["wattbench"]["summary"] = summary.summarize(data)
    results.write_json_atomic(final, data)
    print()
    print(results.format_table(data))
    print(summary.format_summary(data["wattbench"]["summary"]))
    throttled = throttled_benchmarks(data)
    if throttled:
        print(f"\nwarning: {len(throttled)} benchmark(s) measured while the GPU was throttled (power cap, thermal, "
              f"...): {', '.join(throttled)}")
    print(f"\nrun file: {final}")
    if report and data["benchmarks"]:
        from wattbench.report import write_report

        write_report([final], final.parent.parent / "reports" / final.stem, specs=specs, trace=trace)
    return data
