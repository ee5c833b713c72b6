"""MLPerf-style inference scenarios: Poisson arrivals, the continuous-batching server, the rate search,
MLPerf's energy metrics, per-slot decoding against the model's own decode, and the registry cases."""

import itertools
import statistics

import pytest
import torch

from simulated_cuda import SimulatedCuda
from wattbench.device import Device, detect
from wattbench.models.ops import TORCH, TRITON
from wattbench.models.transformer import MODEL_CONFIGS, KVCache, Transformer
from wattbench.workloads import Context, case_by_id, cases
from wattbench.workloads.scenarios import (
    Server,
    TransformerSlots,
    _slot_view,
    mlperf_energy,
    poisson_arrivals,
    search_max_rate,
)

PREFILL_S, DECODE_S = 0.010, 0.002


# Poisson arrivals ---------------------------------------------------------------------------------

def test_poisson_arrivals_have_the_rate_and_exponential_gaps():
    times = list(itertools.islice(poisson_arrivals(50.0, seed=3), 20000))
    gaps = [later - earlier for earlier, later in zip([0.0] + times, times)]
    assert all(gap > 0 for gap in gaps)
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / 50, rel=0.03)
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, rel=0.05)  # exponential: std = mean


def test_poisson_arrivals_are_seeded_and_rescale_with_the_rate():
    def first(rate, seed):
        return list(itertools.islice(poisson_arrivals(rate, seed), 50))

    assert first(10, 7) == first(10, 7)
    assert first(10, 7) != first(10, 8)
    assert first(20, 7) == pytest.approx([t / 2 for t in first(10, 7)])


@pytest.mark.parametrize("rate", [0, -1.0, float("inf"), True, "10"])
def test_poisson_arrivals_refuse_a_bad_rate(rate):
    with pytest.raises(ValueError, match="rate_per_s must be a positive number"):
        next(poisson_arrivals(rate, 0))


# The server's scheduler, on a fake clock ----------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


class FakeEngine:
    """Prefill and decode take fixed times; checks that slots are used one request at a time."""

    def __init__(self, clock, slots):
        self.clock, self.slots = clock, slots
        self.admitted, self.occupant = [], {}

    def prefill(self, request, slot):
        self.admitted.append(request)
        self.occupant[slot] = request
        self.clock.now += PREFILL_S

    def decode(self, slots):
        assert set(slots) <= set(self.occupant) and len(slots) <= self.slots
        self.clock.now += DECODE_S


def make_server(arrival_times, slots=2, new_tokens=4):
    clock = FakeClock()
    engine = FakeEngine(clock, slots)
    return Server(engine, iter(arrival_times), new_tokens, clock=clock, sleep=clock.sleep), engine, clock


def test_every_request_is_served_once_in_order_of_arrival_within_the_slots():
    arrivals = list(itertools.islice(poisson_arrivals(400.0, seed=1), 41))  # overloaded: a queue forms
    server, engine, _ = make_server(arrivals)
    served = sorted(server.run(40), key=lambda r: r.start_s)
    assert [r.start_s for r in served] == arrivals[:40]
    assert engine.admitted[:40] == list(range(40))
    firsts = [r.token_times_s[0] for r in served]
    assert firsts == sorted(firsts), "first come, first served"
    for request in served:
        assert len(request.token_times_s) == 4
        assert request.token_times_s[0] >= request.start_s + PREFILL_S
        assert all(b > a for a, b in zip(request.token_times_s, request.token_times_s[1:]))
    for request in served:  # never more requests running than slots
        started = request.token_times_s[0]
        running = [r for r in served if r.token_times_s[0] <= started <= r.token_times_s[-1]]
        assert len(running) <= 2

def test_an_unloaded_server_answers_in_the_engine_times():
    server, _, _ = make_server([1.0 * (i + 1) for i in range(6)])
    for request in server.run(5):
        ttft = request.token_times_s[0] - request.start_s
        gaps = [b - a for a, b in zip(request.token_times_s, request.token_times_s[1:])]
        assert ttft == pytest.approx(PREFILL_S)
        assert gaps == pytest.approx([DECODE_S] * 3)


def test_queueing_shows_in_ttft_when_requests_arrive_together():
    server, _, _ = make_server([0.0] * 5, slots=2, new_tokens=2)
    ttft = sorted(r.token_times_s[0] - r.start_s for r in server.run(4))
    assert ttft[0] == pytest.approx(PREFILL_S)
    assert ttft[-1] > 2 * PREFILL_S + DECODE_S  # the last waited for a slot to free


def test_the_stream_carries_on_across_calls_and_its_clock_stands_still_between_them():
    arrivals = [0.001 * (i + 1) for i in range(30)]
    server, engine, clock = make_server(arrivals, slots=3)
    first = server.run(5)
    clock.now += 100.0  # the harness busy elsewhere: not queueing time
    second = server.run(5)
    starts = [r.start_s for r in first + second]
    assert len(set(starts)) == 10
    assert all(r.token_times_s[-1] - r.start_s < 1.0 for r in first + second)
    assert engine.admitted == sorted(set(engine.admitted)), "no request admitted twice"


def test_server_refuses_bad_counts():
    with pytest.raises(ValueError, match="new_tokens"):
        make_server([1.0], new_tokens=0)
    server, _, _ = make_server([1.0])
    with pytest.raises(ValueError, match="finished"):
        server.run(0)


# The rate search ----------------------------------------------------------------------------------

def threshold_p99(capacity):
    """A p99 TTFT that is small below `capacity` requests/s and large above it; records the rates tried."""
    tried = []

    def p99(rate):
        tried.append(rate)
        return 5.0 if rate <= capacity else 500.0

    return p99, tried


@pytest.mark.parametrize("capacity", [37.0, 100.0, 350.0])
def test_rate_search_brackets_the_capacity_within_bounds(capacity):
    p99, tried = threshold_p99(capacity)
    result = search_max_rate(p99, 50.0, start_rate=100.0, min_rate=10.0, max_rate=400.0, max_trials=10,
                             tolerance=0.05)
    assert result.reason is None
    assert capacity / 1.05 <= result.rate_per_s <= capacity
    assert len(tried) <= 10 and all(10.0 <= rate <= 400.0 for rate in tried)
    assert [rate for rate, _ in result.trials] == tried


def test_rate_search_is_monotone_in_the_capacity_and_in_the_bound():
    found = []
    for capacity in (20.0, 40.0, 80.0, 160.0):
        found.append(search_max_rate(threshold_p99(capacity)[0], 50.0, 50.0, 5.0, 500.0).rate_per_s)
    assert found == sorted(found)

    def smooth_p99(rate):
        return rate  # p99 TTFT (ms) grows with the rate

    loose = search_max_rate(smooth_p99, 80.0, 50.0, 5.0, 500.0).rate_per_s
    strict = search_max_rate(smooth_p99, 40.0, 50.0, 5.0, 500.0).rate_per_s
    assert strict < loose


def test_rate_search_stops_within_its_trials():
    p99, tried = threshold_p99(123.0)
    result = search_max_rate(p99, 50.0, 100.0, 10.0, 400.0, max_trials=3)
    assert len(tried) == 3 and result.rate_per_s == 100.0


def test_rate_search_starts_no_trial_after_its_time_budget():
    clock = FakeClock()

    def slow_p99(rate):
        clock.now += 2.0  # each trial takes 2 s
        return 1.0 if rate < 150 else 100.0

    result = search_max_rate(slow_p99, 50.0, 100.0, 10.0, 400.0, budget_s=5.0, clock=clock)
    assert len(result.trials) == 3 and clock.now == 6.0
    assert result.rate_per_s is not None and "time budget of 5.0 s ran out after 3 trials" in result.reason


def test_rate_search_says_when_no_rate_meets_the_bound_or_none_breaks_it():
    never = search_max_rate(lambda rate: 1e3, 50.0, 100.0, 25.0, 400.0)
    assert never.rate_per_s is None and "even at 25" in never.reason
    assert min(rate for rate, _ in never.trials) == 25.0
    always = search_max_rate(lambda rate: 1.0, 50.0, 100.0, 25.0, 400.0)
    assert always.rate_per_s == 400.0 and "lower bound" in always.reason


def test_rate_search_refuses_bad_arguments():
    with pytest.raises(ValueError, match="min_rate <= start_rate <= max_rate"):
        search_max_rate(lambda rate: 1.0, 50.0, start_rate=500.0, min_rate=1.0, max_rate=400.0)
    with pytest.raises(ValueError, match="max_trials"):
        search_max_rate(lambda rate: 1.0, 50.0, 100.0, 1.0, 400.0, max_trials=0)


# MLPerf's energy metrics --------------------------------------------------------------------------

def test_mlperf_energy_metrics_from_an_energy_record():
    record = {"valid": True, "joules_per_call": 2.0, "reason": None}
    single_stream = mlperf_energy(record, queries_per_call=4, samples_per_call=4)
    assert single_stream["mj_per_query"] == pytest.approx(500.0)
    assert single_stream["samples_per_joule"] == pytest.approx(2.0)
    offline = mlperf_energy(record, queries_per_call=1, samples_per_call=16)
    assert offline["mj_per_query"] == pytest.approx(2000.0) and offline["samples_per_joule"] == pytest.approx(8.0)


def test_mlperf_energy_metrics_without_energy_say_why():
    record = {"source": "none", "reason": "no power source: nvml: no GPU", "joules_per_call": None}
    metrics = mlperf_energy(record, 4, 4)
    assert metrics["mj_per_query"] is None and metrics["samples_per_joule"] is None
    assert metrics["energy_reason"] == "no power source: nvml: no GPU"
    with pytest.raises(ValueError, match="queries_per_call"):
        mlperf_energy(record, 0, 4)


# The transformer as the server's engine ---------------------------------------------------------------

CONFIG = MODEL_CONFIGS["tiny"]
CPU = torch.device("cpu")


def make_model():
    return Transformer(CONFIG, torch.float32, CPU, torch.Generator().manual_seed(0))


def make_prompts(count, length, seed=1):
    return torch.randint(0, CONFIG.vocab, (count, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ops", [TORCH, TRITON], ids=["torch", "triton"])
def test_decoding_slots_at_their_own_positions_matches_decoding_each_alone(ops):
    model = make_model()
    prompts = [make_prompts(1, 5, seed=1), make_prompts(1, 9, seed=2)]
    cache = KVCache(CONFIG, 2, torch.float32, CPU)
    expected, tokens = [], []
    with torch.no_grad():
        for slot, prompt in enumerate(prompts):
            token = model(prompt, TORCH, _slot_view(cache, slot), last_only=True).argmax(-1)
            alone = KVCache(CONFIG, 1, torch.float32, CPU)
            model(prompt, TORCH, alone, last_only=True)
            expected.append(model.decode(token, alone, TORCH))
            tokens.append(token)
        positions = torch.tensor([5, 9])
        logits = model.decode(torch.cat(tokens), cache, ops, positions=positions)
    torch.testing.assert_close(logits, torch.cat(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["eager", "cuda_graph"])
def test_transformer_slots_serve_requests_with_the_tokens_of_a_plain_generation(mode, monkeypatch):
    """Eagerly on the CPU, and as one replayed graph on the simulated GPU (its mask of running slots changed
    outside the graph as requests come and go)."""
    model, prompts = make_model(), make_prompts(3, 6)
    if mode == "cuda_graph":
        sim = SimulatedCuda(devices=1, replay_ops=True).install(monkeypatch)
        context = Context(Device("cuda", 0, "Simulated H100"))
    else:
        context = Context(detect("cpu"))
    engine = TransformerSlots(model, KVCache(CONFIG, 2, torch.float32, CPU), prompts, TORCH, CPU, context)
    assert engine.mode == mode and (mode == "eager" or len(sim.graphs) == 1)
    seen = {0: [], 1: []}
    decode = engine.decode

    def decode_and_record(slots):
        decode(slots)
        for slot in slots:
            seen[slot].append(int(engine.tokens[slot]))

    engine.decode = decode_and_record
    Server(engine, iter([0.0, 0.0, 1e9]), new_tokens=4).run(2)
    with torch.no_grad():
        for request in (0, 1):
            cache = KVCache(CONFIG, 1, torch.float32, CPU)
            token = model(prompts[request:request + 1], TORCH, cache, last_only=True).argmax(-1)
            plain = []
            for _ in range(3):
                token = model.decode(token, cache, TORCH).argmax(-1)
                plain.append(int(token))
            assert seen[request] == plain


# The registry cases -------------------------------------------------------------------------------

def cpu_scenario_cases():
    return [c for c in cases("quick", detect("cpu"), suite="models") if c.workload.name.startswith("scenario.")]


def test_scenarios_run_torch_on_a_cpu_and_skip_the_interpreter():
    selected = cpu_scenario_cases()
    assert {c.workload.name for c in selected} == {"scenario.single_stream", "scenario.offline", "scenario.server",
                                                   "scenario.server_search"}
    device = detect("cpu")
    for case in selected:
        reason = case.workload.skip(case.impl, case.precision, device)
        assert (reason is None) == (case.impl == "torch"), case.id


@pytest.mark.parametrize("name, expected", [
    ("scenario.single_stream", {"p90_latency_ms"}),
    ("scenario.offline", {"samples_per_s", "tokens_per_s"}),
    ("scenario.server", {"server"}),
    ("scenario.server_search", {"server", "rate_search"}),
])
def test_each_scenario_step_runs_and_reports_its_metrics(name, expected):
    case = next(c for c in cpu_scenario_cases() if c.workload.name == name and c.impl == "torch")
    step = case.build(detect("cpu"), base_seed=0)
    outputs = step()
    assert torch.isfinite(outputs).all()
    step.reset()
    step()
    metrics = step.metrics()
    assert expected <= set(metrics)
    per_call = case.accounting()["units_per_call"]
    assert metrics["requests"] == per_call  # one call: every query, sample or request of it
    assert metrics["ttft_ms"]["p50"] <= metrics["e2e_ms"]["p50"]
    energy = step.energy_metrics({"valid": True, "joules_per_call": 1.0})
    assert energy["samples_per_joule"] == pytest.approx(per_call)


def test_scenario_accounting_counts_every_request_once():
    single = case_by_id("scenario.single_stream-torch-fp32-tiny-Q4-P32-T8").accounting()
    offline = case_by_id("scenario.offline-torch-fp32-tiny-N16-P32-T8").accounting()
    generate = case_by_id("llm.generate-torch-fp32-tiny-B2-P32-T4").workload
    per_request = generate.flops({"model": "tiny", "B": 1, "P": 32, "T": 8})
    assert single["flops"] == 4 * per_request and offline["flops"] == 16 * per_request
    assert single["units_per_call"] == 4 and single["unit"] == "queries"
