"""Per-request and per-phase energy from synthetic traces whose answer is known."""

import numpy as np
import pytest

from wattbench.power.attribution import EngineStep, attribute, cumulative_energy


def test_a_served_stream_splits_into_known_request_and_phase_energies():
    # 0-1 s idle at 50 W; request 0's prefill 1-2 s at 300 W; scheduling 2-2.5 s at 100 W;
    # request 1's prefill 2.5-3 s at 300 W; one decode step for {0, 1} 3-5 s at 200 W.
    steps = [EngineStep(1.0, 2.0, "prefill", {0: 32}), EngineStep(2.5, 3.0, "prefill", {1: 32}),
             EngineStep(3.0, 5.0, "decode", {0: 1, 1: 1})]
    # Constant power inside each step is what makes the truth known: step energy = W x duration.
    times = np.array([0.0, 1.0, 1.0 + 1e-9, 2.0, 2.0 + 1e-9, 2.5, 2.5 + 1e-9, 3.0, 3.0 + 1e-9, 5.0])
    watts = np.array([50, 50, 300, 300, 100, 100, 300, 300, 200, 200], dtype=float)
    energy = cumulative_energy(times, watts, is_counter=False)
    result = attribute(steps, energy, 0.0, 5.0, finished={0: 2, 1: 2})
    by_request = {r.request: r for r in result.requests}
    assert by_request[0].prefill_j == pytest.approx(300.0, rel=1e-6)
    assert by_request[1].prefill_j == pytest.approx(150.0, rel=1e-6)
    assert by_request[0].decode_j == by_request[1].decode_j == pytest.approx(200.0, rel=1e-6)
    assert by_request[0].joules_per_output_token == pytest.approx(250.0, rel=1e-6)
    assert result.phase_j["prefill"] == pytest.approx(450.0, rel=1e-6)
    assert result.between_steps_j == pytest.approx(50.0 + 50.0, rel=1e-5)  # idle + scheduling
    assert sum(r.joules for r in result.requests) + result.between_steps_j == pytest.approx(result.window_j, rel=1e-12)
    assert result.window_j == pytest.approx(950.0, rel=1e-6)


def test_tokens_share_a_step_and_the_sum_is_exact_on_a_noisy_counter():
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 10, 4000))
    joules = np.cumsum(rng.uniform(0.0, 1.0, len(times)))
    joules[1::3] = joules[0::3][: len(joules[1::3])]  # stale repeats, as a polled counter shows
    joules = np.maximum.accumulate(joules)
    energy = cumulative_energy(times, joules, is_counter=True)
    steps = [EngineStep(1.0 + i, 1.5 + i, "decode", {0: 1, 1: 3}) for i in range(8)]
    result = attribute(steps, energy, 0.5, 9.7, finished={0: 8, 1: 24})
    shares = {r.request: r.joules for r in result.requests}
    assert shares[1] == pytest.approx(3 * shares[0], rel=1e-12)
    assert sum(shares.values()) + result.between_steps_j == pytest.approx(result.window_j, rel=1e-12)


def test_requests_cut_by_the_window_or_still_running_are_partial_but_their_energy_is_kept():
    times, watts = np.array([0.0, 10.0]), np.array([100.0, 100.0])
    energy = cumulative_energy(times, watts, is_counter=False)
    steps = [EngineStep(0.5, 1.5, "prefill", {0: 8}),   # request 0 starts before the window
             EngineStep(2.0, 3.0, "prefill", {1: 8}),
             EngineStep(3.0, 4.0, "decode", {0: 1, 1: 1}),
             EngineStep(4.0, 5.0, "prefill", {2: 8})]   # request 2 has not finished
    result = attribute(steps, energy, 1.0, 6.0, finished={0: 2, 1: 2})
    assert [r.request for r in result.requests] == [1] and result.partial_requests == 2
    assert result.phase_j["prefill"] == pytest.approx(50 + 100 + 100)
    block = result.as_dict()
    assert block["requests"] == 1 and block["j_per_request_median"] == pytest.approx(150.0)
    assert block["prefill_share_median"] == pytest.approx(100 / 150)


def test_bad_step_logs_are_refused():
    with pytest.raises(ValueError, match="phase"):
        EngineStep(0, 1, "train", {0: 1})
    with pytest.raises(ValueError, match="ends before"):
        EngineStep(2, 1, "decode", {0: 1})
    energy = cumulative_energy([0.0, 5.0], [1.0, 1.0], is_counter=False)
    with pytest.raises(ValueError, match="overlap"):
        attribute([EngineStep(0, 2, "decode", {0: 1}), EngineStep(1, 3, "decode", {1: 1})], energy, 0, 4, {})
    with pytest.raises(ValueError, match="outside the readings"):
        attribute([], energy, 0, 6, {})
