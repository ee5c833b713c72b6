"""The formats wattbench reads (wattbench.schema): valid examples pass; every declared field, missing or of
the wrong type, gives one line naming the file and the field; newer major versions are refused."""

import copy
import json
from pathlib import Path

import pytest

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.gate.baseline import save_baseline
from wattbench.gate.config import load_config, parse_table
from wattbench.power import replay
from wattbench.specs import SHIPPED, load_specs
from wattbench.results import load_run

DATA = Path(__file__).parent / "data" / "report"
CPU_RUN = DATA / "cpu_run.json"

#: Values tried in turn as the wrong value of a field: the first one the field refuses is used.
WRONG_VALUES = ["abc", -1, 1.5, True, None, [], {}, ["abc"], {"x": 1}, ""]

GATE_TABLE = {"time": "4%", "energy": 0.1, "drift": "1%", "confidence": 0.9, "resamples": 500, "seed": 3,
              "patterns": {"attention.*": {"time": "10%"}, "*-bf16-*": {"energy": "15%"}}}


def small_run() -> dict:
    """A real run file (the CPU fixture) cut to two records of five samples, to keep the walks short."""
    run = json.loads(CPU_RUN.read_text())
    run["benchmarks"] = run["benchmarks"][:2]
    for bench in run["benchmarks"]:
        bench["extra_info"]["timing"]["samples_s"] = bench["extra_info"]["timing"]["samples_s"][:5]
    return run


def small_specs() -> dict:
    specs = json.loads(SHIPPED.read_text())
    specs["devices"] = specs["devices"][:2]
    return specs


def fields(node, value, path=()):
    """(path, node, required) of every declared field that `value` holds (the first two items of each list)."""
    if isinstance(node, schema.Rule):
        yield from fields(node.base, value, path)
    elif isinstance(node, schema.AnyOf):
        chosen = next((option for option in node.options if option.takes(value)), None)
        if chosen is not None:
            yield from fields(chosen, value, path)
    elif isinstance(node, schema.ListOf) and isinstance(value, list):
        for position, item in enumerate(value[:2]):
            yield (*path, position), node.item, False
            yield from fields(node.item, item, (*path, position))
    elif isinstance(node, schema.MapOf) and isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), node.value, False
            yield from fields(node.value, item, (*path, key))
    elif isinstance(node, schema.Obj) and isinstance(value, dict):
        for name, child in {**node.required, **node.optional}.items():
            if name in value:
                yield (*path, name), child, name in node.required
                yield from fields(child, value[name], (*path, name))


def get(value, path):
    for part in path:
        value = value[part]
    return value


def replaced(value, path, new):
    copied = copy.deepcopy(value)
    get(copied, path[:-1])[path[-1]] = new
    return copied


def deleted(value, path):
    copied = copy.deepcopy(value)
    del get(copied, path[:-1])[path[-1]]
    return copied


def wrong_value(node):
    for candidate in WRONG_VALUES:
        try:
            node.check(candidate, ())
        except schema.Problem:
            return candidate
    return None


def check_run(data):
    schema.check_run(data, "run.json")


def check_specs(data):
    schema.check_specs(data, "specs.json")


def check_gate(table):
    parse_table(table, "pyproject.toml [tool.wattbench.gate]")


FORMATS = {  # name: (valid example, its schema, the check a loader runs, the file name its errors start with)
    "run file": (small_run, schema.RUN_FILE, check_run, "run.json"),
    "spec table": (small_specs, schema.SPEC_TABLE, check_specs, "specs.json"),
    "gate settings": (lambda: GATE_TABLE, schema.GATE_SETTINGS, check_gate, "pyproject.toml [tool.wattbench.gate]"),
}


def assert_names_field(error, source, path):
    message = str(error)
    where = schema.field_path(path)
    assert message.startswith(f"{source}: ") and "\n" not in message, message
    assert where in message or f"{schema.field_path(path[:-1])} has no {path[-1]!r}" in message, (where, message)


@pytest.mark.parametrize("name", FORMATS)
def test_valid_examples_pass(name):
    example, _, check, _ = FORMATS[name]
    check(example())


@pytest.mark.parametrize("name", ["run file", "spec table"])  # every gate setting is optional
def test_every_missing_required_field_is_named(name):
    example, node, check, source = FORMATS[name]
    value = example()
    paths = [path for path, _, required in fields(node, value) if required]
    assert paths
    for path in paths:
        with pytest.raises(UsageError) as caught:
            check(deleted(value, path))
        assert_names_field(caught.value, source, path)


@pytest.mark.parametrize("name", FORMATS)
def test_every_field_of_the_wrong_type_is_named(name):
    example, node, check, source = FORMATS[name]
    value = example()
    tried = 0
    for path, field_node, _ in fields(node, value):
        wrong = wrong_value(field_node)
        if wrong is None:
            continue
        tried += 1
        with pytest.raises(UsageError) as caught:
            check(replaced(value, path, wrong))
        assert_names_field(caught.value, source, path)
    assert tried > 5


def test_the_message_quotes_the_bad_value():
    run = small_run()
    run["benchmarks"][1]["extra_info"]["median_s"] = "abc"
    with pytest.raises(UsageError) as caught:
        check_run(run)
    assert str(caught.value) == "run.json: benchmarks[1].extra_info.median_s: expected a number or null, got 'abc'"


def test_energy_needs_its_companions_when_measured():
    run = small_run()
    run["benchmarks"][0]["extra_info"]["energy"].update(joules_per_unit=0.5, units_per_joule=2.0, method="counter")
    with pytest.raises(UsageError, match=r"energy\.avg_power_w: required when joules_per_unit is given"):
        check_run(run)


@pytest.mark.parametrize("version", ["wattbench-run/1", "wattbench-run/1.7"])
def test_format_1_and_its_minor_versions_load(version):
    run = small_run()
    run["wattbench"]["format"] = version
    run["wattbench"]["a_field_from_a_later_minor_version"] = {"anything": [1]}
    check_run(run)


def test_run_files_without_a_format_field_are_format_1():
    run = small_run()
    del run["wattbench"]["format"]
    check_run(run)


def test_partial_run_files_are_valid(tmp_path):
    run = small_run()
    run["wattbench"]["complete"] = False
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(run))
    assert load_run(path)["wattbench"]["complete"] is False


@pytest.mark.parametrize("check, source, block, current", [
    (check_run, "run.json", lambda data: data["wattbench"], "wattbench-run/1"),
    (check_specs, "specs.json", lambda data: data, "wattbench-device-specs/1"),
])
def test_a_newer_major_version_is_refused(check, source, block, current):
    data = small_run() if source == "run.json" else small_specs()
    name = current.split("/")[0]
    block(data)["format"] = f"{name}/2"
    with pytest.raises(UsageError) as caught:
        check(data)
    assert str(caught.value) == (f"{source}: format {name}/2 is newer than this wattbench understands ({current}): "
                                 f"upgrade wattbench")


@pytest.mark.parametrize("value", ["pytest-benchmark/1", "wattbench-run", "wattbench-run/x", 1, None])
def test_another_format_is_refused_by_name(value):
    run = small_run()
    run["wattbench"]["format"] = value
    with pytest.raises(UsageError, match=r"^run\.json: wattbench\.format: expected 'wattbench-run/1', got"):
        check_run(run)


def test_an_older_major_version_is_refused():
    run = small_run()
    run["wattbench"]["format"] = "wattbench-run/0"
    with pytest.raises(UsageError, match="older than any this wattbench reads"):
        check_run(run)


def test_pytest_benchmark_json_without_wattbench_fields_is_refused(tmp_path):
    plain = small_run()
    del plain["wattbench"]
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(plain))
    with pytest.raises(UsageError, match=r"plain\.json: not a wattbench run file: no 'wattbench' block"):
        load_run(path)


def test_a_saved_baseline_is_a_valid_run_file_and_its_block_is_checked(tmp_path, capsys):
    source = tmp_path / "run.json"
    source.write_text(json.dumps(small_run()))
    saved = json.loads(save_baseline(source, "cpu", tmp_path / "baselines").path.read_text())
    check_run(saved)
    del saved["wattbench"]["baseline"]["name"]
    with pytest.raises(UsageError, match=r"^run\.json: wattbench\.baseline\.name: required, but missing$"):
        check_run(saved)


def test_spec_values_the_types_leave_are_checked_with_the_field_named(tmp_path):
    specs = small_specs()
    specs["devices"][1]["kind"] = "tpu"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(specs))
    with pytest.raises(UsageError, match=r"mine\.json: devices\[1\]\.kind must be 'gpu' or 'cpu', got 'tpu'"):
        load_specs(path)
    specs["devices"][1].update(kind="gpu", match=["ok", "("])
    path.write_text(json.dumps(specs))
    with pytest.raises(UsageError, match=r"mine\.json: devices\[1\]\.match\[1\]: bad match pattern"):
        load_specs(path)


def test_unknown_gate_keys_are_refused_with_the_known_ones():
    with pytest.raises(UsageError, match=r"^where: unknown key 'tim': expected a table with keys from confidence, "
                                         r"drift, energy, patterns, resamples, seed, time$"):
        parse_table({"tim": "5%"}, "where")
    with pytest.raises(UsageError, match=r"^where: patterns\.'x\*': expected a table of thresholds"):
        parse_table({"patterns": {"x*": {}}}, "where")


def test_a_gate_table_that_is_not_a_table_is_named(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.wattbench]\ngate = 3\n")
    with pytest.raises(UsageError, match=r"pyproject\.toml \[tool\.wattbench\.gate\]: expected a table"):
        load_config(tmp_path)
    (tmp_path / "pyproject.toml").write_text("tool = 3\n")
    assert load_config(tmp_path).source == "defaults"


@pytest.mark.parametrize("header", ["timestamp,power", "time,watts", ""])
def test_a_replay_log_must_name_both_columns(tmp_path, header):
    path = tmp_path / "meter.csv"
    path.write_text(f"{header}\n1,2\n2,3\n")
    with pytest.raises(UsageError, match=r"meter\.csv: the header must name a 'timestamp' and a 'watts' column"):
        replay.read_log(path)


def test_replay_errors_are_usage_errors_and_value_errors(tmp_path):
    path = tmp_path / "meter.csv"
    path.write_bytes(b"timestamp,watts\n\xff\xfe,1\n")
    with pytest.raises(replay.ReplayError, match=r"meter\.csv: not a CSV text file") as caught:
        replay.read_log(path)
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    with pytest.raises(UsageError, match=r"absent\.csv: cannot read"):
        replay.read_log(tmp_path / "absent.csv")


def test_field_paths_quote_keys_that_are_not_names():
    assert schema.field_path(("benchmarks", 3, "extra_info", "median_s")) == "benchmarks[3].extra_info.median_s"
    assert schema.field_path(("patterns", "attention.*", "time")) == "patterns.'attention.*'.time"
    assert schema.field_path(()) == ""


def test_long_values_are_cut_to_one_short_line():
    assert schema.shown("x" * 100) == repr("x" * 40 + "...")
    assert schema.shown("a\nb") == "'a\\nb'"
    assert (schema.shown(None), schema.shown(True), schema.shown([1]), schema.shown({})) == \
        ("null", "true", "a list", "an object")
