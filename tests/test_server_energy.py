"""Energy per request and per phase in the server scenario: the Server's step log on the trace's clock, shared
out over simulated power whose truth is known, and the measured record's `energy_attribution` through the
energy windows' hook."""

import itertools

import pytest

from test_disagreements import Benchmark
from test_scenarios import DECODE_S, PREFILL_S, make_server
from wattbench import schema, timing
from wattbench.device import Device
from wattbench.measure import Settings, measure
from wattbench.power import PowerConfig, PowerMonitor
from wattbench.power.attribution import Attribution, attribute
from wattbench.power.simulate import SimulatedSensor, live_probe, square_wave
from wattbench.record import Record
from wattbench.workloads import case_by_id
from wattbench.workloads.scenarios import poisson_arrivals

CPU = Device("cpu", None, "Test CPU")


def test_the_server_logs_every_engine_call_with_its_requests_tokens():
    arrivals = list(itertools.islice(poisson_arrivals(150.0, seed=3), 60))
    server, _, _ = make_server(arrivals, slots=3, new_tokens=4)
    server.run(20)
    prefills = [step for step in server.steps if step.phase == "prefill"]
    assert [list(step.tokens) for step in prefills] == [[n] for n in range(len(prefills))]
    assert all(step.end_s - step.start_s == pytest.approx(PREFILL_S) for step in prefills)
    decodes = [step for step in server.steps if step.phase == "decode"]
    assert all(step.end_s - step.start_s == pytest.approx(DECODE_S) and len(step.tokens) <= 3 for step in decodes)
    assert all(a.end_s <= b.start_s for a, b in zip(server.steps, server.steps[1:]))  # one step at a time
    assert len(server.finished) >= 20 and set(server.finished.values()) == {4}
    for request in server.finished:  # the prefill's token, then one per decode iteration it ran in
        assert sum(request in step.tokens for step in decodes) == 3


POWER = square_wave(80.0, 300.0, period_s=0.0137, duty=0.4)


def test_per_request_energy_sums_to_the_windows_energy_exactly_on_simulated_power():
    """30 requests, then an arrival that never comes: a window over the whole stream holds every request whole."""
    arrivals = list(itertools.islice(poisson_arrivals(150.0, seed=5), 30)) + [1e9]
    server, _, clock = make_server(arrivals, slots=4, new_tokens=5)
    server.run(30)
    sensor = SimulatedSensor(POWER, duration_s=clock.now + 1)
    result = attribute(server.steps, sensor.energy_at, 0.0, clock.now, server.finished)
    truth = sensor.true_energy(0.0, clock.now)
    assert len(result.requests) == 30 and result.partial_requests == 0
    assert sum(r.joules for r in result.requests) + result.between_steps_j == pytest.approx(truth, rel=1e-12)
    gaps = [(a.end_s, b.start_s) for a, b in zip(server.steps, server.steps[1:])]
    idle = sensor.true_energy(0.0, server.steps[0].start_s) + sum(sensor.true_energy(*gap) for gap in gaps)
    assert result.between_steps_j == pytest.approx(idle, rel=1e-9, abs=1e-9)
    for request in result.requests:  # its prefill step's energy, and its share of each decode iteration
        own = [s for s in server.steps if request.request in s.tokens]
        prefill = sum(sensor.true_energy(s.start_s, s.end_s) for s in own if s.phase == "prefill")
        decode = sum(sensor.true_energy(s.start_s, s.end_s) / len(s.tokens) for s in own if s.phase == "decode")
        assert (request.prefill_j, request.decode_j) == pytest.approx((prefill, decode), rel=1e-9)
        assert request.joules_per_output_token == pytest.approx((prefill + decode) / 5, rel=1e-9)


def test_windows_that_cut_through_requests_keep_every_joule_in_a_phase_or_between_steps():
    arrivals = list(itertools.islice(poisson_arrivals(150.0, seed=5), 200))
    server, _, clock = make_server(arrivals, slots=4, new_tokens=5)
    server.run(30)
    windows = [(0.05, 0.2), (0.25, clock.now - 0.01)]
    server.run(30)  # requests running at the windows' ends finish later: they are partial
    sensor = SimulatedSensor(POWER, duration_s=clock.now + 1)
    total = Attribution.total([attribute(server.steps, sensor.energy_at, start, end, server.finished)
                               for start, end in windows])
    truth = sum(sensor.true_energy(start, end) for start, end in windows)
    assert total.window_j == pytest.approx(truth, rel=1e-12)
    assert sum(total.phase_j.values()) + total.between_steps_j == pytest.approx(truth, rel=1e-12)
    assert total.partial_requests > 0 and len(total.requests) > 10
    assert sum(r.joules for r in total.requests) < sum(total.phase_j.values())  # the partial ones' share
    assert total.as_dict()["requests"] == len(total.requests)


def test_a_measured_server_record_carries_its_energy_attribution():
    """The real scenario.server case on the CPU, measured by the power monitor over a simulated sensor: the
    windows' energy is shared out over the step log, and every joule lands in a phase or between steps."""
    case = case_by_id("scenario.server-torch-fp32-tiny-N16-B8-P32-T8-rate200")
    clock = timing.clock_for(CPU)
    plan = timing.TimingPlan(min_time_s=1e-3, min_rounds=2, max_rounds=3)
    config = PowerConfig(min_window_s=0.3, max_window_s=0.3, repeats=2, target_pct=None, idle_s=0.0, sample_hz=200)
    with PowerMonitor(CPU, config, probes=[live_probe(square_wave(90.0, 250.0, 0.05), 120.0)]) as power:
        info = measure(case, Settings(CPU, plan, 0), clock, power, Benchmark(clock))
    block = info["energy_attribution"]
    assert block["window_j"] == pytest.approx(info["energy"]["joules_per_call"] * sum(info["energy"]["calls_per_window"]),
                                              rel=0.05)
    assert block["prefill_j"] + block["decode_j"] + block["between_steps_j"] == pytest.approx(block["window_j"],
                                                                                              rel=1e-12)
    assert block["requests"] > 0 and block["j_per_request_median"] > 0
    assert Record.from_json(info).energy_attribution == block
    schema.ENERGY.check(info["energy"], ())
