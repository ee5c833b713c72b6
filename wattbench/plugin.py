"""pytest plugin (entry point `pytest11`): wattbench fixtures and options on top of pytest-benchmark.

`pytest suites/` runs every registry case through `wattbench_benchmark`, which times it with
pytest-benchmark's own `pedantic` loop using a device clock as the timer (so pytest-benchmark's
stats are device time), then measures its energy, and stores wattbench's fields in the
benchmark's `extra_info`. The JSON that `--benchmark-json` writes stays pytest-benchmark's
format, with a `wattbench` block added through `pytest_benchmark_update_json`.

This module keeps pytest's side only: the options (declared in wattbench.config), the hooks and the
fixtures. The run's settings are its RunConfig (wattbench.config), handed in by `wattbench run` or
built here from the options; the session's state, signals and run block are wattbench.session;
resuming is wattbench.journal; measuring one case is wattbench.measure.
"""

from __future__ import annotations

import copy
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from wattbench import environment
from wattbench.config import RunConfig, add_options, from_options
from wattbench.errors import UsageError
from wattbench.measure import measure
from wattbench.power import PowerMonitor
from wattbench.progress import Progress
from wattbench.session import RunState
from wattbench.workloads import Case, case_by_id, cases

STATE = pytest.StashKey[RunState]()
#: The run's progress lines (wattbench.progress), from collection on.
PROGRESS = pytest.StashKey[Progress]()


class GivenConfig:
    """What `wattbench run` hands `pytest.main(args, plugins=[GivenConfig(config)])`: the run's RunConfig,
    used as it is instead of being rebuilt from `--wattbench-*` options."""

    def __init__(self, run_config: RunConfig):
        self.run_config = run_config


def pytest_addoption(parser):
    add_options(parser.getgroup("wattbench", "wattbench: time and energy per unit of work"))


def _run_config(config) -> RunConfig:
    """The RunConfig `wattbench run` handed in, else the one the `--wattbench-*` options give."""
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, GivenConfig):
            return plugin.run_config
    return from_options(config.getoption)


def pytest_configure(config):
    config.addinivalue_line("markers", "wattbench(suite=NAME): run the registry cases of one suite")
    try:
        run_config = _run_config(config)
        if run_config.gate and not config.getoption("benchmark_json"):
            raise UsageError("--wattbench-gate needs --benchmark-json=FILE (the run it gates)")
        config.stash[STATE] = RunState.start(run_config)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config):
    state = config.stash.get(STATE, None)
    if state is not None:
        state.interrupts.restore()


def pytest_generate_tests(metafunc):
    if "wattbench_case" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    marker = metafunc.definition.get_closest_marker("wattbench")
    suite = marker.kwargs.get("suite") if marker else None
    ids = [case.id for case in cases(state.config.preset, state.config.device, suite)]
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
        try:
            state.planned, done = journal.plan(state.planned)
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
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
    _start_progress(config, [case_id for _, case_id in entries if case_id])


def _start_progress(config, case_ids: list[str]) -> None:
    """One line per benchmark with the time left (wattbench.progress), through pytest's terminal reporter."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not case_ids or reporter is None:
        return
    config.stash[PROGRESS] = Progress.for_run(config.stash[STATE].config, case_ids, reporter.write_line,
                                              interactive=sys.stdout.isatty())


def pytest_collection_finish(session):
    """A session that will measure: signals end it cleanly, CPU threads are set, and the run file exists."""
    state = session.config.stash[STATE]
    if not state.planned:
        return
    state.interrupts.install()
    from wattbench.threads import choose_cpu_threads, thread_settings

    if state.config.device.type == "cpu" or state.config.cpu_threads is not None:
        state.threads = choose_cpu_threads(state.config.cpu_threads)
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
                         "wattbench": state.run_block(benchmarks, final=False)})


def _case_id(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("wattbench_case") if callspec else None


@pytest.fixture(scope="session")
def wattbench_power(pytestconfig):
    """The run's power monitor: idle baseline once, then one energy window per benchmark (in a power sweep, the
    settings read back over each)."""
    state = pytestconfig.stash[STATE]
    with PowerMonitor(state.config.device, state.config.power, readback=state.config.readback) as monitor:
        state.power = monitor
        yield monitor
        if state.config.save_trace:
            monitor.write_trace(state.config.save_trace)


@pytest.fixture
def wattbench_case(request) -> Case:
    return case_by_id(request.param)


@pytest.fixture
def wattbench_benchmark(benchmark, wattbench_power, pytestconfig) -> Callable[[Case], dict]:
    """Run one registry case (see wattbench.measure) and keep the run file current."""
    state = pytestconfig.stash[STATE]

    def run(case: Case) -> dict:
        info = measure(case, state.config.measuring, state.clock(), wattbench_power, benchmark)
        if PROGRESS in pytestconfig.stash:
            pytestconfig.stash[PROGRESS].measured(info)
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
    _note_progress(item.config, case_id, report)
    if report.failed:
        error = call.excinfo.exconly() if call.excinfo else report.longreprtext
        state.failed.append({"case": case_id, "phase": report.when, "error": error.strip().splitlines()[-1]})
    elif report.skipped and report.when in ("setup", "call"):
        reason = call.excinfo.value.msg if call.excinfo and hasattr(call.excinfo.value, "msg") else str(report.longrepr)
        state.skipped.append({"case": case_id, "reason": reason})
    if report.when == "teardown" and state.journal:
        _write_progress(item.config)


def _note_progress(config, case_id: str, report) -> None:
    progress = config.stash.get(PROGRESS, None)
    if progress is None:
        return
    if report.when == "setup":
        progress.start()
    if report.failed or report.skipped:
        progress.outcome = "failed" if report.failed else "skipped"
    if report.when == "teardown":
        progress.finish(case_id)


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
                                 "benchmarks": benchmarks, "wattbench": state.run_block(benchmarks, final=True)})
    if state.interrupts.pending:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
        return
    baseline = state.config.gate
    if baseline:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        try:
            code = gate_session(state.output_json or {}, Path(baseline), session.config.rootpath,
                                write=reporter.write_line if reporter else print)
        except KeyboardInterrupt:
            session.exitstatus = pytest.ExitCode.INTERRUPTED
            return
        # The gate's 2 (bad input) would read as pytest's 2 (interrupted): it is pytest's usage error here.
        session.exitstatus = max(int(session.exitstatus), pytest.ExitCode.USAGE_ERROR if code == 2 else code)


def gate_session(output_json: dict, baseline: Path, config_root: Path, write: Callable[[str], None] = print) -> int:
    """The gate at the end of a pytest run (--wattbench-gate): the verdict through `write`, bad input as one
    line on stderr; 0 pass, 1 regression, 2 bad input."""
    from wattbench.cli import show_gate
    from wattbench.gate import gate_output_json

    try:
        return show_gate(gate_output_json(output_json, baseline, config_root), write=write)
    except UsageError as exc:
        print(f"wattbench: error: {exc}", file=sys.stderr)
        return 2


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
        machine_info["wattbench"] = environment.describe(config.stash[STATE].config.device)


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
    output_json["wattbench"] = state.run_block(output_json["benchmarks"], final=True)
    state.output_json = output_json
    if state.journal:
        state.journal.write(output_json)
