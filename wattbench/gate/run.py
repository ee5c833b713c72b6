"""Entry points: `wattbench gate` on two files, and the gate at the end of a pytest run.

Both return the GateResult and raise UsageError for bad input; the caller (cli.py, the plugin) prints
the result and maps it to an exit code (`cli.show_gate`).
"""

from __future__ import annotations

from pathlib import Path

from wattbench.errors import UsageError
from wattbench.gate.baseline import describe_run
from wattbench.gate.compare import GateResult, compare_runs
from wattbench.gate.config import load_config
from wattbench.results import check_output_file, load_run


def run_gate(baseline: Path, current: Path, *, time_threshold: str | float | None = None,
             energy_threshold: str | float | None = None, strict: bool = False, force: bool = False,
             markdown_out: Path | None = None, junit_out: Path | None = None,
             config_root: Path = Path(".")) -> GateResult:
    """Gate run file `current` against `baseline`. The report files are checked writable first, so that an
    unwritable one never follows a verdict; writing them is the caller's (gate.output.write_reports)."""
    for path, option in ((markdown_out, "--markdown"), (junit_out, "--junit")):
        if path is not None:
            check_output_file(Path(path), option)
    return gate(load_run(Path(baseline)), load_run(Path(current)), config_root=config_root,
                time_threshold=time_threshold, energy_threshold=energy_threshold, strict=strict, force=force,
                baseline_name=Path(baseline).name, current_name=Path(current).name)


def gate_output_json(output_json: dict, baseline: Path, config_root: Path, *, strict: bool = False,
                     force: bool = False) -> GateResult:
    """Gate the run pytest has just produced (pytest-benchmark's JSON dict with wattbench's block)."""
    if not isinstance(output_json.get("benchmarks"), list) or not isinstance(output_json.get("wattbench"), dict):
        raise UsageError("the pytest run produced no wattbench run data to gate")
    return gate(load_run(Path(baseline)), output_json, config_root=config_root, strict=strict, force=force,
                baseline_name=Path(baseline).name, current_name="this pytest run")


def gate(baseline_run: dict, current_run: dict, *, config_root: Path = Path("."), time_threshold=None,
         energy_threshold=None, strict: bool = False, force: bool = False, baseline_name: str = "baseline",
         current_name: str = "current") -> GateResult:
    """The comparison itself, for callers holding run dicts (the self-check, tests); raises UsageError."""
    config = load_config(Path(config_root)).with_overrides(time=time_threshold, energy=energy_threshold)
    return compare_runs(baseline_run, current_run, config, force=force, strict=strict,
                        baseline_label=describe_run(baseline_run, baseline_name),
                        current_label=describe_run(current_run, current_name))
