"""`wattbench run`: the suites through pytest and pytest-benchmark, into one run file and a table."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import wattbench.suites
from wattbench import results
from wattbench.device import INTERPRET_ENV, detect, host_name
from wattbench.errors import UsageError
from wattbench.workloads import PRESETS

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


def run(device: str | None, preset: str, select: str | None, out: Path, pytest_args: list[str]) -> int:
    """Run the suites; returns 0 when every benchmark ran, 1 when some failed, 2 on bad input."""
    chosen = detect(device)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    runs_dir = out / "runs"
    check_writable(runs_dir)
    if chosen.type == "cpu":
        os.environ.setdefault(INTERPRET_ENV, "1")

    final = runs_dir / run_file_name(chosen.slug, datetime.now(timezone.utc))
    partial = final.with_name(f".{final.stem}.partial.json")
    args = [str(SUITES_DIR), "-p", "no:cacheprovider", "--rootdir", str(SUITES_DIR), "-o", "addopts=",
            "-v", "--no-header", "--benchmark-quiet",
            "-W", "ignore::pytest_benchmark.logger.PytestBenchmarkWarning", f"--benchmark-json={partial}",
            "--wattbench-device", chosen.spec, "--wattbench-preset", preset, *pytest_args]
    if select:
        args += ["-k", select]
    print(f"wattbench: {preset} preset on {chosen.spec} ({chosen.name})", flush=True)
    status = pytest.main(args)

    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        partial.unlink(missing_ok=True)
        what = f"-k {select!r} matches" if select else "the suites hold"
        raise UsageError(f"{what} no benchmark for preset {preset!r} on {chosen.spec}")
    if status == pytest.ExitCode.USAGE_ERROR:
        partial.unlink(missing_ok=True)
        raise UsageError("pytest rejected the arguments (see above)")
    if not partial.exists() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        print(f"wattbench: no results were written (pytest exit status {int(status)})", file=sys.stderr)
        return 1
    data = results.load_run(partial)
    results.write_json_atomic(final, data)
    partial.unlink()

    print()
    print(results.format_table(data))
    print(f"\nrun file: {final}")
    incomplete = not data["wattbench"].get("complete", False)
    return 1 if data["wattbench"]["failed"] or incomplete or status != pytest.ExitCode.OK else 0
