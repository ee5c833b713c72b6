"""`wattbench sweep`: the selected benchmarks once per device setting (power limit, locked clock), into one run file.

The plan (wattbench.power.knobs.plan_sweep) is checked before anything runs. Each setting, the default first, is
applied and settled in a KnobSession, then the suites run in this process as `wattbench run` runs them
(runner.run_suites), with the RunConfig naming the setting (every record's identity holds it) and reading the
settings back over each energy window (PowerMonitor's readback); the setting is put back before the next. Each
setting writes its own run file in `.RUN.settings/` beside the sweep's; they are merged into RUN whatever ends the
sweep (its end, an error, Ctrl-C, SIGTERM), so no measured record is lost, and the KnobSession puts the originals
back on every one of those paths.

A sweep cut short continues with `wattbench sweep --resume RUN`: RUN names the settings it planned (re-planned and
checked against the device as at the start), the settings whose benchmarks all ran are kept, the one cut short
continues its own run file as `wattbench run --resume` would, and the rest run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from wattbench import results, runner
from wattbench.config import RunConfig, run_file_name
from wattbench.errors import UsageError
from wattbench.estimate import duration
from wattbench.journal import RunJournal
from wattbench.power.knobs import KNOBS, KnobError, KnobSession, Setting, SweepPlan
from wattbench.record import Record
from wattbench.results import check_output_file


@dataclass
class Measured:
    """One setting's part of the sweep: its run file and how long the setting took to settle."""

    setting: Setting
    settle_s: float
    path: Path


def sweep_file(config: RunConfig, out: Path, when: datetime) -> Path:
    """OUT/runs/HOST_DEVICE-sweep_TIME.json."""
    return out / "runs" / run_file_name(f"{config.device.slug}-sweep", when)


def run_sweep(config: RunConfig, plan: SweepPlan, pytest_args: list[str], out: Path, report: bool = True,
              state_path: Path | None = None, resume: Path | None = None) -> int:
    """Run `config`'s benchmarks once per setting of `plan` (see the module docstring); `resume`: the run file of
    the sweep to continue (`plan` must be the one it recorded, see `resumed_plan`). Returns 0 when every setting
    ran every benchmark, 1 when something failed or did not take effect, runner.INTERRUPTED (130) when a signal
    cut the sweep short; the run file holds every record measured either way."""
    final = resume or sweep_file(config, out, datetime.now(timezone.utc))
    check_output_file(final, "the sweep's run file")
    parts_dir = settings_dir(final)
    measured = list(finished_settings(final, plan, config).values()) if resume else []
    kept = {part.setting.id for part in measured}
    resume_with = f"wattbench sweep --resume {final}"
    status, interrupted, failure = 0, False, None
    took: list[float] = []  # each setting's wall time in this session: the pace of the rest
    try:
        with runner.interrupting(config), KnobSession(plan, state_path) as session:
            for number, setting in enumerate(plan.settings, start=1):
                if setting.id in kept:
                    print(f"wattbench sweep: setting {number}/{len(plan.settings)}: {setting.id}: kept from the "
                          "run being resumed", flush=True)
                    continue
                to_run = [s for s in plan.settings[number - 1:] if s.id not in kept]
                pace = f" (~{duration(len(to_run) * sum(took) / len(took))} left in the sweep at its pace so far)" \
                    if took else ""
                print(f"wattbench sweep: setting {number}/{len(plan.settings)}: {setting.id}{pace}", flush=True)
                part = parts_dir / f"{setting.id}.json"
                started = time.monotonic()
                try:
                    with session.applied(setting) as applied:
                        own = replace(config.writing_to(part), setting=setting.id, readback=applied.readback,
                                      resume=part.exists())
                        code = runner.run_suites(own, pytest_args, report=False, resume_with=resume_with)
                except KnobError as err:
                    if session.interrupted:
                        raise KeyboardInterrupt(session.interrupted) from None
                    if part.exists():  # measured, but the setting could not be put back: no further setting
                        measured.append(Measured(setting, applied.settle_s, part))
                        raise
                    failure = f"{setting.id}: {err}"
                    print(f"wattbench: error: {failure}; going on with the next setting", file=sys.stderr)
                    status = 1
                    continue
                if part.exists():
                    measured.append(Measured(setting, applied.settle_s, part))
                took.append(time.monotonic() - started)
                if code == runner.INTERRUPTED:
                    interrupted = True
                    break
                status = max(status, code)
    except KeyboardInterrupt:
        interrupted = True
    except KnobError as err:  # the session could not put a setting back (and said how to, its state file kept)
        print(f"wattbench: error: {err}", file=sys.stderr)
        status = 1
    finally:
        if measured:
            results.write_json_atomic(final, merge_settings(measured, plan))
    return _finish(final, measured, plan, config, interrupted, status, report, failure, resume_with)


def settings_dir(final: Path) -> Path:
    """Where the sweep writing `final` keeps each setting's own run file."""
    return final.parent / f".{final.stem}.settings"


def plan_arguments(plan: SweepPlan) -> dict[str, str]:
    """The plan_sweep arguments that plan `plan` again, e.g. {"sm_clocks": "1200,1500"} (kept in the run file)."""
    arguments: dict[str, list[str]] = {}
    for setting in plan.settings:
        if setting.knob is not None:
            arguments.setdefault(KNOBS[setting.knob].argument, []).append(str(setting.value))
    return {argument: ",".join(values) for argument, values in arguments.items()}


def resumed_plan(final: Path) -> dict[str, str]:
    """The plan_sweep arguments of the sweep cut short in `final` (see plan_arguments); a one-line UsageError when
    it is not a sweep's run file, is complete, or its settings' own run files are gone."""
    block = results.load_run(final)["wattbench"]
    sweep = block.get("sweep")
    if sweep is None:
        raise UsageError(f"{final}: not a sweep's run file: continue a run with `wattbench run --resume {final}`")
    if block.get("complete"):
        raise UsageError(f"{final}: this sweep is complete; there is nothing to resume")
    if "arguments" not in sweep:
        raise UsageError(f"{final}: written by a wattbench whose sweeps cannot be resumed: run the sweep again")
    if not settings_dir(final).is_dir():
        raise UsageError(f"{final}: the settings' own run files ({settings_dir(final)}) are gone: run the sweep again")
    return sweep["arguments"]


def finished_settings(final: Path, plan: SweepPlan, config: RunConfig) -> dict[str, Measured]:
    """The settings of the sweep in `final` whose run files hold every benchmark they planned, by id. `plan`
    must be the sweep's own, and every setting's run file one that `config` continues (the same preset, seed,
    selection and timing options): a one-line UsageError otherwise, before any setting changes."""
    sweep = results.load_run(final)["wattbench"]["sweep"]
    if sweep["planned"] != [setting.id for setting in plan.settings]:
        raise UsageError(f"{final}: this sweep planned {', '.join(sweep['planned'])}, not "
                         f"{', '.join(setting.id for setting in plan.settings)}: resume it with the same settings")
    settle_s = {each["id"]: each.get("settle_s") for each in sweep["settings"]}
    finished = {}
    for setting in plan.settings:
        part = settings_dir(final) / f"{setting.id}.json"
        if not part.exists():
            continue
        journal = RunJournal(part, resume=True)
        journal.check_resumable(config)
        if setting.id in settle_s and runs_everything(journal):
            finished[setting.id] = Measured(setting, settle_s[setting.id], part)
    return finished


def runs_everything(journal: RunJournal) -> bool:
    """Whether a setting's run file holds a record (or a failure, or a skip) of every benchmark it planned."""
    block = journal.previous_block
    return bool(block.get("complete")) or set(block.get("planned") or []) <= journal.completed_cases


def _finish(final: Path, measured: list[Measured], plan: SweepPlan, config: RunConfig, interrupted: bool,
            status: int, report: bool, failure: str | None, resume_with: str) -> int:
    if not measured:
        print("wattbench: the sweep ended before any setting was measured: nothing was written", file=sys.stderr)
        return runner.INTERRUPTED if interrupted else 1
    data = runner.finish(final, None, report and not interrupted, config.specs)
    done = [part.setting.id for part in measured]
    missing = [setting.id for setting in plan.settings if setting.id not in done]
    if interrupted or missing:
        how = "interrupted" if interrupted else "incomplete"
        print(f"wattbench: sweep {how}: {len(done)} of {len(plan.settings)} settings recorded in {final} "
              f"({', '.join(done)}); not measured: {', '.join(missing) or 'none'}; the device settings are put "
              f"back; continue it with `{resume_with}`", file=sys.stderr)
    if failure:
        print(f"wattbench: a setting did not take effect: {failure}", file=sys.stderr)
    if interrupted:
        return runner.INTERRUPTED
    return max(status, 1 if missing or data["wattbench"].get("failed") else 0)


def merge_settings(measured: list[Measured], plan: SweepPlan) -> dict:
    """One run file from the settings' run files: every record names its setting (its identity holds it), the
    run block lists the settings with how long each took to settle and the knobs' valid ranges and originals,
    and is complete only when every setting ran every benchmark."""
    order = [setting.id for setting in plan.settings]
    parts = [(part, results.load_run(part.path)) for part in sorted(measured, key=lambda m: order.index(m.setting.id))]
    first = parts[0][1]
    merged = {key: value for key, value in first.items() if key not in ("benchmarks", "wattbench")}
    merged["benchmarks"] = []
    for part, data in parts:
        for bench in data["benchmarks"]:
            setting = Record.from_json(bench["extra_info"]).setting_id
            merged["benchmarks"].append({**bench, "fullname": f"{bench.get('fullname', bench.get('name'))}@{setting}"})
    blocks = [(part, data["wattbench"]) for part, data in parts]
    merged["wattbench"] = {
        **first["wattbench"],
        "ended_utc": blocks[-1][1].get("ended_utc"),
        "complete": len(parts) == len(plan.settings) and all(block.get("complete") for _, block in blocks),
        "failed": [{**failed, "setting": part.setting.id} for part, block in blocks for failed in block.get("failed", [])],
        "skipped": [{**skipped, "setting": part.setting.id} for part, block in blocks
                    for skipped in block.get("skipped", [])],
        "sweep": {
            "planned": order,
            "arguments": plan_arguments(plan),
            "knobs": [control.describe() for control in plan.controls.values()],
            "settings": [{**part.setting.describe(), "settle_s": part.settle_s,
                          **{key: block.get(key) for key in ("complete", "started_utc", "ended_utc", "power")}}
                         for part, block in blocks],
        },
    }
    return merged
