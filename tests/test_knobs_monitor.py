"""The power monitor reads a sweep's settings back from (faked) NVML over every energy window: a record whose setting
held says so, one where another process changed it mid-windows is flagged and warned about."""

import time

import pytest
from fake_knobs import GPU, fake_gpu_nvml

from wattbench import schema
from wattbench.device import Device
from wattbench.power import PowerConfig, PowerMonitor, knobs, sampler as sampler_module
from wattbench.power.knobs import KnobSession
from wattbench.power.simulate import constant, live_probe

CPU = Device("cpu", None, "Test CPU")
FAST = dict(min_window_s=0.2, max_window_s=0.2, repeats=3, target_pct=None, idle_s=0.0, sample_hz=200)


@pytest.fixture
def gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(sampler_module, "CPU_BUDGET", 1.0)
    with fake_gpu_nvml(tmp_path / "gpu.json") as fake_gpu:
        yield fake_gpu


def measured(applied, step=lambda: time.sleep(0.001)) -> dict:
    with PowerMonitor(CPU, PowerConfig(**FAST), probes=[live_probe(constant(150.0), 60.0)],
                      readback=applied.readback) as monitor:
        return monitor.measure(step, lambda: None, units_per_call=1.0)


def test_a_setting_that_held_is_read_back_before_and_after_every_window(gpu):
    plan = knobs.plan_sweep(GPU, sm_clocks="1200")
    with KnobSession(plan) as session, session.applied(plan.settings[1], poll_s=0.001) as applied:
        record = measured(applied)
    check = record["setting"]
    assert check["held"] is True and check["reasons"] == []
    assert len(check["readbacks"]) == record["windows"] + 1 == 4
    assert {reading["setting"] for reading in check["readbacks"]} == {"sm1200mhz"}
    assert check["readbacks"][0]["in_force"]["gpu_sm_clock"]["sm_clock_mhz"] == 1200  # read, not assumed
    assert not any("setting" in warning for warning in record["warnings"])
    schema.ENERGY.check(record, ())


def test_a_setting_changed_during_the_windows_is_flagged(gpu):
    plan = knobs.plan_sweep(GPU, power_limits="300")
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 50:
            gpu.update(power_limit_mw=450_000)  # another process raises the limit mid-measurement
        time.sleep(0.001)

    with KnobSession(plan) as session, session.applied(plan.settings[1], poll_s=0.001) as applied:
        record = measured(applied, step)
    check = record["setting"]
    assert check["held"] is False
    assert check["reasons"] == ["GPU power limit: the power limit reads 450 W, not 300 W"]
    assert check["readbacks"][0]["held"] is True and check["readbacks"][-1]["held"] is False
    assert any(warning.startswith("the setting pl300w did not hold during the energy windows: GPU power limit")
               for warning in record["warnings"])


def test_without_a_sweep_there_is_no_setting_block():
    with PowerMonitor(CPU, PowerConfig(**FAST), probes=[live_probe(constant(150.0), 60.0)]) as monitor:
        record = monitor.measure(lambda: time.sleep(0.001), lambda: None, units_per_call=1.0)
    assert "setting" not in record
