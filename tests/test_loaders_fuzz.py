"""Every loader, fed random, mutated and truncated input, returns or raises its documented error (UsageError;
ReplayError, a UsageError, for replay logs), never anything else; and what it accepts, its readers can use."""

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattbench import summary
from wattbench.errors import UsageError
from wattbench.gate.config import GateConfig, load_config, parse_table
from wattbench.power import replay
from wattbench.report import plots
from wattbench.report.load import load_runs, load_trace
from wattbench.specs import SHIPPED, SpecTable, load_specs
from wattbench.results import format_table, load_run

DATA = Path(__file__).parent / "data" / "report"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON_LEAVES = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def small_run(name: str) -> dict:
    """A run file of the report's test data cut to two records of six samples."""
    run = json.loads((DATA / name).read_text())
    run["benchmarks"] = [b for b in run["benchmarks"] if not b["extra_info"]["interpreted"]][:2]
    for bench in run["benchmarks"]:
        bench["extra_info"]["timing"]["samples_s"] = bench["extra_info"]["timing"]["samples_s"][:6]
    return run


def small_specs() -> dict:
    specs = json.loads(SHIPPED.read_text())
    specs["devices"] = specs["devices"][:2]
    return specs


#: A real CPU run (energy not measured) and a synthetic GPU one (energy measured).
RUNS = {name: small_run(name) for name in ("cpu_run.json", "fixture_h100.json")}
SPECS = load_specs()
GATE_TOML = ('[tool.wattbench.gate]\ntime = "4%"\nresamples = 200\n'
             '[tool.wattbench.gate.patterns."gemm.*"]\nenergy = 0.1\n')
REPLAY_LOG = "timestamp,watts\n" + "".join(f"{1700000000 + i * 0.5},{100 + i}\n" for i in range(12))


def paths_of(value, path=()):
    """Every path in a JSON document (keys and list positions), the root included."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, (*path, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from paths_of(item, (*path, position))


RUN_PATHS = [(name, path) for name, run in RUNS.items() for path in paths_of(run)]


REMOVE = object()


def put(document, path, value):
    """`document` with the value at `path` replaced (or removed, when `value` is `REMOVE`)."""
    if not path:
        return value
    copied = json.loads(json.dumps(document))
    parent = copied
    for part in path[:-1]:
        parent = parent[part]
    if value is REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copied


def load_or_usage_error(load, *args):
    """What `load` returns, or None when it raised a one-line UsageError naming its file (anything else fails)."""
    try:
        return load(*args)
    except UsageError as error:
        message = str(error)
        assert "\n" not in message and any(message.startswith(str(arg)) for arg in args if isinstance(arg, (Path, str)))
        return None


@FUZZ
@given(value=JSON_VALUES)
def test_random_json_is_a_run_file_a_spec_table_or_a_usage_error(tmp_path, value):
    path = tmp_path / "random.json"
    path.write_text(json.dumps(value))
    load_or_usage_error(load_run, path)
    load_or_usage_error(load_specs, path)
    load_or_usage_error(parse_table, value, "random")


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_are_a_usage_error(tmp_path, data):
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    load_or_usage_error(load_run, path)
    load_or_usage_error(load_specs, path)
    load_or_usage_error(replay.read_log, path)
    (tmp_path / "pyproject.toml").write_bytes(data)
    load_or_usage_error(load_config, tmp_path)



def run_gate(baseline: Path, current: Path, config_root: Path, force: bool = False, **thresholds) -> int:
    """`wattbench gate` run in `config_root` (where it reads its settings); the exit code."""
    from wattbench import cli

    flags = [f"--{name.replace('_', '-')}={value}" for name, value in thresholds.items()] + ["--force"] * force
    with contextlib.chdir(config_root):
        return cli.main(["gate", "--baseline", str(baseline), "--current", str(current), *flags])

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(RUN_PATHS), value=JSON_VALUES | st.just(REMOVE))
def test_a_run_file_with_any_field_changed_is_refused_or_usable_by_every_reader(tmp_path, capsys, where, value):
    """Whatever the loader accepts, the table, the summary, the report's loader and the gate can read."""
    name, path = where
    if not path and value is REMOVE:
        return
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(put(RUNS[name], path, value)))
    run = load_or_usage_error(load_run, changed)
    loaded = load_runs([changed], SPECS)
    if run is None:
        assert [problem for _, problem in loaded.problems]
        return
    format_table(run)
    summary.format_summary(summary.summarize(run))
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fuzz'\n")
    original = tmp_path / "original.json"
    original.write_text(json.dumps(RUNS[name]))
    assert run_gate(original, changed, config_root=tmp_path, force=True) in (0, 1, 2)
    assert run_gate(changed, original, config_root=tmp_path, force=True) in (0, 1, 2)
    capsys.readouterr()


def every_prefix(tmp_path, text: str, name: str):
    """`name` holding each proper prefix of `text` in turn, shortest first: one character appended at a time
    (rewriting the file for each prefix, a truncation apiece, took seconds)."""
    path = tmp_path / name
    path.write_text("")
    with path.open("a") as growing:
        for char in text:
            yield path
            growing.write(char)
            growing.flush()


def test_every_prefix_of_a_run_file_is_a_usage_error(tmp_path):
    run = RUNS["cpu_run.json"]
    text = json.dumps(run, indent=1)
    for path in every_prefix(tmp_path, text, "cut.json"):
        with pytest.raises(UsageError, match=r"cut\.json: not valid JSON"):
            load_run(path)
    (tmp_path / "cut.json").write_text(text)
    assert load_run(tmp_path / "cut.json") == run


def test_every_prefix_of_a_spec_file_is_a_usage_error(tmp_path):
    text = json.dumps(small_specs(), indent=1)
    for path in every_prefix(tmp_path, text, "specs.json"):
        with pytest.raises(UsageError, match=r"specs\.json: not valid JSON"):
            load_specs(path)
    (tmp_path / "specs.json").write_text(text)
    assert isinstance(load_specs(tmp_path / "specs.json"), SpecTable)


def test_every_prefix_of_a_replay_log_reads_or_is_a_replay_error(tmp_path):
    read = 0
    for path in every_prefix(tmp_path, REPLAY_LOG, "meter.csv"):
        if load_or_usage_error(replay.read_log, path) is not None:
            read += 1
    assert read > 0


def test_every_prefix_of_gate_settings_is_settings_or_a_usage_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text(GATE_TOML)
    assert load_config(tmp_path).resamples == 200
    for end in range(len(GATE_TOML)):
        (tmp_path / "pyproject.toml").write_text(GATE_TOML[:end])
        config = load_or_usage_error(load_config, tmp_path)
        assert config is None or isinstance(config, GateConfig)


CELLS = (st.floats().map(repr) | st.integers(-10**12, 10**12).map(str) | st.text(max_size=8)
         | st.datetimes().map(lambda moment: moment.isoformat()))


@FUZZ
@given(header=st.sampled_from(["timestamp,watts", "Watts,Timestamp,note", "timestamp", "x,y"]),
       rows=st.lists(st.lists(CELLS, max_size=4), max_size=8))
def test_random_csv_is_a_replay_log_or_a_replay_error(tmp_path, header, rows):
    text = io.StringIO()
    text.write(header + "\n")
    csv.writer(text).writerows(rows)
    path = tmp_path / "meter.csv"
    path.write_text(text.getvalue())
    found = load_or_usage_error(replay.read_log, path)
    if found is not None:
        times, watts = found
        assert len(times) >= 2 and all(b > a for a, b in zip(times, times[1:]))
        assert all(math.isfinite(w) and w >= 0 for w in watts)


@FUZZ
@given(table=st.dictionaries(st.sampled_from(["time", "energy", "drift", "confidence", "resamples", "seed",
                                              "patterns", "other"]), JSON_VALUES, max_size=4))
def test_random_gate_tables_are_settings_or_a_usage_error(table):
    config = load_or_usage_error(parse_table, table, "pyproject.toml [tool.wattbench.gate]")
    if config is not None:
        assert 0 <= config.threshold("gemm.infer-torch-fp32-M1", "time") < 1


TRACE_LINES = (DATA / "fixture_h100_trace.csv").read_text().splitlines(keepends=True)[:7]


def test_every_prefix_of_a_power_trace_is_a_trace_or_a_usage_error(tmp_path):
    """Every prefix is loaded; the plot is drawn from those that end a line (drawing takes a while)."""
    text = "".join(TRACE_LINES)
    line_ends = {len("".join(TRACE_LINES[:n])) for n in range(len(TRACE_LINES) + 1)}
    read = 0
    for end, path in enumerate(every_prefix(tmp_path, text, "trace.csv")):
        trace = load_or_usage_error(load_trace, path)
        if trace is not None:
            read += 1
            if end in line_ends:
                draw_or_skip(trace)
    assert read > 0


def draw_or_skip(trace):
    """Whatever the trace loader accepts, the power plot draws or skips with a reason."""
    try:
        plots.power_over_time(trace, RUNS["fixture_h100.json"])
    except plots.Skipped:
        pass


TRACE_CELLS = CELLS | st.sampled_from(["", "nvml", "counter", "instant", "gpu0:power"])


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       rows=st.lists(st.lists(TRACE_CELLS, min_size=6, max_size=6), max_size=6))
def test_random_traces_are_traces_or_a_usage_error(tmp_path, data, rows):
    path = tmp_path / "trace.csv"
    path.write_bytes(data)
    load_or_usage_error(load_trace, path)
    text = io.StringIO()
    text.write("timestamp_s,source,channel,method,watts,joules\n")
    csv.writer(text).writerows(rows)
    path.write_text(text.getvalue())
    trace = load_or_usage_error(load_trace, path)
    if trace is not None:
        draw_or_skip(trace)


@FUZZ
@given(header=st.sampled_from(["timestamp,watts", "Watts,Timestamp,note"]),
       rows=st.lists(st.lists(CELLS, min_size=2, max_size=3), max_size=6), now=st.floats(0, 4e9))
def test_random_logs_are_covering_logs_or_a_replay_error(tmp_path, header, rows, now):
    path = tmp_path / "meter.csv"
    text = io.StringIO()
    text.write(header + "\n")
    csv.writer(text).writerows(rows)
    path.write_text(text.getvalue())
    load_or_usage_error(replay.check_log, path, now)


class ReachedPytest(Exception):
    """`wattbench run` got past every check: the values were accepted."""


def refuse_or_reach_pytest(monkeypatch, capsys, argv):
    """`wattbench run ...` in this process: either one line on stderr with exit 2, or pytest would start."""
    from wattbench import cli, runner

    def pytest_main(args, plugins=()):
        raise ReachedPytest(args)

    with monkeypatch.context() as patch:
        patch.setattr(runner.pytest, "main", pytest_main)
        try:
            code = cli.main(argv)
        except ReachedPytest:
            return True
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("wattbench: error: "), (code, err)
    return False


NUMERIC_TEXT = (st.floats().map(repr) | st.integers(-10**30, 10**30).map(str) | st.text(max_size=6)
                | st.sampled_from(["0", "-0", "1e-300", "1e300", "nan", "inf", "-inf", "3", "0.5", " 7"]))
PLUGIN_NUMBERS = ["--wattbench-min-time", "--wattbench-energy-window", "--wattbench-energy-repeats",
                  "--wattbench-idle", "--wattbench-cooldown", "--wattbench-cpu-threads", "--wattbench-seed"]


def check_usable(option: str, text: str) -> None:
    """A value `wattbench run` lets through is one the run can use: what the session builds from it accepts it,
    a duration is at most the documented hour, a thread count at most the CPUs."""
    import os

    from wattbench.power import PowerConfig
    from wattbench.timing import TimingPlan

    value = (int if option in ("--wattbench-energy-repeats", "--wattbench-cpu-threads", "--wattbench-seed")
             else float)(text)
    if option == "--wattbench-min-time":
        assert 0 < value <= 3600 and TimingPlan(min_time_s=value).rounds_for(1e-3) >= 1
    elif option == "--wattbench-cpu-threads":
        assert 1 <= value <= os.cpu_count()
    elif option != "--wattbench-seed":
        field = {"--wattbench-energy-window": "min_window_s", "--wattbench-energy-repeats": "repeats",
                 "--wattbench-idle": "idle_s", "--wattbench-cooldown": "cooldown_c"}[option]
        PowerConfig(**{field: value})
        assert value <= 3600


@FUZZ
@given(option=st.sampled_from(PLUGIN_NUMBERS), value=NUMERIC_TEXT)
def test_random_values_of_every_numeric_run_option_are_usable_or_one_line(tmp_path, monkeypatch, capsys,
                                                                          option, value):
    if refuse_or_reach_pytest(monkeypatch, capsys, ["run", "--device", "cpu", "--out", str(tmp_path),
                                                    "--no-report", "--", f"{option}={value}"]):
        check_usable(option, value)


@FUZZ
@given(where=st.sampled_from(RUN_PATHS), value=JSON_VALUES | st.just(REMOVE))
def test_a_random_run_file_to_resume_is_resumed_or_one_line(tmp_path, monkeypatch, capsys, where, value):
    name, path = where
    if not path and value is REMOVE:
        return
    changed = put(RUNS[name], path, value)
    if isinstance(changed, dict) and isinstance(changed.get("wattbench"), dict):
        changed["wattbench"]["complete"] = False
    resumed = tmp_path / "runs" / "partial.json"
    resumed.parent.mkdir(exist_ok=True)
    resumed.write_text(json.dumps(changed))
    refuse_or_reach_pytest(monkeypatch, capsys, ["run", "--resume", str(resumed)])


@FUZZ
@given(latency=NUMERIC_TEXT, threshold=NUMERIC_TEXT, metric=st.sampled_from(["time", "energy"]))
def test_random_select_and_gate_numbers_are_a_result_or_one_line(tmp_path, capsys, latency, threshold, metric):
    from wattbench import cli

    run = str(DATA / "cpu_run.json")
    code = cli.main(["select", run, "--workload", "gemm.infer", "--metric", "units_per_s",
                     f"--max-latency-ms={latency}"])
    err = capsys.readouterr().err
    assert code in (0, 1) or (code == 2 and err.count("\n") == 1), (code, err)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fuzz'\n")
    code = run_gate(Path(run), Path(run), config_root=tmp_path, **{f"{metric}_threshold": threshold})
    err = capsys.readouterr().err
    assert code in (0, 1) or (code == 2 and err.count("\n") == 1), (code, err)
