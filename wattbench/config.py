"""A run's settings, made once: `RunConfig`, from `wattbench run`'s flags or from the `--wattbench-*` pytest options.

Every run option is declared once, in `OPTIONS`: its pytest flag (which `wattbench run` also takes after `--`),
its bounds and the RunConfig field it fills. pytest's option list (`add_options`), the checks and the
builder (`from_options`) all derive from it, so a new run option is one RunConfig field plus one `Option`.
`wattbench run` builds the config (`from_command`) and hands it to pytest in-process; the workers of
`--devices` receive it as JSON (`to_json`/`from_json`), never rebuilt from flags.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from wattbench.device import INTERPRET_ENV, Device, detect, host_name
from wattbench.errors import UsageError
from wattbench.measure import Settings
from wattbench.power import PowerConfig
from wattbench.results import check_output_file
from wattbench.specs import load_specs
from wattbench.timing import TimingPlan
from wattbench.workloads import RUN_PRESETS, check_preset

#: The JSON form of a RunConfig, as a worker of `wattbench run --devices` receives it.
CONFIG_FORMAT = "wattbench-run-config/1"

#: RunConfig fields a worker does not receive as JSON: the spec table is read again from its file, and a sweep's
#: readback lives in the sweep's process (a sweep runs in-process, never through --devices workers).
NOT_JSON = ("specs", "readback")

#: Upper bounds that keep a mistyped value from becoming a run that never ends (or a sleep that overflows).
MAX_SECONDS = 3600.0
MAX_REPEATS = 100
MAX_DEGREES = 100.0
#: Seconds of timed rounds per benchmark when --wattbench-min-time is not given, per preset.
DEFAULT_MIN_TIME_S = {"quick": 0.2, "full": 1.0}


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one run, checked: the device resolved, the preset known, every input file read and
    every output path proven writable. `plan` and `power` are the timing and energy-window settings the
    options give (the rest keep those classes' defaults)."""

    device: Device
    plan: TimingPlan = TimingPlan()
    power: PowerConfig = PowerConfig()
    preset: str = "quick"
    seed: int = 0
    #: The pytest -k expression selecting the benchmarks ("" for all); the run file's key is "select".
    keyword: str = ""
    #: torch's intra-op CPU threads; None: the default of wattbench.threads.choose_cpu_threads on a CPU run.
    cpu_threads: int | None = None
    #: The user's device spec file (wattbench-device-specs/1) for MFU; None: the shipped table.
    specs_path: str | None = None
    #: The run file kept current after every benchmark; None: only pytest-benchmark's JSON.
    run_file: str | None = None
    resume: bool = False
    #: Where the run's power trace is written (CSV); None: not kept.
    save_trace: str | None = None
    #: A baseline run file to gate this run against at the end of a plain pytest session.
    gate: str | None = None
    #: Decode-style steps run eagerly on a GPU, not as CUDA graph replays.
    eager_decode: bool = False
    #: The model every transformer case runs (a MODEL_CONFIGS name or a JSON config file); None: each case's own.
    model: str | None = None
    #: A power sweep's setting (wattbench.power.knobs.Setting.id), named in every record; None outside a sweep.
    setting: str | None = None
    #: The spec table read from `specs_path` (once, by the builder); None: the shipped table.
    specs: Any = field(default=None, compare=False, repr=False)
    #: Reads a sweep's settings back over each energy window (knobs.Applied.readback); None outside a sweep.
    readback: Callable[[], dict] | None = field(default=None, compare=False, repr=False)

    @property
    def measuring(self) -> Settings:
        """The part of the run that measuring one case needs."""
        return Settings(device=self.device, plan=self.plan, seed=self.seed, specs=self.specs, preset=self.preset,
                        eager_decode=self.eager_decode, setting=self.setting)

    def writing_to(self, run_file: Path, trace: Path | None = None) -> RunConfig:
        """This run writing its run file (and its power trace) at paths `wattbench run` chose, checked."""
        check_output_file(run_file, "the run file")
        if trace is not None:
            check_output_file(trace, "the power trace")
        return replace(self, run_file=str(run_file), save_trace=None if trace is None else str(trace),
                       power=replace(self.power, save_trace=trace is not None))

    def set_up_triton(self) -> None:
        """Triton as this run needs it, before anything imports it: on a CPU its interpreter, the only way it
        runs there (unless the user has decided); then triton itself imported, which reads that switch.

        A run calls this before it puts its signal handlers in: a KeyboardInterrupt raised while libtriton
        initialises ends in std::terminate (a nanobind::python_error: "Fatal Python error: Aborted"), so
        triton must not be first imported under a handler that raises one."""
        if self.device.type == "cpu":
            os.environ.setdefault(INTERPRET_ENV, "1")
        importlib.import_module("triton")

    def to_json(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in NOT_JSON}
        return {**data, "format": CONFIG_FORMAT, "device": self.device.spec, "plan": asdict(self.plan),
                "power": asdict(self.power)}

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        """The config `to_json` wrote, with its device resolved in this process (a worker of `--devices` sees
        its one GPU as cuda:0) and its spec file read again."""
        if data.get("format") != CONFIG_FORMAT:
            raise UsageError(f"not a {CONFIG_FORMAT} run configuration: format {data.get('format')!r}")
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**fields, "device": detect(data["device"]), "plan": TimingPlan(**data["plan"]),
                      "power": PowerConfig(**data["power"]), "specs": _spec_table(data.get("specs_path"))})


# The declaration -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One run option: its pytest flag and what it fills.

    `into` is the RunConfig field ("seed"), or a field of its timing plan or power config ("plan.cuda_graph",
    "power.idle_s"); an option left at None keeps that field's default. `parse` turns a given value into the
    field's value (reading and checking files); `bounds` = (lowest, whether the lowest is excluded, highest
    or a function giving it, what it counts). `instead`: what `wattbench run` users give rather than this
    option after `--` (None: `wattbench run` takes it there)."""

    flag: str
    into: str
    help: str
    type: Callable | None = None
    default: Any = None
    action: str | None = None
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None
    bounds: tuple | None = None
    instead: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def addoption_kwargs(self) -> dict:
        kwargs = {"help": self.help, "default": self.default}
        for name in ("type", "action", "metavar"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    def check_bounds(self, value) -> None:
        if self.bounds is None or value is None:
            return
        low, above, high, unit = self.bounds
        high = high() if callable(high) else high
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            bound = f"above {low:g}" if above else f"at least {low:g}"
            raise UsageError(f"{self.flag} must be {bound} and at most {high:g} {unit}, got {value!r}")


def _spec_table(path: str | None):
    return None if path is None else load_specs(Path(path))


def _usable_cpus() -> int:
    from wattbench.threads import usable_cpus

    return usable_cpus()


def _output_file(flag: str) -> Callable[[str], str]:
    def check(path: str) -> str:
        check_output_file(Path(path), flag)
        return path
    return check


def _replay_log(path: str) -> str:
    from wattbench.power.replay import check_log

    check_log(Path(path))
    return path


def _model(text: str) -> str:
    from wattbench.models.choice import resolve_model

    resolve_model(text)  # a bad name or file refused now, in one line
    return text


def _baseline(path: str) -> str:
    from wattbench.results import load_run

    load_run(Path(path))
    return path


def energy_target_pct(text: str) -> float | None:
    """--wattbench-energy-target as PowerConfig's target_pct: "2%" or 0.02 -> 2.0, "off" -> None (fixed windows)."""
    from wattbench.gate.config import parse_fraction

    if text.strip().lower() == "off":
        return None
    fraction = parse_fraction(text, "--wattbench-energy-target")
    if fraction == 0:
        raise UsageError(f"--wattbench-energy-target must be above 0%, got {text!r} ('off' for fixed windows)")
    return 100 * fraction


OPTIONS = (
    Option("--wattbench-device", "device", "cpu, cuda or cuda:N (default: cuda:0 if present, else cpu)",
           instead="give wattbench run --device"),
    Option("--wattbench-preset", "preset", f"which sizes to run: {' | '.join(RUN_PRESETS)}", default="quick",
           parse=lambda preset: check_preset(preset) or preset, instead="give wattbench run --preset"),
    Option("--wattbench-seed", "seed", "base seed for input generation", type=int, default=0),
    Option("--wattbench-min-time", "plan.min_time_s",
           "seconds of timed rounds per benchmark (default: 0.2 quick, 1.0 full)", type=float,
           bounds=(0.0, True, MAX_SECONDS, "seconds")),
    Option("--wattbench-cuda-graph", "plan.cuda_graph",
           "replay a captured CUDA graph, for small kernels dominated by launch overhead", action="store_true"),
    Option("--wattbench-eager-decode", "eager_decode",
           "decode-style cases launch every kernel from Python on a GPU too, instead of replaying one CUDA graph "
           "per batch size (the default there, as serving engines run)", action="store_true"),
    Option("--wattbench-model", "model",
           "run every transformer case (llm.*, scenario.*) on this model: tiny, 125m, 1.3b, llama3.1-8b, qwen3-8b, "
           "llama3.1-70b, or a JSON file of TransformerConfig fields (and a name)", metavar="NAME|JSON",
           parse=_model),
    Option("--wattbench-no-flush", "plan.flush_l2", "do not flush the L2 cache between rounds",
           action="store_true", parse=lambda no_flush: not no_flush),
    Option("--wattbench-energy-window", "power.min_window_s",
           "the shortest an energy window may be, in seconds (default 1; the target's floor usually makes them "
           "longer)", type=float, bounds=(0.0, True, MAX_SECONDS, "seconds")),
    Option("--wattbench-energy-max-window", "power.max_window_s",
           "the longest an energy window may be, in seconds (default 20; never below --wattbench-energy-window)",
           type=float, bounds=(0.0, True, MAX_SECONDS, "seconds")),
    Option("--wattbench-energy-target", "power.target_pct",
           "stop a benchmark's energy windows once its energy per call is known to this, at 95%%: e.g. 2%% (the "
           "default) or 0.02; 'off' runs --wattbench-energy-repeats windows of --wattbench-energy-window",
           metavar="PCT", parse=energy_target_pct),
    Option("--wattbench-energy-repeats", "power.repeats", "the most energy windows per benchmark", type=int,
           default=3, bounds=(1, False, MAX_REPEATS, "windows")),
    Option("--wattbench-idle", "power.idle_s", "seconds of idle-power baseline before the run", type=float,
           default=10.0, bounds=(0.0, False, MAX_SECONDS, "seconds")),
    Option("--wattbench-cooldown", "power.cooldown_c",
           "before each energy window, wait until the GPU is within DEGREES °C of its idle temperature",
           type=float, metavar="DEGREES", bounds=(0.0, False, MAX_DEGREES, "degrees")),
    Option("--wattbench-cpu-threads", "cpu_threads",
           "torch's intra-op CPU threads (default on a CPU run: one less than the usable CPUs)", type=int,
           metavar="N", bounds=(1, False, _usable_cpus, "threads")),
    Option("--wattbench-power-replay", "power.replay_path",
           "power log of an external meter (timestamp, watts) to attribute to benchmark windows", metavar="CSV",
           parse=_replay_log, instead="give wattbench run --power-replay"),
    Option("--wattbench-save-trace", "save_trace",
           "write the run's power trace here (the sampler then polls throughout the run, not only in the idle "
           "baseline and energy windows)", metavar="CSV", parse=_output_file("--wattbench-save-trace"),
           instead="give wattbench run --save-trace"),
    Option("--wattbench-specs", "specs_path",
           "your own device spec file (wattbench-device-specs/1), matched before the shipped table, for MFU",
           metavar="JSON", instead="give wattbench run --specs"),
    Option("--wattbench-run-file", "run_file", "keep this run file current (atomically rewritten after every "
           "benchmark)", metavar="JSON", parse=_output_file("--wattbench-run-file"),
           instead="give wattbench run --out or --resume"),
    Option("--wattbench-gate", "gate",
           "gate this run against a baseline run file (needs --benchmark-json); exit 1 on a regression",
           metavar="BASELINE", parse=_baseline,
           instead="gate the run file afterwards: wattbench gate --baseline B --current RUN"),
    Option("--wattbench-resume", "resume", "continue the run in --wattbench-run-file: skip the benchmarks it "
           "already holds", action="store_true", instead="give wattbench run --resume"),
)
ENERGY_WINDOW_FLAGS = ("--wattbench-energy-window", "--wattbench-energy-max-window", "--wattbench-energy-target")


def add_options(group) -> None:
    """Every run option on a pytest option group (or anything with its `addoption`)."""
    for option in OPTIONS:
        group.addoption(option.flag, **option.addoption_kwargs())


def _given(option: Callable[[str], Any], options=OPTIONS) -> dict[str, dict]:
    """The fields the given options fill, checked and parsed: {"": RunConfig's, "plan": ..., "power": ...}."""
    fields: dict[str, dict] = {"": {}, "plan": {}, "power": {}}
    for declared in options:
        value = option(declared.dest)
        declared.check_bounds(value)
        if value is None:
            continue
        part, _, name = declared.into.rpartition(".")
        fields[part][name] = declared.parse(value) if declared.parse else value
    return fields


def energy_windows(option: Callable[[str], Any]) -> dict:
    """The energy windows' settings given (as PowerConfig fields; the rest keep its defaults)."""
    return _given(option, [o for o in OPTIONS if o.flag in ENERGY_WINDOW_FLAGS])["power"]


def from_options(option: Callable[[str], Any], find_device: Callable[[str | None], Device] = detect) -> RunConfig:
    """The run's config from its option values: `option(dest)` is pytest's `config.getoption`, or the values
    `wattbench run` gathered; "keyword" is the -k expression. The first bad value is a UsageError.
    `find_device` resolves the device (a dry run's: wattbench.estimate.planning_device)."""
    device = find_device(option("wattbench_device"))
    fields = _given(option, [o for o in OPTIONS if o.into != "device"])
    top = fields[""]
    if top.get("resume") and not top.get("run_file"):
        raise UsageError("--wattbench-resume needs --wattbench-run-file")
    keyword = option("keyword") or ""
    if keyword:
        check_keyword(keyword)
    plan = {"min_time_s": DEFAULT_MIN_TIME_S[top.get("preset", RunConfig.preset)], **fields["plan"]}
    power = PowerConfig(**fields["power"], save_trace=top.get("save_trace") is not None)
    return RunConfig(device=device, plan=TimingPlan(**plan), power=power, keyword=keyword,
                     specs=_spec_table(top.get("specs_path")), **top)


def check_keyword(keyword: str) -> None:
    """A -k expression pytest cannot parse, refused in one line before pytest starts."""
    from _pytest.mark.expression import Expression  # pytest's own -k parser

    try:
        Expression.compile(keyword)
    except Exception as exc:  # pytest raises SyntaxError (9.x) or its own ParseError (7.x, 8.x)
        raise UsageError(f"-k {keyword!r} is not a valid expression: {getattr(exc, 'msg', None) or exc}") from None


# `wattbench run` -------------------------------------------------------------------------------------

class OptionParser(argparse.ArgumentParser):
    """The run options (and -k) of a pytest command line, parsed as pytest parses them."""

    def __init__(self):
        super().__init__(add_help=False, allow_abbrev=False)
        self.add_argument("-k", dest="keyword", default=None)
        add_options(self)

    def addoption(self, *names, **kwargs):
        self.add_argument(*names, **kwargs)

    def error(self, message):
        raise UsageError(message)


def split_pytest_args(args: list[str]) -> tuple[dict, list[str]]:
    """The run options among the pytest arguments a user gives `wattbench run` after `--`, and the rest (for
    pytest). Options `wattbench run` sets from its own flags are refused: given again they would contradict."""
    parser = OptionParser()
    given, rest = parser.parse_known_args(args)
    for declared in OPTIONS:
        if declared.instead and getattr(given, declared.dest) != declared.default:
            raise UsageError(f"{declared.flag} after '--' is not for wattbench run: {declared.instead}")
    if given.keyword is not None:
        raise UsageError("-k after '--' is not for wattbench run: give wattbench run -k")
    return vars(given), rest


def run_file_name(device_slug: str, when: datetime) -> str:
    return f"{host_name()}_{device_slug}_{when.strftime('%Y%m%dT%H%M%SZ')}.json"


def from_command(device: str | None, preset: str | None, keyword: str | None, pytest_args: list[str],
                 resume: Path | None = None, power_replay: Path | None = None,
                 specs: Path | None = None,
                 find_device: Callable[[str | None], Device] = detect) -> tuple[RunConfig, list[str]]:
    """`wattbench run`'s config from its flags and the run options after `--`, and the pytest arguments left.

    A resumed run takes its device, preset, seed and -k from its run file (see journal.resume_settings)."""
    from wattbench.journal import resume_settings

    values, rest = split_pytest_args(pytest_args)
    if resume:
        recorded = resume_settings(resume, device, preset, keyword)
        device, preset, keyword = recorded["device"], recorded["preset"], recorded["keyword"]
        if values["wattbench_seed"] == 0:  # a seed given after '--' stays, for the journal to check
            values["wattbench_seed"] = recorded["seed"]
        values.update(wattbench_run_file=str(resume), wattbench_resume=True)
    values.update(wattbench_device=device, wattbench_preset=preset or "quick", keyword=keyword,
                  wattbench_power_replay=None if power_replay is None else str(power_replay),
                  wattbench_specs=None if specs is None else str(specs))
    return from_options(values.get, find_device), rest
