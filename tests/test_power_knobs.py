"""Power limits and locked clocks: parsing, validation before anything changes, apply/readback/settle, and the
originals put back on every way a sweep can end, against tests/fake_knobs.py's GPU (a faked pynvml with real
NVML error codes, its state in a JSON file that outlives processes) and fake sysfs trees."""

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest
from fake_knobs import GPU, NAME, UUID, cpufreq_tree, fake_gpu_nvml, rapl_tree, values

from wattbench import cli
from wattbench.device import Device
from wattbench.errors import UsageError
from wattbench.power import knobs, sysfs
from wattbench.power.knobs import DEFAULT, KnobError, KnobSession, Setting

CHILD = Path(__file__).parent / "knob_child.py"
CPU = Device("cpu", None, "Test CPU")


@pytest.fixture
def state_home(tmp_path, monkeypatch):
    """The state file's folder, as XDG_STATE_HOME; returns the state file."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return knobs.state_file()


@pytest.fixture
def gpu(tmp_path, state_home):
    with fake_gpu_nvml(tmp_path / "gpu.json") as fake_gpu:
        yield fake_gpu


@pytest.fixture
def host(tmp_path):
    """A fake sysfs tree: two RAPL packages at 95 W (at most 125 W), two cpufreq policies at 3500 MHz."""
    root = tmp_path / "sys"
    return root, rapl_tree(root), cpufreq_tree(root)


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# -- parsing and identity -------------------------------------------------------------------------

@pytest.mark.parametrize("text, knob, expected", [
    ("300,200, 250W", "gpu_power_limit", [200, 250, 300]),
    ("200:400:100", "gpu_power_limit", [200, 300, 400]),
    ("200:450:100,300", "gpu_power_limit", [200, 300, 400]),
    ("900MHz,1200mhz", "gpu_sm_clock", [900, 1200]),
    ("2000", "cpu_max_freq", [2000]),
])
def test_values_are_lists_or_ranges_with_optional_units(text, knob, expected):
    assert knobs.parse_values(text, knob) == expected


@pytest.mark.parametrize("text, why", [
    ("abc", "'abc' is not a whole number of W"), ("200MHz", "'200MHz' is in MHz, not W"),
    ("400:200:50", "min is above max"), ("200:300:0", "'0' is not positive"), ("1:2", "neither a value nor"),
    ("", "no values"), ("212.5", "not a whole number"), ("1:1000:1", "more than 64 values"),
    ("1:10000000000:1", "more than 64 values"), (",".join(map(str, range(1, 66))), "more than 64 values"),
])
def test_a_bad_value_is_one_line_naming_the_option_and_an_example(text, why):
    with pytest.raises(UsageError) as err:
        knobs.parse_values(text, "gpu_power_limit")
    assert one_line(err).startswith(f"--power-limits {text!r}: ") and why in str(err.value)
    assert "e.g. 200,300 or 200:400:50" in str(err.value)


def test_each_setting_names_itself_in_records():
    assert DEFAULT.id == "default"
    assert [Setting(knob, value).id for knob, value in (("gpu_power_limit", 300), ("gpu_sm_clock", 1200),
                                                       ("gpu_mem_clock", 2619), ("cpu_power_limit", 50),
                                                       ("cpu_max_freq", 2000))] == \
        ["pl300w", "sm1200mhz", "mem2619mhz", "cpupl50w", "cpufreq2000mhz"]
    assert Setting("gpu_power_limit", 300).describe() == {"id": "pl300w", "knob": "gpu_power_limit", "value": 300,
                                                          "unit": "W"}


# -- validation, before anything changes ---------------------------------------------------------------

def assert_gpu_untouched(gpu):
    """Nothing changed: no clock locked, and the power limit at most written with the value in force (the
    permission probe)."""
    gpu.fake.nvmlDeviceSetGpuLockedClocks.assert_not_called()
    gpu.fake.nvmlDeviceSetMemoryLockedClocks.assert_not_called()
    assert {call.args[1] for call in gpu.fake.nvmlDeviceSetPowerManagementLimit.call_args_list} <= {700_000}
    assert gpu.state()["power_limit_mw"] == 700_000 and gpu.state()["sm_lock"] is None


def test_a_power_limit_outside_the_gpus_range_is_refused_before_anything_changes(gpu, state_home):
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(GPU, power_limits="100,300")
    assert one_line(err) == (f"--power-limits 100 W: outside the {NAME}'s range 200-700 W "
                             "(nvmlDeviceGetPowerManagementLimitConstraints); give values in it")
    assert_gpu_untouched(gpu)
    assert not state_home.exists()
    assert gpu.fake.nvmlInit.call_count == gpu.fake.nvmlShutdown.call_count == 1  # NVML released


@pytest.mark.parametrize("option, value, nearest", [("sm_clocks", "1234", "1230, 1245"),
                                                    ("mem_clocks", "1593", "2619")])
def test_a_clock_that_is_not_supported_is_refused_with_the_nearest_ones(gpu, option, value, nearest):
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(GPU, **{option: value})
    assert f"{value} MHz: not a supported" in one_line(err) and f"nearest: {nearest} MHz" in str(err.value)
    assert "nvmlDeviceGetSupported" in str(err.value)
    assert_gpu_untouched(gpu)


@pytest.mark.parametrize("option, value", [("power_limits", "300"), ("sm_clocks", "1200"), ("mem_clocks", "2619")])
def test_without_root_the_refusal_names_the_fix_and_nvmls_code(tmp_path, state_home, option, value):
    with fake_gpu_nvml(tmp_path / "gpu.json", root=False) as gpu:
        with pytest.raises(UsageError) as err:
            knobs.plan_sweep(GPU, **{option: value})
    message = one_line(err)
    assert message.startswith("--" + option.replace("_", "-") + ": ")
    assert "needs root or admin rights" in message and f"(NVML error {pynvml.NVML_ERROR_NO_PERMISSION})" in message
    assert_gpu_untouched(gpu)


@pytest.mark.parametrize("option, unsupported, what", [
    ("power_limits", "nvmlDeviceGetPowerManagementLimitConstraints", "reading the GPU power limit"),
    ("sm_clocks", "nvmlDeviceResetGpuLockedClocks", "locking the NVIDIA H100 80GB HBM3 SM clock"),
])
def test_a_knob_the_gpu_does_not_support_is_explained_with_nvmls_code(tmp_path, state_home, option, unsupported,
                                                                      what):
    with fake_gpu_nvml(tmp_path / "gpu.json", unsupported=[unsupported]):
        with pytest.raises(UsageError) as err:
            knobs.plan_sweep(GPU, **{option: "1200" if option == "sm_clocks" else "300"})
    code = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert f"{what}: not supported on this GPU or driver (NVML error {code})" in one_line(err)


def test_gpu_knobs_need_a_whole_cuda_gpu(gpu):
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(CPU, power_limits="300")
    assert "need a CUDA device; the device is cpu" in one_line(err)
    gpu.fake.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(GPU, power_limits="300")
    assert "MIG mode" in one_line(err) and "other tenants" in str(err.value)
    assert_gpu_untouched(gpu)


def test_nothing_asked_is_refused(gpu):
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(GPU)
    assert "--power-limits, --sm-clocks, --mem-clocks, --cpu-power-limits, --cpu-max-freqs" in one_line(err)


@pytest.mark.parametrize("error, fix", [(PermissionError(13, "Permission denied"), "needs root"),
                                        (OSError(30, "Read-only file system"), "mounted read-only")])
def test_sysfs_knobs_that_cannot_be_written_name_the_fix(host, monkeypatch, error, fix):
    root, rapl, cpufreq = host

    def denied(path, value):
        raise error
    monkeypatch.setattr(sysfs, "write_int", denied)
    for option in ("cpu_power_limits", "cpu_max_freqs"):
        with pytest.raises(UsageError) as err:
            knobs.plan_sweep(CPU, sysfs_root=str(root), **{option: "50" if option == "cpu_power_limits" else "2000"})
        assert one_line(err).startswith("--" + option.replace("_", "-") + ": cannot write ") and fix in str(err.value)
    assert values(rapl) == [95_000_000] * 2 and values(cpufreq) == [3_500_000] * 2


def test_cpu_values_are_checked_against_the_hosts_range_and_frequencies(tmp_path):
    root = tmp_path / "sys"
    rapl_tree(root)
    cpufreq_tree(root, available_mhz=[800, 1200, 2000, 3500])
    cases = {("cpu_power_limits", "200"): "200 W: outside this host's range 1-125 W",
             ("cpu_max_freqs", "4000"): "4000 MHz: outside this host's range 800-3500 MHz",
             ("cpu_max_freqs", "2100"): "2100 MHz: not one of this host's frequencies "
                                        "(scaling_available_frequencies); nearest: 1200, 2000 MHz"}
    for (option, value), message in cases.items():
        with pytest.raises(UsageError) as err:
            knobs.plan_sweep(CPU, sysfs_root=str(root), **{option: value})
        assert message in one_line(err)


def test_without_a_maximum_a_rapl_limit_may_only_be_lowered_and_one_switched_off_is_refused(tmp_path):
    root = tmp_path / "sys"
    zones = rapl_tree(root, packages=1, max_w=None)
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(CPU, cpu_power_limits="100", sysfs_root=str(root))
    assert "outside this host's range 1-95 W" in one_line(err)
    (zones[0].parent / "enabled").write_text("0\n")
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(CPU, cpu_power_limits="50", sysfs_root=str(root))
    assert "RAPL power limiting is off on package-0" in one_line(err)
    with pytest.raises(UsageError) as err:
        knobs.plan_sweep(CPU, cpu_power_limits="50", sysfs_root=str(tmp_path / "empty"))
    assert "no RAPL package zones" in one_line(err)


def test_the_knobs_of_a_device_are_listed_without_writing_anything(gpu, host):
    root, rapl, cpufreq = host
    rows = {row["knob"]: row for row in knobs.list_knobs(GPU, str(root))}
    assert rows["gpu_power_limit"]["valid"] == "200-700 W" and rows["gpu_power_limit"]["original"] == "700 W"
    assert rows["gpu_sm_clock"]["valid"] == "110 supported clocks, 345-1980 MHz"
    assert rows["gpu_mem_clock"]["valid"] == "2619 MHz only"
    assert rows["cpu_power_limit"]["original"] == "package-0 95 W, package-1 95 W"
    assert rows["cpu_max_freq"]["valid"] == "800-3500 MHz"
    assert_gpu_untouched(gpu)
    gpu.fake.nvmlDeviceResetGpuLockedClocks.assert_not_called()
    on_cpu = {row["knob"]: row for row in knobs.list_knobs(CPU, str(root))}
    assert not on_cpu["gpu_power_limit"]["available"] and "need a CUDA device" in on_cpu["gpu_power_limit"]["reason"]
    assert on_cpu["cpu_max_freq"]["available"]


# -- a sweep: state file, apply, restore after each setting, readback ---------------------------------

def full_plan(root):
    return knobs.plan_sweep(GPU, power_limits="300", sm_clocks="1200", cpu_power_limits="50", cpu_max_freqs="2000",
                            sysfs_root=str(root))


def test_the_originals_are_on_disk_before_the_first_change_and_back_after_each_setting(gpu, host, state_home):
    root, rapl, cpufreq = host
    changes = []
    gpu.before_change = lambda name, args: changes.append((name, args, state_home.exists()))
    plan = full_plan(root)
    assert [setting.id for setting in plan.settings] == ["default", "pl300w", "sm1200mhz", "cpupl50w",
                                                         "cpufreq2000mhz"]
    probes = len(changes)  # permission probes write the values already in force, before the state file exists
    assert not state_home.exists()
    seen = {}
    with KnobSession(plan) as session:
        recorded = json.loads(state_home.read_text())
        for setting in plan.settings:
            with session.applied(setting, poll_s=0.001) as applied:
                assert applied.setting == setting
                seen[setting.id] = (gpu.state()["power_limit_mw"], gpu.state()["sm_lock"], values(rapl),
                                    values(cpufreq))
    assert all(existed for _, _, existed in changes[probes:])
    assert recorded["format"] == knobs.STATE_FORMAT and recorded["process"]["pid"] == os.getpid()
    assert recorded["originals"][:2] == [{"knob": "gpu_power_limit", "gpu": UUID, "original_w": 700.0},
                                         {"knob": "gpu_sm_clock", "gpu": UUID, "original": "unlocked"}]
    assert recorded["originals"][2] == {"knob": "cpu_power_limit", "files": {str(p): 95_000_000 for p in rapl}}
    found = (700_000, None, [95_000_000] * 2, [3_500_000] * 2)
    assert seen == {"default": found, "pl300w": (300_000, *found[1:]), "sm1200mhz": (700_000, 1200, *found[2:]),
                    "cpupl50w": (700_000, None, [50_000_000] * 2, found[3]),
                    "cpufreq2000mhz": (*found[:3], [2_000_000] * 2)}
    assert (gpu.state()["power_limit_mw"], gpu.state()["sm_lock"], values(rapl), values(cpufreq)) == found
    assert not state_home.exists()


def test_an_exception_during_a_setting_puts_everything_back_and_goes_on(gpu, state_home):
    plan = knobs.plan_sweep(GPU, power_limits="250")
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with KnobSession(plan) as session:
            with session.applied(plan.settings[1], poll_s=0.001):
                assert gpu.state()["power_limit_mw"] == 250_000
                raise RuntimeError("benchmark failed")
    assert gpu.state()["power_limit_mw"] == 700_000 and not state_home.exists()
    assert gpu.fake.nvmlInit.call_count == gpu.fake.nvmlShutdown.call_count


def test_a_leftover_state_file_is_never_overwritten(gpu, state_home):
    knobs.write_state(state_home, {"format": knobs.STATE_FORMAT, "process": {"pid": -1}, "started_utc": "then",
                                   "originals": [{"knob": "gpu_power_limit", "gpu": UUID, "original_w": 650.0}]})
    before = state_home.read_text()
    plan = knobs.plan_sweep(GPU, power_limits="300")
    with pytest.raises(UsageError) as err:
        with KnobSession(plan):
            pass
    assert "ended without putting back" in one_line(err) and "run `wattbench sweep --restore`" in str(err.value)
    assert "GPU power limit of " + UUID + " (650 W)" in str(err.value)
    assert state_home.read_text() == before
    assert gpu.state()["power_limit_mw"] == 700_000
    assert gpu.fake.nvmlInit.call_count == gpu.fake.nvmlShutdown.call_count


def test_a_readback_flags_a_setting_that_does_not_hold(gpu, state_home):
    plan = knobs.plan_sweep(GPU, power_limits="300", sm_clocks="1500")
    default, limited, locked = plan.settings
    with KnobSession(plan) as session:
        with session.applied(limited, poll_s=0.001) as applied:
            assert applied.readback()["held"] is True
            gpu.update(power_limit_mw=250_000)  # another process changed it
            changed = applied.readback()
            gpu.update(power_limit_mw=300_000, other_cap_mw=280_000)  # another limiter caps it lower
            capped = applied.readback()
            gpu.update(other_cap_mw=None)
        with session.applied(locked, poll_s=0.001) as applied:
            gpu.update(sm_clock_now=1490)
            close = applied.readback()
            gpu.update(sm_clock_now=1300, events=pynvml.nvmlClocksEventReasonSwPowerCap)
            throttled = applied.readback()
            gpu.update(sm_clock_now=None, events=0, unsupported=["nvmlDeviceGetClockInfo"])
            unread = applied.readback()
            gpu.update(unsupported=[])
        with session.applied(default, poll_s=0.001) as applied:
            gpu.update(power_limit_mw=500_000)
            default_changed = applied.readback()
            gpu.update(power_limit_mw=700_000)
    assert changed["held"] is False and changed["setting"] == "pl300w"
    assert changed["reasons"] == ["GPU power limit: the power limit reads 250 W, not 300 W"]
    assert changed["in_force"]["gpu_power_limit"] == {"power_limit_w": 250.0, "enforced_power_limit_w": 250.0}
    assert capped["held"] is False and "enforced power limit is 280 W, below the 300 W set" in capped["reasons"][0]
    assert close["held"] is True
    assert throttled["held"] is False
    assert throttled["reasons"] == ["locked GPU SM clock: the SM clock is 1300 MHz, not the 1500 MHz locked "
                                    "(sw_power_cap)"]
    assert unread["held"] is None and "not supported" in unread["reasons"][0]
    assert default_changed["held"] is False and "reads 500 W, not 700 W" in default_changed["reasons"][0]
    summary = knobs.held_over([close, throttled, throttled])
    assert summary["held"] is False and summary["reasons"] == throttled["reasons"]
    assert knobs.held_over([close, unread])["held"] is None and knobs.held_over([close, close])["held"] is True


def test_a_change_that_does_not_take_effect_is_an_error_and_is_put_back_at_once(gpu, state_home):
    plan = knobs.plan_sweep(GPU, power_limits="300")
    gpu.update(power_mw=400_000)  # the board keeps drawing more than the new limit
    with KnobSession(plan) as session:
        with pytest.raises(KnobError) as err:
            with session.applied(plan.settings[1], timeout_s=0.05, poll_s=0.01):
                pytest.fail("a setting that did not take effect was measured")
        assert gpu.state()["power_limit_mw"] == 700_000
    assert "pl300w did not take effect within 0.05 s: GPU power limit: the GPU draws 400 W, over the 300 W limit" \
        in str(err.value)
    gpu.update(power_mw=90_000, ignores_changes=True)  # the driver accepts the call and changes nothing
    plan = knobs.plan_sweep(GPU, power_limits="300")
    with KnobSession(plan) as session:
        with pytest.raises(KnobError, match="the power limit reads 700 W, not 300 W"):
            with session.applied(plan.settings[1], timeout_s=0.05, poll_s=0.01):
                pass


def test_settling_waits_for_steady_readbacks(gpu, state_home):
    plan = knobs.plan_sweep(GPU, power_limits="300")
    gpu.update(power_mw=400_000)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
        if now[0] >= 0.2:
            gpu.update(power_mw=280_000)  # the power trace comes down under the new limit
    with KnobSession(plan) as session:
        with session.applied(plan.settings[1], poll_s=0.1, clock=lambda: now[0], sleep=sleep) as applied:
            assert applied.settle_s == pytest.approx(0.2 + (knobs.STEADY_READS - 1) * 0.1)


# -- signals in this process -------------------------------------------------------------------------

@pytest.fixture
def sigterm_seen():
    """A SIGTERM handler already installed (as a runner's would be) that notes each signal; put back after."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    yield seen
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_restores_first_then_runs_the_handler_that_was_there(gpu, state_home, sigterm_seen):
    handler = signal.getsignal(signal.SIGTERM)
    plan = knobs.plan_sweep(GPU, power_limits="200,300")
    with KnobSession(plan) as session:
        assert signal.getsignal(signal.SIGTERM) != handler
        with session.applied(plan.settings[1], poll_s=0.001):
            signal.raise_signal(signal.SIGTERM)
            assert sigterm_seen == [signal.SIGTERM]
            assert gpu.state()["power_limit_mw"] == 700_000 and not state_home.exists()
        assert session.interrupted == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == handler  # a second signal goes straight to it
        with pytest.raises(KnobError, match="interrupted"):
            with session.applied(plan.settings[2]):
                pass
    assert gpu.state()["power_limit_mw"] == 700_000 and signal.getsignal(signal.SIGTERM) == handler


def test_ctrl_c_restores_and_is_a_keyboard_interrupt(gpu, state_home):
    plan = knobs.plan_sweep(GPU, power_limits="200")
    with pytest.raises(KeyboardInterrupt):
        with KnobSession(plan) as session:
            with session.applied(plan.settings[1], poll_s=0.001):
                signal.raise_signal(signal.SIGINT)
                pytest.fail("SIGINT did not interrupt")
    assert gpu.state()["power_limit_mw"] == 700_000 and not state_home.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored(gpu, state_home):
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with KnobSession(knobs.plan_sweep(GPU, power_limits="200")):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


# -- the state file, leftovers and --restore ------------------------------------------------------

def test_the_state_file_is_per_host_in_the_xdg_state_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert knobs.state_file().parent == tmp_path / "wattbench" and knobs.state_file().name.startswith("knobs-")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    assert knobs.state_dir() == Path.home() / ".local" / "state" / "wattbench"


def test_a_state_file_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "state.json"
    knobs.write_state(path, {"first": 1})
    with pytest.raises(TypeError):
        knobs.write_state(path, {"second": object()})
    assert json.loads(path.read_text()) == {"first": 1} and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def dead(state_path: Path) -> None:
    """Make the state file's process one that has ended (same pid, another start time)."""
    state = json.loads(state_path.read_text())
    state["process"]["start_ticks"] = "0"
    state_path.write_text(json.dumps(state))


def test_a_failed_restore_keeps_the_state_file_and_restore_finishes_the_job(gpu, state_home, capsys):
    plan = knobs.plan_sweep(GPU, power_limits="300")
    with pytest.raises(KnobError) as err:
        with KnobSession(plan) as session:
            with session.applied(plan.settings[1], poll_s=0.001):
                running = knobs.leftover_warning()
                gpu.update(root=False)  # e.g. the sweep's rights were dropped
    assert "a sweep (pid" in running and "is changing this host's device settings now" in running
    assert "permission denied" in str(err.value) and "run `wattbench sweep --restore`" in str(err.value)
    assert state_home.exists() and gpu.state()["power_limit_mw"] == 300_000
    with pytest.raises(UsageError, match="a sweep is running"):
        knobs.restore_leftover()  # this process wrote it and still runs
    dead(state_home)
    assert knobs.warn_if_leftover() is True
    assert "ended without putting back" in capsys.readouterr().err
    assert knobs.restore_leftover() == 1 and state_home.exists()
    assert "the state file" in capsys.readouterr().err
    gpu.update(root=True)
    assert knobs.restore_leftover() == 0
    assert gpu.state()["power_limit_mw"] == 700_000 and not state_home.exists()
    assert "restored the GPU power limit of " + UUID in capsys.readouterr().out
    assert knobs.leftover_warning() is None and knobs.warn_if_leftover() is False


def test_restore_without_a_state_file_has_nothing_to_do_and_a_foreign_file_is_refused(state_home, capsys):
    assert cli.main(["sweep", "--restore"]) == 0
    assert "nothing to restore" in capsys.readouterr().out
    state_home.parent.mkdir(parents=True)
    state_home.write_text("{not json")
    assert cli.main(["sweep", "--restore"]) == 2
    assert "cannot read the sweep state file" in capsys.readouterr().err
    assert "cannot read the sweep state file" in knobs.leftover_warning()
    knobs.write_state(state_home, {"format": knobs.STATE_FORMAT, "process": {"pid": -1},
                                   "originals": [{"knob": "gpu_fan_speed"}]})
    assert knobs.restore_leftover() == 1 and state_home.exists()
    assert "unknown knob 'gpu_fan_speed'" in capsys.readouterr().err


def test_a_sweep_without_settings_names_the_options(capsys):
    assert cli.main(["sweep", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == ("wattbench: error: give what to sweep: --power-limits, --sm-clocks, "
                                       "--mem-clocks, --cpu-power-limits, --cpu-max-freqs\n")


def test_every_command_warns_of_a_leftover_state_file(gpu, state_home, capsys):
    plan = knobs.plan_sweep(GPU, power_limits="300")
    with KnobSession(plan):
        assert cli.main(["select", "no-such-run.json", "--workload", "gemm.infer"]) == 2
        assert "a sweep (pid " in capsys.readouterr().err  # this process is changing the settings now
    assert cli.main(["select", "no-such-run.json", "--workload", "gemm.infer"]) == 2
    assert "warning" not in capsys.readouterr().err


# -- every way a process ends: subprocesses ------------------------------------------------------------

def start_child(tmp_path, *args) -> subprocess.Popen:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=CHILD.parent)


def sweep_until(tmp_path, stop_at: str, *flags: str) -> subprocess.Popen:
    """A child sweeping until `stop_at` is in force."""
    child = start_child(tmp_path, "sweep", str(tmp_path / "gpu.json"), str(tmp_path / "sys"), stop_at, *flags)
    ready, _, _ = select.select([child.stdout], [], [], 60)
    line = child.stdout.readline() if ready else ""
    if line != f"applied {stop_at}\n":
        child.kill()
        pytest.fail(f"the child did not apply {stop_at}: {line!r} {child.communicate()}")
    return child


@pytest.fixture
def child_host(tmp_path, monkeypatch):
    """The fake GPU (a JSON file) and sysfs tree the children sweep, and this process's view of them."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = tmp_path / "sys"
    limits = rapl_tree(root) + cpufreq_tree(root)
    gpu_json = tmp_path / "gpu.json"

    def settings():
        return json.loads(gpu_json.read_text())["power_limit_mw"], values(limits)
    return settings


ORIGINALS = (700_000, [95_000_000] * 2 + [3_500_000] * 2)


def test_sigterm_restores_and_the_process_still_ends_by_sigterm(tmp_path, child_host):
    child = sweep_until(tmp_path, "pl300w")
    assert child_host() == (300_000, ORIGINALS[1]) and knobs.state_file().exists()
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGTERM
    assert child_host() == ORIGINALS and not knobs.state_file().exists()


def test_sigterm_restores_then_runs_a_handler_that_ends_the_run_like_ctrl_c(tmp_path, child_host):
    child = sweep_until(tmp_path, "cpupl50w", "--interrupt-like-ctrl-c")
    assert child_host() == (700_000, [50_000_000] * 2 + [3_500_000] * 2)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130 and "interrupted by SIGTERM" in out, err
    assert child_host() == ORIGINALS and not knobs.state_file().exists()


@pytest.mark.parametrize("stop_at, changed", [("pl200w", (200_000, ORIGINALS[1])),
                                              ("cpufreq2000mhz", (700_000, [95_000_000] * 2 + [2_000_000] * 2))])
def test_after_sigkill_the_next_command_warns_and_restore_puts_the_originals_back(tmp_path, child_host, stop_at,
                                                                                  changed):
    child = sweep_until(tmp_path, stop_at)
    child.kill()
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert child_host() == changed
    warning = knobs.leftover_warning()
    assert f"pid {child.pid}" in warning and "ended without putting back" in warning
    assert "run `wattbench sweep --restore`" in warning
    restore = start_child(tmp_path, "restore", str(tmp_path / "gpu.json"), str(tmp_path / "sys"))
    out, err = restore.communicate(timeout=60)
    assert restore.returncode == 0, err
    assert out.count("restored the ") == 3 and "removed the state file" in out
    assert child_host() == ORIGINALS and not knobs.state_file().exists()
