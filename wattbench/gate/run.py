"""Entry points: `wattbench gate` on two files, and the gate at the end of a pytest run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from wattbench.errors import UsageError
from wattbench.gate.baseline import describe_run
from wattbench.gate.compare import GateResult, compare_runs
from wattbench.gate.config import load_config
from wattbench.gate.output import console_table, write_reports
from wattbench.results import check_output_file, load_run


def run_gate(baseline: Path, current: Path, *, time_threshold: str | float | None = None,
             energy_threshold: str | float | None = None, strict: bool = False, force: bool = False,
             markdown_out: Path | None = None, junit_out: Path | None = None, config_root: Path = Path("."),
             write: Callable[[str], None] = print) -> int:
    """Gate run file `current` against `baseline`: 0 no regression, 1 regression, 2 bad input (one line on stderr)."""
    return _gated(lambda: (load_run(Path(baseline)), Path(baseline).name, load_run(Path(current)), Path(current).name),
                  time_threshold=time_threshold, energy_threshold=energy_threshold, strict=strict, force=force,
                  markdown_out=markdown_out, junit_out=junit_out, config_root=config_root, write=write)


def gate_output_json(output_json: dict, baseline: Path, config_root: Path, *, strict: bool = False,
                     force: bool = False, markdown_out: Path | None = None, junit_out: Path | None = None,
                     write: Callable[[str], None] = print) -> int:
    """Gate the run pytest has just produced (pytest-benchmark's JSON dict with wattbench's block)."""
    def inputs():
        if not isinstance(output_json.get("benchmarks"), list) or not isinstance(output_json.get("wattbench"), dict):
            raise UsageError("the pytest run produced no wattbench run data to gate")
        return load_run(Path(baseline)), Path(baseline).name, output_json, "this pytest run"

    return _gated(inputs, strict=strict, force=force, markdown_out=markdown_out, junit_out=junit_out,
                  config_root=config_root, write=write)


def gate(baseline_run: dict, current_run: dict, *, config_root: Path = Path("."), time_threshold=None,
         energy_threshold=None, strict: bool = False, force: bool = False, baseline_name: str = "baseline",
         current_name: str = "current") -> GateResult:
    """The comparison itself, for callers holding run dicts (the self-check, tests); raises UsageError."""
    config = load_config(Path(config_root)).with_overrides(time=time_threshold, energy=energy_threshold)
    return compare_runs(baseline_run, current_run, config, force=force, strict=strict,
                        baseline_label=describe_run(baseline_run, baseline_name),
                        current_label=describe_run(current_run, current_name))


def _gated(inputs, *, markdown_out, junit_out, write, **options) -> int:
    try:
        for path, option in ((markdown_out, "--markdown"), (junit_out, "--junit")):
            if path is not None:
                check_output_file(Path(path), option)  # before the comparison, whose verdict it would hide
        baseline_run, baseline_name, current_run, current_name = inputs()
        result = gate(baseline_run, current_run, baseline_name=baseline_name, current_name=current_name, **options)
        write(console_table(result))
        write_reports(result, markdown_out, junit_out)
    except UsageError as exc:
        print(f"wattbench: error: {exc}", file=sys.stderr)
        return 2
    return result.exit_code
