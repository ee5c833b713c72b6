"""The CUDA timing path against a simulated device with known truth (tests/simulated_cuda.py)."""

import pytest

from simulated_cuda import FLUSH_S, SimulatedCuda
from wattbench import cuda, timing
from wattbench.device import Device

GPU1 = Device("cuda", 1, "Simulated H100")


@pytest.fixture
def sim(monkeypatch):
    return SimulatedCuda(devices=2).install(monkeypatch)


def kernel(sim, seconds, host_s=0.0, name="work"):
    """A step: `host_s` of Python, then one launch of `seconds` of device work."""
    def step():
        sim.host_work(host_s)
        sim.launch(name, seconds)
    return step


def test_each_round_is_its_own_event_pair_and_keeps_resolution_after_an_hour(monkeypatch):
    sim = SimulatedCuda(devices=2, host_start_s=3600.0).install(monkeypatch)  # an hour into a run
    with GPU1.current():
        samples = timing.time_rounds(kernel(sim, 3e-6), None, timing.clock_for(GPU1), rounds=20)
    assert samples == [pytest.approx(3e-6, abs=1e-6)] * 20


def test_host_time_before_the_launch_is_not_counted(sim):
    """The start reading does not wait: the device is still busy covering the launch gap when
    the host reaches the work (15 us of Python and the launch itself)."""
    with GPU1.current():
        samples = timing.time_rounds(kernel(sim, 10e-6, host_s=15e-6), None, timing.clock_for(GPU1), rounds=10)
    assert samples == [pytest.approx(10e-6, abs=1e-6)] * 10


def test_the_flush_runs_before_each_round_outside_its_span(sim):
    with GPU1.current():
        samples = timing.time_rounds(kernel(sim, 20e-6), timing.round_setup(GPU1, timing.TimingPlan()),
                                     timing.clock_for(GPU1), rounds=5)
    assert samples == [pytest.approx(20e-6, abs=1e-6)] * 5
    flushes, works = sim.launched("flush"), sim.launched("work")
    assert len(flushes) == 5 and all(f.end_s <= w.start_s for f, w in zip(flushes, works))
    assert FLUSH_S > 20e-6  # so the check above means something: a flush inside the span would show


def test_a_half_read_round_is_forgotten_on_reset(sim):
    clock = timing.clock_for(GPU1)
    with GPU1.current():
        clock()  # a round's start, then its work raised
        clock.reset()
        assert timing.time_rounds(kernel(sim, 5e-6), None, clock, rounds=3) == [pytest.approx(5e-6, abs=1e-6)] * 3


def test_graph_capture_on_cuda_1_replays_its_work_there(sim):
    with Device("cuda", 0, "gpu0").current():  # cuda:0 current outside, as by default
        replay = cuda.capture_graph(kernel(sim, 7e-6), index=1)
        with GPU1.current():
            replay()
    replays = sim.launched("replay:work")
    assert [(r.device, round(r.end_s - r.start_s, 9)) for r in replays] == [(1, 7e-6)]
    assert {launch.device for launch in sim.launches} == {1}  # warm-up and capture too


def test_a_graph_that_captured_nothing_is_refused(sim):
    def launches_on_cuda_0():
        with Device("cuda", 0, "gpu0").current():
            sim.launch("work", 5e-6)

    with pytest.raises(cuda.GraphCaptureError, match="empty"):
        cuda.capture_graph(launches_on_cuda_0, index=1)


def test_capture_does_not_use_a_capture_stream_of_another_device(sim):
    """torch's default capture stream is made once, on whichever device is current then."""
    cuda.capture_graph(kernel(sim, 1e-6), index=0)
    sim.default_capture_stream = sim.new_stream(0)  # as torch.cuda.graph would have made it
    replay = cuda.capture_graph(kernel(sim, 2e-6), index=1)
    with GPU1.current():
        replay()
    assert [r.device for r in sim.launched("replay:work")] == [1]


def test_timed_target_runs_uncapturable_steps_eagerly_and_says_why(sim):
    plan = timing.TimingPlan(cuda_graph=True)
    step = kernel(sim, 1e-6)
    target = timing.timed_target(step, GPU1, plan, not_capturable="it synchronises")
    assert (target.call, target.method) == (step, "cuda_event")
    assert target.graph_note == "CUDA graph not used: it synchronises"
    with GPU1.current():
        graphed = timing.timed_target(step, GPU1, plan)
    assert graphed.method == "cuda_graph" and graphed.graph_note is None
    assert timing.timed_target(step, GPU1, timing.TimingPlan()).method == "cuda_event"


def test_a_step_that_synchronises_cannot_be_captured(sim):
    def synchronises():
        sim.launch("work", 1e-6)
        GPU1.synchronize()

    with pytest.raises(RuntimeError, match="capturing"):
        cuda.capture_graph(synchronises, index=1)


def test_the_l2_flush_only_reads_its_buffer():
    """Reading leaves clean lines; zero_() would leave 2x L2 of dirty lines to write back in the next round."""
    import torch

    flush = cuda.L2Flush(torch.device("cpu"), l2_bytes=1 << 20)
    assert flush.buffer.numel() * 4 == 2 << 20
    flush.buffer.fill_(3.0)
    version = flush.buffer._version
    flush()
    assert flush.buffer._version == version  # never written
    assert flush.sink.item() == 3.0
