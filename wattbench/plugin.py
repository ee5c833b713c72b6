"""pytest plugin (entry point `pytest11`): wattbench fixtures and options on top of pytest-benchmark.

`pytest suites/` runs every registry case through `wattbench_benchmark`, which times it with
pytest-benchmark's own `pedantic` loop using a device clock as the timer (so pytest-benchmark's
stats are device time), then measures its energy, and stores wattbench's fields in the
benchmark's `extra_info`. The JSON that `--benchmark-json` writes stays pytest-benchmark's
format, with a `wattbench` block added through `pytest_benchmark_update_json`.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from wattbench import environment, schema, timing
from wattbench.device import INTERPRET_ENV, Device, detect
from wattbench.errors import UsageError
from wattbench.journal import RunJournal
from wattbench.measure import Settings, measure
from wattbench.power import PowerConfig, PowerMonitor
from wattbench.workloads import PRESETS, Case, case_by_id, cases, check_preset

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
    failed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    exit_status: int | None = None
    power: PowerMonitor | None = None
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


def pytest_addoption(parser):
    group = parser.getgroup("wattbench", "wattbench: time and energy per unit of work")
    group.addoption("--wattbench-device", default=None,
                    help="cpu, cuda or cuda:N (default: cuda:0 if present, else cpu)")
    group.addoption("--wattbench-preset", default="quick", help=f"which sizes to run: {' | '.join(PRESETS)}")
    group.addoption("--wattbench-seed", type=int, default=0, help="base seed for input generation")
    group.addoption("--wattbench-min-time", type=float, default=None,
                    help="seconds of timed rounds per benchmark (default: 0.2 quick, 1.0 full)")
    group.addoption("--wattbench-cuda-graph", action="store_true",
                    help="replay a captured CUDA graph, for small kernels dominated by launch overhead")
    group.addoption("--wattbench-no-flush", action="store_true", help="do not flush the L2 cache between rounds")
    group.addoption("--wattbench-energy-window", type=float, default=5.0,
                    help="minimum seconds of each energy measurement window")
    group.addoption("--wattbench-energy-repeats", type=int, default=3, help="energy windows per benchmark")
    group.addoption("--wattbench-idle", type=float, default=10.0, help="seconds of idle-power baseline before the run")
    group.addoption("--wattbench-cooldown", type=float, default=None, metavar="DEGREES",
                    help="before each energy window, wait until the GPU is within DEGREES °C of its idle temperature")
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


def _plan(config, preset: str) -> timing.TimingPlan:
    min_time = config.getoption("wattbench_min_time")
    if min_time is None:
        min_time = 0.2 if preset == "quick" else 1.0
    if min_time <= 0:
        raise pytest.UsageError(f"--wattbench-min-time must be positive, got {min_time}")
    return timing.TimingPlan(min_time_s=min_time, flush_l2=not config.getoption("wattbench_no_flush"),
                             cuda_graph=config.getoption("wattbench_cuda_graph"))


def pytest_configure(config):
    config.addinivalue_line("markers", "wattbench(suite=NAME): run the registry cases of one suite")
    preset = config.getoption("wattbench_preset")
    try:
        device = detect(config.getoption("wattbench_device"))
        check_preset(preset)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("wattbench_gate") and not config.getoption("benchmark_json"):
        raise pytest.UsageError("--wattbench-gate needs --benchmark-json=FILE (the run it gates)")
    if device.type == "cpu":
        # Triton can only run on a CPU through its interpreter; set it before suites import kernels.
        os.environ.setdefault(INTERPRET_ENV, "1")
    config.stash[STATE] = RunState(
        device=device,
        preset=preset,
        plan=_plan(config, preset),
        power_config=PowerConfig(
            min_window_s=config.getoption("wattbench_energy_window"),
            repeats=config.getoption("wattbench_energy_repeats"),
            idle_s=config.getoption("wattbench_idle"),
            replay_path=config.getoption("wattbench_power_replay"),
            save_trace=config.getoption("wattbench_save_trace") is not None,
            cooldown_c=config.getoption("wattbench_cooldown"),
        ),
        seed=config.getoption("wattbench_seed"),
        select=config.getoption("keyword"),
        journal=_journal(config),
        specs=_specs(config),
    )
    if config.stash[STATE].journal and threading.current_thread() is threading.main_thread():
        # SIGTERM (a scheduler's time limit, `kill`) ends the run like Ctrl-C: what completed is kept.
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _specs(config):
    path = config.getoption("wattbench_specs")
    if path is None:
        return None
    from wattbench.report.specs import load_specs  # the report package is heavy: only when asked

    try:
        return load_specs(Path(path))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _journal(config) -> RunJournal | None:
    path = config.getoption("wattbench_run_file")
    resume = config.getoption("wattbench_resume")
    if resume and not path:
        raise pytest.UsageError("--wattbench-resume needs --wattbench-run-file")
    if not path:
        return None
    try:
        return RunJournal(Path(path), resume)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc):
    if "wattbench_case" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    marker = metafunc.definition.get_closest_marker("wattbench")
    suite = marker.kwargs.get("suite") if marker else None
    ids = [case.id for case in cases(state.preset, state.device, suite)]
    metafunc.parametrize("wattbench_case", ids, indirect=True, ids=ids)


def pytest_collection_modifyitems(config, items):
    """Time every wattbench benchmark with the device clock, grouped by workload."""
    state = config.stash[STATE]
    entries = [(item, _case_id(item)) for item in items]
    if state.journal and state.journal.previous:
        done = state.journal.completed_cases
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
    if report.when == "teardown" and state.journal:
        if state.journal_header is None:
            state.journal_header = _json_header(item.config)
        state.journal.write_progress(state.journal_header, run_block(state))
    if report.failed:
        error = call.excinfo.exconly() if call.excinfo else report.longreprtext
        state.failed.append({"case": case_id, "phase": report.when, "error": error.strip().splitlines()[-1]})
    elif report.skipped and report.when in ("setup", "call"):
        reason = call.excinfo.value.msg if call.excinfo and hasattr(call.excinfo.value, "msg") else str(report.longrepr)
        state.skipped.append({"case": case_id, "reason": reason})


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Note how the session ended before pytest-benchmark (a wrapper too) writes its JSON; then gate it."""
    state = session.config.stash[STATE]
    state.exit_status = int(exitstatus)
    yield
    baseline = session.config.getoption("wattbench_gate")
    if baseline:
        from wattbench.gate import gate_output_json

        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        code = gate_output_json(state.output_json or {}, Path(baseline), session.config.rootpath,
                                write=reporter.write_line if reporter else print)
        session.exitstatus = max(int(session.exitstatus), code)


def pytest_benchmark_update_machine_info(config, machine_info):
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
    state = config.stash[STATE]
    output_json["wattbench"] = run_block(state)
    state.output_json = output_json
    if state.journal:
        state.journal.write_final(output_json)


def run_block(state: RunState) -> dict:
    """The run file's `wattbench` block: how, where and how completely this run was measured."""
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
        "complete": state.exit_status in (0, 1),
        "failed": state.failed,
        "skipped": state.skipped,
        "power": state.power.run_info() if state.power else {"reason": "no benchmark ran"},
    }
