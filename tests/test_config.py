"""RunConfig: one config from `wattbench run`'s flags or from pytest's options, serialised for workers, bad values
refused before anything runs."""

import dataclasses
import json
import os
import time

import pytest

from wattbench import plugin
from wattbench.config import (CONFIG_FORMAT, OPTIONS, OptionParser, RunConfig, from_command, from_options,
                              split_pytest_args)
from wattbench.device import INTERPRET_ENV, detect
from wattbench.errors import UsageError
from wattbench.measure import Settings
from wattbench.power import PowerConfig
from wattbench.timing import TimingPlan

SPECS = {"format": "wattbench-device-specs/1", "devices": [
    {"name": "Any device", "kind": "cpu", "match": [".*"], "peak_tflops": {"fp32": {"value": 2.0, "source": "test"}}}]}
RUN_OPTIONS = ["--wattbench-seed=7", "--wattbench-min-time=0.5", "--wattbench-cuda-graph", "--wattbench-no-flush",
               "--wattbench-energy-window=0.25", "--wattbench-energy-max-window=4", "--wattbench-energy-target=off",
               "--wattbench-energy-repeats=2", "--wattbench-idle=0", "--wattbench-cooldown=5",
               "--wattbench-cpu-threads=1", "--wattbench-eager-decode"]


@pytest.fixture
def inputs(tmp_path):
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps(SPECS))
    meter = tmp_path / "meter.csv"
    now = time.time()
    meter.write_text("timestamp,watts\n" + "".join(f"{now - 60 + i:.3f},50\n" for i in range(7200)))
    return specs, meter


class Captured:
    """A plugin that keeps the RunConfig of the session's RunState."""

    config = None

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        Captured.config = config.stash[plugin.STATE].config


def pytest_session_config(tmp_path, args, monkeypatch) -> RunConfig:
    """The RunConfig a plain `pytest` session builds from its options (in this process; nothing collected)."""
    monkeypatch.setenv(INTERPRET_ENV, os.environ.get(INTERPRET_ENV, "1"))  # configure may set it: put it back
    empty = tmp_path / "empty"
    empty.mkdir()
    code = pytest.main([str(empty), "-p", "no:cacheprovider", "--co", "-q", "--rootdir", str(empty), *args],
                       plugins=[Captured()])
    assert code == pytest.ExitCode.NO_TESTS_COLLECTED
    return Captured.config


def test_the_command_and_a_pytest_session_build_the_same_config(tmp_path, inputs, monkeypatch):
    specs, meter = inputs
    command, rest = from_command("cpu", "full", "gemm and infer", [*RUN_OPTIONS, "-x"], power_replay=meter,
                                 specs=specs)
    assert rest == ["-x"]  # what is not a run option is left for pytest
    session = pytest_session_config(tmp_path, ["--wattbench-device=cpu", "--wattbench-preset=full", "-k",
                                               "gemm and infer", f"--wattbench-power-replay={meter}",
                                               f"--wattbench-specs={specs}", *RUN_OPTIONS], monkeypatch)
    assert session == command
    assert command.plan == TimingPlan(min_time_s=0.5, flush_l2=False, cuda_graph=True)
    assert command.power == PowerConfig(min_window_s=0.25, max_window_s=4.0, target_pct=None, repeats=2, idle_s=0.0,
                                        cooldown_c=5.0, replay_path=str(meter))
    assert (command.seed, command.keyword, command.cpu_threads, command.preset) == (7, "gemm and infer", 1, "full")
    assert command.specs.find("whatever CPU").name == "Any device"  # the user's table, read once
    assert command.measuring == Settings(command.device, command.plan, 7, command.specs, preset="full",
                                         eager_decode=True)  # what measure() takes


def test_defaults_are_the_documented_ones(tmp_path, monkeypatch):
    config = pytest_session_config(tmp_path, ["--wattbench-device=cpu"], monkeypatch)
    assert config == from_command("cpu", None, None, [])[0]
    assert config.plan.min_time_s == 0.2 and config.plan.flush_l2 and not config.plan.cuda_graph
    assert config.power == PowerConfig(idle_s=10.0, repeats=3)
    assert (config.keyword, config.seed, config.run_file, config.resume, config.specs) == ("", 0, None, False, None)
    assert from_command("cpu", "full", None, [])[0].plan.min_time_s == 1.0


def test_a_worker_gets_the_same_config_through_json(tmp_path, inputs):
    specs, meter = inputs
    config, _ = from_command("cpu", "quick", "rms_norm", RUN_OPTIONS, power_replay=meter, specs=specs)
    config = config.writing_to(tmp_path / "runs" / "run.json", tmp_path / "runs" / "run.trace.csv")
    assert config.power.save_trace and config.save_trace.endswith("run.trace.csv")
    again = RunConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config
    assert again.specs.find("any").name == "Any device"  # the spec file read again in the worker


def test_a_config_from_another_format_is_refused():
    data = {**RunConfig(detect("cpu")).to_json(), "format": "wattbench-run-config/0"}
    with pytest.raises(UsageError, match=f"not a {CONFIG_FORMAT} run configuration"):
        RunConfig.from_json(data)


@pytest.mark.parametrize("args, pattern", [
    (["--wattbench-device=tpu"], r"unknown device 'tpu'"),
    (["--wattbench-preset=huge"], r"unknown preset 'huge'"),
    (["-k", "gemm and"], r"-k 'gemm and' is not a valid expression"),
    (["--wattbench-energy-repeats=0"], r"--wattbench-energy-repeats must be at least 1 and at most 100 windows"),
    (["--wattbench-min-time=nan"], r"--wattbench-min-time must be above 0"),
    (["--wattbench-energy-target=0%"], r"--wattbench-energy-target must be above 0%"),
    (["--wattbench-cpu-threads=100000"], r"--wattbench-cpu-threads must be at least 1 and at most \d+ threads"),
    (["--wattbench-run-file=/proc/x/run.json"], r"output folder '/proc/x' is not writable"),
    (["--wattbench-resume"], r"^--wattbench-resume needs --wattbench-run-file$"),
    (["--wattbench-specs=/nonexistent/specs.json"], r"/nonexistent/specs\.json: cannot read"),
    (["--wattbench-power-replay=/nonexistent/meter.csv"], r"/nonexistent/meter\.csv: cannot read"),
    (["--wattbench-seed=x"], r"argument --wattbench-seed: invalid int value: 'x'"),
])
def test_bad_values_are_refused_before_anything_runs(args, pattern):
    with pytest.raises(UsageError, match=pattern):
        given, _ = OptionParser().parse_known_args(["--wattbench-device=cpu", *args])
        from_options(lambda name: getattr(given, name))


def test_options_the_command_sets_itself_are_refused_after_the_separator():
    with pytest.raises(UsageError, match="--wattbench-preset after '--' is not for wattbench run: give wattbench "
                                         "run --preset"):
        split_pytest_args(["--wattbench-preset=full"])
    with pytest.raises(UsageError, match="-k after '--' is not for wattbench run"):
        split_pytest_args(["-k", "gemm"])


def test_every_option_fills_a_field_and_is_a_pytest_option():
    """The one declaration: each option names a RunConfig field (or one of its plan's or power config's)."""
    owners = {"": RunConfig, "plan": TimingPlan, "power": PowerConfig}
    for option in OPTIONS:
        part, _, name = option.into.rpartition(".")
        assert name in {f.name for f in dataclasses.fields(owners[part])}, option.flag
    parsed = vars(OptionParser().parse_args([]))
    assert {option.dest for option in OPTIONS} | {"keyword"} == set(parsed)
