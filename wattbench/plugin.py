"""pytest plugin (entry point `pytest11`): wattbench fixtures and options on top of pytest-benchmark.

`pytest suites/` runs every registry case through `wattbench_benchmark`, which times it with
pytest-benchmark's own `pedantic` loop using a device clock as the timer (so pytest-benchmark's
stats are device time), then measures its energy, and stores wattbench's fields in the
benchmark's `extra_info`. The JSON that `--benchmark-json` writes stays pytest-benchmark's
format, with a `wattbench` block added through `pytest_benchmark_update_json`.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from wattbench import environment, schema, timing
from wattbench.device import INTERPRET_ENV, Device, detect
from wattbench.errors import UsageError
from wattbench.journal import RunJournal, earlier_segments, recorded_cases
from wattbench.measure import Settings, measure
from wattbench.power import PowerConfig, PowerMonitor
from wattbench.results import check_output_file
from wattbench.workloads import RUN_PRESETS, Case, case_by_id, cases, check_preset

#: Signals that end a run the way Ctrl-C does: what completed is kept, and the run can be resumed.
INTERRUPTING = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupts:
    """While a session measures, SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (pytest then ends the
    session and the run file says so), and which signal came is remembered for the run file. While the
    session writes its results (`deferred`), a signal is only noted, so that no final write is cut short.
    A signal the process ignores (nohup, a background job) stays ignored."""

    def __init__(self):
        self.received: str | None = None
        self.pending = False
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in INTERRUPTING:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        self.received = self.received or name
        if self._deferring:
            self.pending = True
            return
        raise KeyboardInterrupt(name)

    @contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False


@dataclass
class RunState:
    """Everything one pytest session of wattbench needs, kept in the config's stash."""

    device: Device
    preset: str
    plan: timing.TimingPlan
    power_config: PowerConfig
    seed: int
    select: str
    started_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    #: This session's start (a resumed run keeps its first start in `started_utc`).
    segment_started_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    earlier_segments: list = field(default_factory=list)
    #: Case ids the run is to record, from collection on (on resume: those already recorded too).
    planned: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    exit_status: int | None = None
    interrupts: Interrupts = field(default_factory=Interrupts)
    load_start: list | None = None
    #: torch's thread settings (wattbench.threads), None until the session measures.
    threads: dict | None = None
    #: --wattbench-cpu-threads; None: the default of wattbench.threads.choose_cpu_threads on a CPU run.
    cpu_threads: int | None = None
    power: PowerMonitor | None = None
    #: A resumed run's power block, kept when this session measures nothing.
    power_before: dict | None = None
    journal: RunJournal | None = None
    journal_header: dict | None = None
    #: The spec table for MFU when the user gave one (--wattbench-specs); None: the shipped table.
    specs: Any = None
    output_json: dict | None = None
    _clock: Callable[[], float] | None = None

    def clock(self) -> Callable[[], float]:
        """The device clock, made on first use: pytest runs without wattbench benchmarks never touch CUDA."""
        if self._clock is None:
            self._clock = timing.clock_for(self.device)
        return self._clock


STATE = pytest.StashKey[RunState]()

#: Upper bounds that keep a mistyped value from becoming a run that never ends (or a sleep that overflows).
MAX_SECONDS = 3600.0
MAX_REPEATS = 100
MAX_DEGREES = 100.0


def pytest_addoption(parser):
    group = parser.getgroup("wattbench", "wattbench: time and energy per unit of work")
    group.addoption("--wattbench-device", default=None,
                    help="cpu, cuda or cuda:N (default: cuda:0 if present, else cpu)")
    group.addoption("--wattbench-preset", default="quick", help=f"which sizes to run: {' | '.join(RUN_PRESETS)}")
    group.addoption("--wattbench-seed", type=int, default=0, help="base seed for input generation")
    group.addoption("--wattbench-min-time", type=float, default=None,
                    help="seconds of timed rounds per benchmark (default: 0.2 quick, 1.0 full)")
    group.addoption("--wattbench-cuda-graph", action="store_true",
                    help="replay a captured CUDA graph, for small kernels dominated by launch overhead")
    group.addoption("--wattbench-no-flush", action="store_true", help="do not flush the L2 cache between rounds")
    group.addoption("--wattbench-energy-window", type=float, default=None,
                    help="the shortest an energy window may be, in seconds (default 1; the target's floor usually "
                         "makes them longer)")
    group.addoption("--wattbench-energy-max-window", type=float, default=None,
                    help="the longest an energy window may be, in seconds (default 20; never below "
                         "--wattbench-energy-window)")
    group.addoption("--wattbench-energy-target", default=None, metavar="PCT",
                    help="stop a benchmark's energy windows once its energy per call is known to this, at 95%%: "
                         "e.g. 2%% (the default) or 0.02; 'off' runs --wattbench-energy-repeats windows of "
                         "--wattbench-energy-window")
    group.addoption("--wattbench-energy-repeats", type=int, default=3, help="the most energy windows per benchmark")
    group.addoption("--wattbench-idle", type=float, default=10.0, help="seconds of idle-power baseline before the run")
    group.addoption("--wattbench-cooldown", type=float, default=None, metavar="DEGREES",
                    help="before each energy window, wait until the GPU is within DEGREES °C of its idle temperature")
    group.addoption("--wattbench-cpu-threads", type=int, default=None, metavar="N",
                    help="torch's intra-op CPU threads (default on a CPU run: one less than the usable CPUs)")
    group.addoption("--wattbench-power-replay", default=None, metavar="CSV",
                    help="power log of an external meter (timestamp, watts) to attribute to benchmark windows")
    group.addoption("--wattbench-save-trace", default=None, metavar="CSV",
                    help="write the run's power trace here (the sampler then polls throughout the run, not only "
                         "in the idle baseline and energy windows)")
    group.addoption("--wattbench-specs", default=None, metavar="JSON",
                    help="your own device spec file (wattbench-device-specs/1), matched before the shipped table, "
                         "for MFU")
    group.addoption("--wattbench-run-file", default=None, metavar="JSON",
                    help="keep this run file current (atomically rewritten after every benchmark)")
    group.addoption("--wattbench-gate", default=None, metavar="BASELINE",
                    help="gate this run against a baseline run file (needs --benchmark-json); exit 1 on a regression")
    group.addoption("--wattbench-resume", action="store_true",
                    help="continue the run in --wattbench-run-file: skip the benchmarks it already holds")


#: Numeric options: (name, smallest allowed, whether the smallest is excluded, largest allowed, what it counts).
NUMBER_OPTIONS = (
    ("wattbench_min_time", 0.0, True, MAX_SECONDS, "seconds"),
    ("wattbench_energy_window", 0.0, True, MAX_SECONDS, "seconds"),
    ("wattbench_energy_max_window", 0.0, True, MAX_SECONDS, "seconds"),
    ("wattbench_idle", 0.0, False, MAX_SECONDS, "seconds"),
    ("wattbench_cooldown", 0.0, False, MAX_DEGREES, "degrees"),
    ("wattbench_energy_repeats", 1, False, MAX_REPEATS, "windows"),
    ("wattbench_cpu_threads", 1, False, None, "threads"),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(option: Callable[[str], Any]) -> None:
    """Every wattbench option's value and file, checked before anything runs; the first bad one as a UsageError.

    `option(name)` gives an option's value: pytest's `config.getoption`, or `check_arguments`' parse of the
    arguments `wattbench run` hands pytest. Input files are read and checked, output paths proven writable."""
    from wattbench.threads import usable_cpus

    detect(option("wattbench_device"))
    check_preset(option("wattbench_preset"))
    for name, low, above, high, unit in NUMBER_OPTIONS:
        value = option(name)
        high = usable_cpus() if name == "wattbench_cpu_threads" else high
        if value is None:
            continue
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            bound = f"above {low:g}" if above else f"at least {low:g}"
            raise UsageError(f"{_flag(name)} must be {bound} and at most {high:g} {unit}, got {value!r}")
    energy_windows(option)
    if option("wattbench_power_replay"):
        from wattbench.power.replay import check_log

        check_log(Path(option("wattbench_power_replay")))
    for name in ("wattbench_run_file", "wattbench_save_trace"):
        if option(name):
            check_output_file(Path(option(name)), _flag(name))
    if option("wattbench_resume") and not option("wattbench_run_file"):
        raise UsageError("--wattbench-resume needs --wattbench-run-file")
    if option("wattbench_specs"):
        _load_specs(option("wattbench_specs"))
    if option("wattbench_gate"):
        from wattbench.results import load_run

        load_run(Path(option("wattbench_gate")))


def energy_windows(option: Callable[[str], Any]) -> dict:
    """The energy windows' settings given (as PowerConfig fields; the rest keep its defaults); a bad
    --wattbench-energy-target as a UsageError."""
    from wattbench.gate.config import parse_fraction

    given = {key: option(name) for key, name in (("min_window_s", "wattbench_energy_window"),
                                                 ("max_window_s", "wattbench_energy_max_window"))
             if option(name) is not None}
    target = option("wattbench_energy_target")
    if target is not None and target.strip().lower() == "off":
        given["target_pct"] = None
    elif target is not None:
        fraction = parse_fraction(target, "--wattbench-energy-target")
        if fraction == 0:
            raise UsageError(f"--wattbench-energy-target must be above 0%, got {target!r} ('off' for fixed windows)")
        given["target_pct"] = 100 * fraction
    return given


class _OptionParser(argparse.ArgumentParser):
    """Just the wattbench options of a pytest command line, parsed as pytest parses them."""

    def __init__(self):
        super().__init__(add_help=False, allow_abbrev=False)
        self.add_argument("-k", dest="keyword", default=None)
        pytest_addoption(self)

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, *names, **kwargs):
        self.add_argument(*names, **kwargs)

    def error(self, message):
        raise UsageError(message)


#: Options `wattbench run` sets itself from its own flags (given again after `--` they would contradict them),
#: and what to do instead.
NOT_AFTER_SEPARATOR = {
    "wattbench_device": "give wattbench run --device", "wattbench_preset": "give wattbench run --preset",
    "wattbench_run_file": "give wattbench run --out or --resume", "wattbench_resume": "give wattbench run --resume",
    "wattbench_save_trace": "give wattbench run --save-trace",
    "wattbench_power_replay": "give wattbench run --power-replay", "wattbench_specs": "give wattbench run --specs",
    "keyword": "give wattbench run -k",
    "wattbench_gate": "gate the run file afterwards: wattbench gate --baseline B --current RUN",
}


def check_arguments(args: list[str]) -> None:
    """The pytest arguments a user gives `wattbench run` after `--`, checked as `pytest_configure` would check
    them, so that a bad value is one line before pytest starts."""
    parser = _OptionParser()
    given, _ = parser.parse_known_args(args)
    for name, instead in NOT_AFTER_SEPARATOR.items():
        if getattr(given, name) != parser.get_default(name):
            raise UsageError(f"{_flag(name) if name != 'keyword' else '-k'} after '--' is not for wattbench run: "
                             f"{instead}")
    check_options(lambda name: getattr(given, name))


def _plan(config, preset: str) -> timing.TimingPlan:
    min_time = config.getoption("wattbench_min_time")
    if min_time is None:
        min_time = 0.2 if preset == "quick" else 1.0
    return timing.TimingPlan(min_time_s=min_time, flush_l2=not config.getoption("wattbench_no_flush"),
                             cuda_graph=config.getoption("wattbench_cuda_graph"))


def pytest_configure(config):
    config.addinivalue_line("markers", "wattbench(suite=NAME): run the registry cases of one suite")
    preset = config.getoption("wattbench_preset")
    try:
        check_options(config.getoption)
        device = detect(config.getoption("wattbench_device"))
        journal = _journal(config)
        specs = _load_specs(config.getoption("wattbench_specs"))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("wattbench_gate") and not config.getoption("benchmark_json"):
        raise pytest.UsageError("--wattbench-gate needs --benchmark-json=FILE (the run it gates)")
    if device.type == "cpu":
        # Triton can only run on a CPU through its interpreter; set it before suites import kernels.
        os.environ.setdefault(INTERPRET_ENV, "1")
    state = RunState(
        device=device,
        preset=preset,
        plan=_plan(config, preset),
        power_config=PowerConfig(
            **energy_windows(config.getoption),
            repeats=config.getoption("wattbench_energy_repeats"),
            idle_s=config.getoption("wattbench_idle"),
            replay_path=config.getoption("wattbench_power_replay"),
            save_trace=config.getoption("wattbench_save_trace") is not None,
            cooldown_c=config.getoption("wattbench_cooldown"),
        ),
        seed=config.getoption("wattbench_seed"),
        select=config.getoption("keyword"),
        cpu_threads=config.getoption("wattbench_cpu_threads"),
        load_start=_load_average(),
        journal=journal,
        specs=specs,
    )
    if journal and journal.previous_block:
        _resume(state, journal)
    config.stash[STATE] = state


def _resume(state: RunState, journal: RunJournal) -> None:
    """Continue the run in the journal: the same settings, its first start, its segments, failures and skips."""
    try:
        journal.check_resumable({"preset": ("--wattbench-preset", state.preset),
                                 "device": ("--wattbench-device", state.device.spec),
                                 "seed": ("--wattbench-seed", state.seed), "select": ("-k", state.select),
                                 "timing_plan": ("the timing options", asdict(state.plan))})
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    block = journal.previous_block
    state.started_utc = block.get("started_utc") or state.started_utc
    state.earlier_segments = earlier_segments(block)
    state.failed = list(block.get("failed", []))
    state.skipped = list(block.get("skipped", []))
    state.power_before = block.get("power")


def pytest_unconfigure(config):
    state = config.stash.get(STATE, None)
    if state is not None:
        state.interrupts.restore()


def _load_average() -> list[float] | None:
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _load_specs(path: str | None):
    if path is None:
        return None
    from wattbench.specs import load_specs

    return load_specs(Path(path))


def _journal(config) -> RunJournal | None:
    path = config.getoption("wattbench_run_file")
    return RunJournal(Path(path), config.getoption("wattbench_resume")) if path else None


def pytest_generate_tests(metafunc):
    if "wattbench_case" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    marker = metafunc.definition.get_closest_marker("wattbench")
    suite = marker.kwargs.get("suite") if marker else None
    ids = [case.id for case in cases(state.preset, state.device, suite)]
    metafunc.parametrize("wattbench_case", ids, indirect=True, ids=ids)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Plan the run (after -k and every other selection), leave out what a resumed run already recorded,
    and time every wattbench benchmark with the device clock, grouped by workload."""
    state = config.stash[STATE]
    entries = [(item, _case_id(item)) for item in items]
    state.planned = [case_id for _, case_id in entries if case_id]
    journal = state.journal
    if journal and journal.previous_block:
        done = journal.completed_cases
        before = journal.previous_block.get("planned")
        if before is not None and set(before) != set(state.planned) | done:
            raise pytest.UsageError(
                f"{journal.path}: this run planned {len(before)} benchmarks, this session selects "
                f"{len(set(state.planned) | done)}: resume it with the same selection and wattbench version")
        state.planned = list(dict.fromkeys([*(before or sorted(done)), *state.planned]))
        config.hook.pytest_deselected(items=[item for item, case_id in entries if case_id in done])
        entries = [(item, case_id) for item, case_id in entries if case_id not in done]
        items[:] = [item for item, _ in entries]
    for item, case_id in entries:
        if "wattbench_benchmark" not in getattr(item, "fixturenames", ()):
            continue
        options = {}
        existing = item.get_closest_marker("benchmark")
        if existing:
            options.update(existing.kwargs)
        if case_id:
            options.setdefault("group", case_by_id(case_id).workload.name)
        options["timer"] = state.clock()
        item.add_marker(pytest.mark.benchmark(**options))


def pytest_collection_finish(session):
    """A session that will measure: signals end it cleanly, CPU threads are set, and the run file exists."""
    state = session.config.stash[STATE]
    if not state.planned:
        return
    state.interrupts.install()
    from wattbench.threads import choose_cpu_threads, thread_settings

    if state.device.type == "cpu" or state.cpu_threads is not None:
        state.threads = choose_cpu_threads(state.cpu_threads)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"wattbench: torch runs {state.threads['torch_intra_op']} CPU thread(s) on "
                                f"{state.threads['usable_cpus']} usable CPU(s) ({state.threads['chosen_by']})")
    else:
        state.threads = thread_settings()
    if state.journal:
        _write_progress(session.config)


def _write_progress(config) -> None:
    state = config.stash[STATE]
    if state.journal_header is None:
        state.journal_header = _json_header(config)
    benchmarks = state.journal.benchmarks()
    state.journal.write({**state.journal_header, "benchmarks": benchmarks,
                         "wattbench": run_block(state, benchmarks, final=False)})


def _case_id(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("wattbench_case") if callspec else None


@pytest.fixture(scope="session")
def wattbench_power(pytestconfig):
    """The run's power monitor: idle baseline once, then one energy window per benchmark."""
    state = pytestconfig.stash[STATE]
    with PowerMonitor(state.device, state.power_config) as monitor:
        state.power = monitor
        yield monitor
        trace_path = pytestconfig.getoption("wattbench_save_trace")
        if trace_path:
            monitor.write_trace(trace_path)


@pytest.fixture
def wattbench_case(request) -> Case:
    return case_by_id(request.param)


@pytest.fixture
def wattbench_benchmark(benchmark, wattbench_power, pytestconfig) -> Callable[[Case], dict]:
    """Run one registry case (see wattbench.measure) and keep the run file current."""
    state = pytestconfig.stash[STATE]

    def run(case: Case) -> dict:
        settings = Settings(device=state.device, plan=state.plan, seed=state.seed, specs=state.specs)
        info = measure(case, settings, state.clock(), wattbench_power, benchmark)
        if state.journal and benchmark.stats:
            state.journal.add(benchmark.stats.as_dict(include_data=False))
        return info

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Record failed and skipped wattbench cases, with their reason; bring the run file up to date."""
    outcome = yield
    report = outcome.get_result()
    case_id = _case_id(item)
    if not case_id:
        return
    state = item.config.stash[STATE]
    if report.failed:
        error = call.excinfo.exconly() if call.excinfo else report.longreprtext
        state.failed.append({"case": case_id, "phase": report.when, "error": error.strip().splitlines()[-1]})
    elif report.skipped and report.when in ("setup", "call"):
        reason = call.excinfo.value.msg if call.excinfo and hasattr(call.excinfo.value, "msg") else str(report.longrepr)
        state.skipped.append({"case": case_id, "reason": reason})
    if report.when == "teardown" and state.journal:
        _write_progress(item.config)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Note how the session ended; let pytest-benchmark (a wrapper too) write its JSON with no signal cutting
    the final writes short; make sure the run file has its final block; then gate the run."""
    state = session.config.stash[STATE]
    state.exit_status = int(exitstatus)
    with state.interrupts.deferred():
        yield
        if state.journal and state.output_json is None and (state.planned or state.journal.previous_block):
            # pytest-benchmark writes no JSON when no benchmark ran in this session (all recorded before,
            # or an interruption before the first): the run file still gets its end.
            benchmarks = state.journal.benchmarks()
            state.journal.write({**(state.journal_header or _json_header(session.config)),
                                 "benchmarks": benchmarks, "wattbench": run_block(state, benchmarks, final=True)})
    if state.interrupts.pending:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
        return
    baseline = session.config.getoption("wattbench_gate")
    if baseline:
        from wattbench.gate import gate_output_json

        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        try:
            code = gate_output_json(state.output_json or {}, Path(baseline), session.config.rootpath,
                                    write=reporter.write_line if reporter else print)
        except KeyboardInterrupt:
            session.exitstatus = pytest.ExitCode.INTERRUPTED
            return
        # The gate's 2 (bad input) would read as pytest's 2 (interrupted): it is pytest's usage error here.
        session.exitstatus = max(int(session.exitstatus), pytest.ExitCode.USAGE_ERROR if code == 2 else code)


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_generate_machine_info(config):
    """The machine facts of the run file's first write, again for pytest-benchmark's own: reading them
    (py-cpuinfo, git, NVML) takes seconds, and they do not change within a session."""
    return copy.deepcopy(_header_part(config, "machine_info"))


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_generate_commit_info(config):
    return copy.deepcopy(_header_part(config, "commit_info"))


def _header_part(config, name: str) -> dict | None:
    state = config.stash.get(STATE, None)
    return state.journal_header.get(name) if state and state.journal_header else None


def pytest_benchmark_update_machine_info(config, machine_info):
    if "wattbench" not in machine_info:  # not yet in a copy of the first write's facts
        machine_info["wattbench"] = environment.describe(config.stash[STATE].device)


def _json_header(config) -> dict:
    """The top of a pytest-benchmark JSON file, made through pytest-benchmark's own hooks."""
    machine_info = config.hook.pytest_benchmark_generate_machine_info(config=config)
    config.hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
    commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
    config.hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
    return {"machine_info": machine_info, "commit_info": commit_info,
            "datetime": datetime.now(timezone.utc).isoformat(), "version": _pytest_benchmark_version()}


def _pytest_benchmark_version() -> str:
    import pytest_benchmark

    return pytest_benchmark.__version__


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """pytest-benchmark's JSON, and the run file, with the earlier sessions' records and the run block."""
    state = config.stash[STATE]
    if state.journal:
        output_json["benchmarks"] = state.journal.merged(output_json["benchmarks"])
    output_json["wattbench"] = run_block(state, output_json["benchmarks"], final=True)
    state.output_json = output_json
    if state.journal:
        state.journal.write(output_json)


def _segment(state: RunState, missing: list[str], final: bool) -> dict:
    """This session as one segment of the run: when, and how it ended ("running" until it has)."""
    segment = {"started_utc": state.segment_started_utc, "ended_utc": datetime.now(timezone.utc).isoformat()}
    if not final:
        return {**segment, "end": "running"}
    if state.exit_status == pytest.ExitCode.INTERRUPTED:
        return {**segment, "end": "interrupted", "signal": state.interrupts.received}
    if missing:
        return {**segment, "end": "stopped", "pytest_exit_status": state.exit_status}
    return {**segment, "end": "finished"}


def run_block(state: RunState, benchmarks: list[dict], final: bool) -> dict:
    """The run file's `wattbench` block: how, where and how completely this run was measured.

    `complete` only when every planned benchmark is recorded (measured, failed or skipped) and the
    session has ended: a run cut short, or resumed with a narrower selection, can never claim it."""
    recorded = recorded_cases(benchmarks, state.failed, state.skipped)
    missing = [case for case in state.planned if case not in recorded]
    return {
        "format": schema.RUN_FORMAT.current,
        "preset": state.preset,
        "device": state.device.spec,
        "device_name": state.device.name,
        "seed": state.seed,
        "select": state.select,
        "timing_plan": asdict(state.plan),
        "started_utc": state.started_utc,
        "ended_utc": datetime.now(timezone.utc).isoformat(),
        "complete": final and not missing,
        "planned": state.planned,
        "segments": [*state.earlier_segments, _segment(state, missing, final)],
        "failed": state.failed,
        "skipped": state.skipped,
        "threads": state.threads,
        "load_average": {"start": state.load_start, "end": _load_average()},
        "power": state.power.run_info() if state.power else state.power_before or {"reason": "no benchmark ran"},
    }
