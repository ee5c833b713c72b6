"""The self-checks: the deterministic accuracy targets hold, and both print their figures."""

import random
import statistics
import time

import numpy as np
import pytest

from wattbench.power import simulate
from wattbench.selfcheck import power as selfcheck


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
    assert all(name in out for name in selfcheck.BENCHMARKS)
    assert "error against the window length" in out and "adaptive windows at the defaults" in out


def test_the_error_and_the_reported_uncertainty_fall_with_the_window_length():
    rows = selfcheck.length_rows(trials=3)
    for update_s in selfcheck.UPDATE_PERIODS_S:
        for name in list(selfcheck.BENCHMARKS)[:2]:
            row = [r for r in rows if r["update_s"] == update_s and r["benchmark"] == name]
            assert [r["length_s"] for r in row] == list(selfcheck.WINDOW_LENGTHS_S)
            assert row[0]["unc_pct"] > row[-1]["unc_pct"] and row[0]["worst_pct"] > row[-1]["worst_pct"]
            assert all(r["covered"] == 1.0 for r in row), row


def test_adaptive_windows_cover_their_error_and_stable_power_stops_early():
    rows = selfcheck.adaptive_rows(trials=3, costs=(selfcheck.NOMINAL_COST,))
    assert all(all(row["covered"]) for row in rows), rows
    stable = [r for r in rows if r["benchmark"].startswith("constant")]
    assert all(r["seconds"] < 10 and r["reached"] == 1.0 for r in stable)  # not the 3 x 5 s of fixed windows
    bursts = [r for r in rows if "370 ms calls" in r["benchmark"]]
    assert all(r["seconds"] > max(s["seconds"] for s in stable) for r in bursts)  # long calls need long windows


@pytest.fixture
def quick_settle(monkeypatch):
    monkeypatch.setattr(selfcheck, "SETTLE_S", 0.1)


def test_sampler_overhead_prints_the_target_figures_their_controls_and_the_cost_sweep(capsys, quick_settle):
    costly = simulate.ReadCost(cpu_s=2.4e-3)
    code = selfcheck.sampler_overhead(seconds=0.3, trials=3, sweep_costs=(costly,))
    out = capsys.readouterr().out
    assert code in (0, 1) and ("all targets met" in out) == (code == 0)
    for measure in ("sampler thread CPU, % of one core, machine idle", "workload running",
                    "sampling on vs off", "bare loop CPU", "sampling on vs bare loop", "read-cost sweep"):
        assert measure in out
    (row,) = [line for line in out.splitlines() if line.startswith("2.4 ms CPU")]
    plan_hz, secondary_hz = (float(cell) for cell in row.split()[3:5])
    assert plan_hz < 10 and secondary_hz < plan_hz  # the thread slowed itself to its budget


def test_sampler_overhead_measures_this_hosts_sensors_where_there_are_any(capsys, monkeypatch, quick_settle):
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
    selfcheck.sampler_overhead(seconds=0.2, trials=3, device=cpu, sweep_costs=())
    out = capsys.readouterr().out
    assert "this host's sensors: sim:counter, sim:instant" in out
    assert "sampler thread CPU with them, % of one core, workload running" in out


def test_costly_reads_are_polled_slower_and_the_uncertainty_still_covers_the_error(capsys):
    """The sweep in simulated time: the sampler's plan for each read cost, and at every cost each
    method's reported uncertainty covers its error."""
    rows = selfcheck.sweep_rows(seed=0, traces=("constant 300 W", "square 33 ms"))
    assert all(selfcheck.covered(row) for row in rows), [r for r in rows if not selfcheck.covered(r)]
    rate = {row["cost"]: row["hz"] for row in rows}
    assert rate["1 ms CPU"] > rate["2.4 ms CPU"] > rate["6.6 ms CPU"] >= 1.0
    assert rate["0.02 ms CPU + 6.6 ms blocked"] > 10 * rate["6.6 ms CPU"]  # blocking costs no CPU
    assert selfcheck.power_accuracy(sweep_costs=(simulate.ReadCost(cpu_s=6.6e-3),), trials=2,
                                    window_costs=(selfcheck.NOMINAL_COST,)) == 0
    assert "6.6 ms CPU" in capsys.readouterr().out


def test_a_simulated_read_is_stamped_at_its_midpoint_and_reads_the_sensor_inside_it():
    sensor = simulate.SimulatedSensor(simulate.ramp(0.0, 1000.0, 10.0), 11.0)
    starts = np.arange(0.0, 10.0, 0.5)
    cost = simulate.ReadCost(cpu_s=0.004, blocked_s=0.006)
    stamps, values, durations = simulate.poll_readings(sensor.instant_w, starts, cost, random.Random(1))
    assert np.allclose(stamps, starts + 0.005) and np.allclose(durations, 0.01)
    within = (values >= sensor.instant_w(starts) - 1e-9) & (values <= sensor.instant_w(starts + 0.01) + 1e-9)
    assert within.all()


def test_a_live_simulated_read_really_takes_its_cost():
    probe = simulate.live_probe(simulate.constant(100.0), 60.0, cost=simulate.ReadCost(blocked_s=0.02))
    began = time.perf_counter()
    probe.channels[1].read()
    assert time.perf_counter() - began >= 0.02


def test_simulated_sensor_updates_every_100_ms_and_averages_the_last_25_ms():
    sensor = simulate.SimulatedSensor(simulate.square_wave(100.0, 300.0, 0.1, duty=0.25), 2.0)
    polls = np.arange(0.5, 1.0, 0.01)
    counter = sensor.counter_j(polls)
    assert len(np.unique(counter)) == 5  # five 100 ms updates in 0.5 s
    # High for the first 25 ms of each 100 ms: the last 25 ms before an update are low.
    assert sensor.instant_w(np.array([0.55]))[0] == pytest.approx(100.0)
    assert sensor.average_w(np.array([1.55]))[0] == pytest.approx(150.0)
    assert sensor.true_energy(0.0, 1.0) == pytest.approx(150.0)
