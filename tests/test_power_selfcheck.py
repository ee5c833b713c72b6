"""The self-checks: the deterministic accuracy targets hold, and both print their figures."""

import statistics

import numpy as np
import pytest

from wattbench.power import selfcheck, simulate


@pytest.fixture(scope="module")
def rows():
    return selfcheck.accuracy_rows(seed=0)


def test_counter_error_is_under_one_percent_in_every_ten_second_window(rows):
    for row in rows:
        assert row["counter_worst_pct"] < 1.0, row


def test_instant_mean_is_within_five_percent_and_its_uncertainty_covers_the_error(rows):
    for row in rows:
        if not row["aliased"]:
            assert abs(row["instant_err_pct"]) < 5.0, row
        assert row["instant_unc_pct"] >= abs(row["instant_err_pct"]), row


def test_update_points_beat_interpolating_over_stale_readings(rows):
    assert statistics.fmean(r["counter_worst_pct"] for r in rows) < \
        statistics.fmean(r["stale_interp_worst_pct"] for r in rows)


def test_power_accuracy_prints_every_trace_and_exits_zero(capsys):
    assert selfcheck.power_accuracy() == 0
    out = capsys.readouterr().out
    assert all(name in out for name in selfcheck.TRACES) and "all targets met" in out


def test_sampler_overhead_prints_the_target_figures_and_their_controls(capsys):
    code = selfcheck.sampler_overhead(seconds=0.3, trials=3)
    out = capsys.readouterr().out
    assert code in (0, 1) and ("all targets met" in out) == (code == 0)
    for measure in ("sampler thread CPU, % of one core, machine idle", "workload running",
                    "sampling on vs off", "bare loop CPU", "sampling on vs bare loop"):
        assert measure in out


def test_sampler_overhead_measures_this_hosts_sensors_where_there_are_any(capsys, monkeypatch):
    from wattbench.device import Device
    from wattbench.power.simulate import constant, live_probe

    cpu = Device("cpu", None, "Test CPU")
    label, pcts = selfcheck.host_sensor_cpu_pct(cpu, 100.0, 0.2)
    assert label.startswith("none: ") and "nvml" in label and pcts == []  # no sensor on this machine
    closed = []
    probe = live_probe(constant(100.0), 60.0)
    probe.close = lambda: closed.append(True)
    monkeypatch.setattr(selfcheck, "probe_sources", lambda device, config: [probe])
    label, pcts = selfcheck.host_sensor_cpu_pct(cpu, 100.0, 0.2)
    assert label == "sim:counter, sim:instant" and len(pcts) == 2 and all(p > 0 for p in pcts) and closed
    selfcheck.sampler_overhead(seconds=0.2, trials=3, device=cpu)
    out = capsys.readouterr().out
    assert "this host's sensors: sim:counter, sim:instant" in out
    assert "sampler thread CPU with them, % of one core, workload running" in out


def test_thread_cpu_share_grows_with_the_cost_of_each_read():
    cheap = selfcheck.thread_cpu_pct(selfcheck.nvml_like_channels(0.0), 100.0, 0.5, busy=False)
    costly = selfcheck.thread_cpu_pct(selfcheck.nvml_like_channels(1e-3), 100.0, 0.5, busy=False)
    assert costly > cheap + 10  # two 1 ms reads at 100 Hz: about 20% of a core


def test_simulated_sensor_updates_every_100_ms_and_averages_the_last_25_ms():
    sensor = simulate.SimulatedSensor(simulate.square_wave(100.0, 300.0, 0.1, duty=0.25), 2.0)
    polls = np.arange(0.5, 1.0, 0.01)
    counter = sensor.counter_j(polls)
    assert len(np.unique(counter)) == 5  # five 100 ms updates in 0.5 s
    # High for the first 25 ms of each 100 ms: the last 25 ms before an update are low.
    assert sensor.instant_w(np.array([0.55]))[0] == pytest.approx(100.0)
    assert sensor.average_w(np.array([1.55]))[0] == pytest.approx(150.0)
    assert sensor.true_energy(0.0, 1.0) == pytest.approx(150.0)
