"""Inference scenarios in the spirit of MLPerf Inference, with its energy metrics, on the transformer.

A query is one request (a prompt of `P` tokens, `T` generated tokens, greedy); a sample is one
request too. Each scenario's step is a steady-state unit of work, so that the power monitor's
repeated calls of it measure the scenario's own energy:

- `scenario.single_stream`: the step issues `Q` queries one after another at batch 1, each as soon
  as the previous one finished. Reports p90 latency (E2E) and, with energy, mJ per query.
- `scenario.offline`: the step is one query holding all `N` samples, generated as one batch.
  Reports samples/s and, with energy, samples per joule.
- `scenario.server`: requests arrive as a Poisson process at `rate` requests/s (seeded) and are
  served by continuous batching into `B` cache slots (see `Server`). The step serves until `N` more
  requests have finished; the stream carries on from one call to the next (in-flight requests and
  the queue are kept), so repeated calls see the stream's steady state, not a ramp-up from an empty
  server and a drain at its end: that is what their energy measures (time waiting for arrivals
  included). Reports TTFT/TPOT/ITL/E2E percentiles at that rate.
- `scenario.server_search`: first searches for the highest rate whose p99 TTFT stays under `ttft`
  ms (see `search_max_rate`), then serves at that rate like `scenario.server`, so its energy gives
  samples per joule at that rate.

Latencies are per request, from host times taken after a device synchronisation at every token.
Each step's `energy_metrics(record)` turns the harness's energy record into MLPerf's power metrics
(`mlperf_energy`); with the units chosen here (queries, samples) the record's own joules_per_unit
and units_per_joule are the same figures.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Protocol

import torch

from wattbench.cuda import capture_graph
from wattbench.device import Device
from wattbench.metrics import RequestTiming, latency_metrics
from wattbench.models.ops import Ops, ops_for
from wattbench.models.transformer import MODEL_CONFIGS, KVCache, Transformer
from wattbench.power.attribution import Attribution, EngineStep, attribute
from wattbench.record import EnergyRecord
from wattbench.schema import is_finite_number
from wattbench.workloads import (SYNCHRONISES, Context, Inputs, Params, Size, Step, Workload, activation_dtype,
                                 device_sizes, register)
from wattbench.workloads.llm import (FULL_MODEL, GenerationStep, build_model, decode_mode, generate_bytes,
                                     generate_flops, skip_unless_fits, synchronize, weight_bytes)

PRECISIONS = {"cpu": ("fp32",), "cuda": ("bf16", "int8w-bf16")}
#: Seconds after which the rate search starts no further trial (it then reports what it bracketed).
SEARCH_BUDGET_S = {"cpu": 5.0, "cuda": 60.0}
SCHEDULER = "continuous batching: first come, first served; arrived requests are prefilled (batch 1) " \
            "before the next decode iteration of every slot"


# MLPerf's energy metrics --------------------------------------------------------------------------

def mlperf_energy(energy: Mapping, queries_per_call: float, samples_per_call: float) -> dict:
    """MLPerf's power metrics from an energy record: mJ per query (single-stream's metric) and samples
    per joule (offline's and server's), both None with the record's reason when energy is not measured."""
    if queries_per_call <= 0 or samples_per_call <= 0:
        raise ValueError(f"queries_per_call and samples_per_call must be positive, got "
                         f"{queries_per_call} and {samples_per_call}")
    record = EnergyRecord.from_json(energy)
    joules = record.joules_per_call if record.valid else None
    if not joules:
        return {"mj_per_query": None, "samples_per_joule": None,
                "energy_reason": record.reason or "energy not measured"}
    return {"mj_per_query": joules / queries_per_call * 1e3, "samples_per_joule": samples_per_call / joules}


# Arrivals, the server's scheduler and the rate search ---------------------------------------------

def poisson_arrivals(rate_per_s: float, seed: int) -> Iterator[float]:
    """Arrival times (s from the stream's start) of a Poisson process: exponential gaps of mean 1/rate.

    The same seed at another rate gives the same pattern, rescaled: the rate search compares rates on
    common random numbers, so that its trials differ by the rate and not by luck.
    """
    if not is_finite_number(rate_per_s) or rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be a positive number of requests per second, got {rate_per_s!r}")
    rng = random.Random(seed)
    unit_time = 0.0
    while True:
        unit_time += rng.expovariate(1.0)
        yield unit_time / rate_per_s


class Engine(Protocol):
    """What the server runs requests on: `slots` concurrent requests, each in its own slot."""

    slots: int

    def prefill(self, request: int, slot: int) -> None:
        """Prefill request `request`'s prompt into `slot` and produce its first token (synchronised)."""

    def decode(self, slots: list[int]) -> None:
        """One more token for the requests in `slots` (synchronised)."""


@dataclass
class _Running:
    arrival_s: float
    request: int
    token_times_s: list[float] = field(default_factory=list)


class Server:
    """Continuous batching of an unending stream of arrivals, first come first served.

    At each iteration, requests that have arrived take the free slots in order of arrival and are
    prefilled; then one decode iteration gives every running request its next token. A request
    leaves its slot with its `new_tokens`-th token (the prefill gives the first). With no request
    running, the server sleeps until the next arrival.

    Times are on the stream's clock: host seconds while `run` serves, standing still between calls,
    so that what the harness does between calls is not counted as queueing.

    For energy per request and per phase, the server logs every engine call as an `EngineStep` on the
    power trace's clock (`clock` itself: perf_counter, read before the call and after its synchronisation)
    in `steps`, and each finished request's output tokens in `finished` (request number -> tokens), from
    its creation on: a request's steps before some point must not be lost, or its share would look whole.
    """

    def __init__(self, engine: Engine, arrivals: Iterator[float], new_tokens: int,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        if new_tokens < 1:
            raise ValueError(f"new_tokens must be at least 1, got {new_tokens}")
        self.engine, self.arrivals, self.new_tokens = engine, arrivals, new_tokens
        self.clock, self.sleep = clock, sleep
        self.stream_s = 0.0
        self.next_request, self.next_arrival_s = 0, next(arrivals)
        self.running: dict[int, _Running] = {}
        self.free = list(range(engine.slots))
        self.done: list[RequestTiming] = []
        self.steps: list[EngineStep] = []
        self.finished: dict[int, int] = {}

    def run(self, finished: int) -> list[RequestTiming]:
        """Serve until `finished` more requests have their last token; their timings, in order of finishing.

        Exactly `finished`: requests that finish beyond them (in the same decode iteration) are returned by
        the next call, so that every call accounts for the same work.
        """
        if finished < 1:
            raise ValueError(f"finished must be at least 1, got {finished}")
        offset = self.clock() - self.stream_s
        while len(self.done) < finished:
            while self.free and self.next_arrival_s <= self.clock() - offset:
                slot = min(self.free)
                self.free.remove(slot)
                self.running[slot] = _Running(self.next_arrival_s, self.next_request)
                started = self.clock()
                self.engine.prefill(self.next_request, slot)
                ended = self.clock()
                # One request per prefill: its share is the whole step, whatever its token count.
                self.steps.append(EngineStep(started, ended, "prefill", {self.next_request: 1}))
                self._token(slot, ended - offset)
                self.next_request, self.next_arrival_s = self.next_request + 1, next(self.arrivals)
            if self.running:
                slots = sorted(self.running)
                started = self.clock()
                self.engine.decode(slots)
                ended = self.clock()
                self.steps.append(EngineStep(started, ended, "decode", {self.running[s].request: 1 for s in slots}))
                for slot in slots:
                    self._token(slot, ended - offset)
            elif len(self.done) < finished:
                self.sleep(max(0.0, self.next_arrival_s - (self.clock() - offset)))
        self.stream_s = self.clock() - offset
        served, self.done = self.done[:finished], self.done[finished:]
        return served

    def _token(self, slot: int, now: float) -> None:
        request = self.running[slot]
        request.token_times_s.append(now)
        if len(request.token_times_s) == self.new_tokens:
            del self.running[slot]
            self.free.append(slot)
            self.finished[request.request] = self.new_tokens
            self.done.append(RequestTiming(request.arrival_s, tuple(request.token_times_s)))


@dataclass(frozen=True)
class RateSearch:
    """The outcome of `search_max_rate`: the highest rate that met the bound (None if none did)."""

    rate_per_s: float | None
    bound_ms: float
    trials: tuple[tuple[float, float], ...]  # (rate per s, p99 TTFT ms), in the order tried
    reason: str | None  # why the rate is missing or only a lower bound

    def as_dict(self) -> dict:
        return {"max_rate_per_s": self.rate_per_s, "p99_ttft_bound_ms": self.bound_ms, "reason": self.reason,
                "trials": [{"rate_per_s": rate, "p99_ttft_ms": p99} for rate, p99 in self.trials]}


def search_max_rate(p99_ttft_ms: Callable[[float], float], bound_ms: float, start_rate: float, min_rate: float,
                    max_rate: float, max_trials: int = 8, tolerance: float = 0.1, budget_s: float = math.inf,
                    clock: Callable[[], float] = time.perf_counter) -> RateSearch:
    """The highest rate in [min_rate, max_rate] whose p99 TTFT stays under `bound_ms`, MLPerf-style.

    From `start_rate`, doubles while the bound holds (halves while it fails) until the two are
    bracketed, then bisects (geometrically) until the bracket is within `tolerance`. Bounded in
    time: at most `max_trials` trials, and no trial starts after `budget_s` seconds. Assumes p99
    TTFT grows with the rate.
    """
    if not 0 < min_rate <= start_rate <= max_rate:
        raise ValueError(f"rates must satisfy 0 < min_rate <= start_rate <= max_rate, got "
                         f"{min_rate}, {start_rate}, {max_rate}")
    if max_trials < 1 or tolerance <= 0 or bound_ms <= 0:
        raise ValueError(f"max_trials, tolerance and bound_ms must be positive, got {max_trials}, {tolerance}, "
                         f"{bound_ms}")
    trials: list[tuple[float, float]] = []
    met, broke = None, None
    rate = start_rate
    started, out_of_time = clock(), False
    while len(trials) < max_trials:
        if trials and clock() - started >= budget_s:
            out_of_time = True
            break
        p99 = p99_ttft_ms(rate)
        trials.append((rate, p99))
        if p99 <= bound_ms:
            met = rate
        else:
            broke = rate
        if met is not None and broke is not None:
            if broke / met <= 1 + tolerance:
                break
            rate = math.sqrt(met * broke)
        elif met is not None:
            if rate >= max_rate:
                break
            rate = min(2 * rate, max_rate)
        else:
            if rate <= min_rate:
                break
            rate = max(rate / 2, min_rate)
    reasons = []
    if met is None:
        reasons.append(f"p99 TTFT above {bound_ms} ms even at {min(r for r, _ in trials):.4g} requests/s")
    elif broke is None:
        reasons.append(f"p99 TTFT stayed under {bound_ms} ms up to {met:.4g} requests/s, where the search "
                       "stopped: a lower bound")
    if out_of_time:
        reasons.append(f"the search's time budget of {budget_s} s ran out after {len(trials)} trials")
    return RateSearch(met, bound_ms, tuple(trials), "; ".join(reasons) or None)


# The transformer as the server's engine ------------------------------------------------------------

class TransformerSlots:
    """The server's engine: one KV-cache slot per running request.

    Decode runs every slot, free ones too (their outputs are ignored): a fixed-shape batch, as a
    serving engine with captured graphs runs it; a free slot only writes into its own cache rows,
    which the next prefill in that slot overwrites before they are read. The step reads its tokens and
    positions from device buffers and advances the running slots' positions by a device mask, so on a
    GPU it is one CUDA graph, replayed per iteration (`mode` "cuda_graph"; "eager" on a CPU or when asked
    for); the mask is rewritten, outside the graph, only when the running slots change.
    """

    def __init__(self, model: Transformer, cache: KVCache, prompts: torch.Tensor, ops: Ops, device: torch.device,
                 context: Context):
        self.model, self.cache, self.prompts, self.ops, self.device = model, cache, prompts, ops, device
        self.slots = cache.k.shape[1]
        self.views = [_slot_view(cache, slot) for slot in range(self.slots)]
        self.tokens = torch.zeros(self.slots, dtype=torch.long, device=device)
        self.positions = torch.zeros(self.slots, dtype=torch.long, device=device)
        self.running = torch.zeros(self.slots, dtype=torch.long, device=device)
        self.running_slots: list[int] = []
        self.logits: torch.Tensor | None = None
        self._decoded: torch.Tensor | None = None
        self.mode = decode_mode(context)
        self._decode = self._decode_step
        if self.mode == "cuda_graph":  # capture's warm-up writes row 0 of every slot: prefills overwrite it
            with context.device.current():
                self._decode = capture_graph(self._decode_step, context.device.index)

    def _decode_step(self) -> None:
        with torch.no_grad():
            logits = self.model.decode(self.tokens, self.cache, self.ops, positions=self.positions)
            self.tokens.copy_(logits.argmax(-1))
            self.positions.add_(self.running)
        self._decoded = logits  # under capture: the graph's output, rewritten by each replay

    def prefill(self, request: int, slot: int) -> None:
        prompt = self.prompts[request % len(self.prompts)].unsqueeze(0)
        with torch.no_grad():
            self.logits = self.model(prompt, self.ops, self.views[slot], last_only=True)
        self.tokens[slot] = self.logits.argmax(-1)[0]
        self.positions[slot] = prompt.shape[1]
        synchronize(self.device)

    def decode(self, slots: list[int]) -> None:
        if slots != self.running_slots:
            self.running.zero_()
            self.running[torch.tensor(slots, device=self.device)] = 1
            self.running_slots = list(slots)
        self._decode()
        self.logits = self._decoded
        synchronize(self.device)


def _slot_view(cache: KVCache, slot: int) -> KVCache:
    """A batch-1 cache whose tensors are views of one slot of `cache` (prefill writes land there)."""
    view = copy.copy(cache)
    view.k, view.v = cache.k[:, slot:slot + 1], cache.v[:, slot:slot + 1]
    return view


# Steps ---------------------------------------------------------------------------------------------

class SingleStreamStep(Step):
    """`Q` queries at batch 1, each issued when the previous one has finished."""

    def __init__(self, inputs: Inputs, impl: str):
        prompts = inputs["prompts"]
        self.queries = [GenerationStep({**inputs, "prompt": prompts[i:i + 1]}, impl) for i in range(len(prompts))]

    def __call__(self):
        for query in self.queries:
            logits = query()
        return logits

    def reset(self) -> None:
        for query in self.queries:
            query.reset()

    def metrics(self) -> dict:
        metrics = latency_metrics([request for query in self.queries for request in query.requests])
        metrics["p90_latency_ms"] = metrics["e2e_ms"]["p90"] if metrics["e2e_ms"] else None
        metrics["decode"] = self.queries[0].mode
        return metrics

    def energy_metrics(self, energy: Mapping) -> dict:
        return mlperf_energy(energy, len(self.queries), len(self.queries))


class OfflineStep(GenerationStep):
    """One query holding every sample, generated as one batch."""

    def metrics(self) -> dict:
        metrics = super().metrics()
        batch = self.prompt.shape[0]
        # Every request of a call shares the call's timeline: a call takes its requests' mean E2E.
        call_s = sum(r.token_times_s[-1] - r.start_s for r in self.requests) / len(self.requests) \
            if self.requests else None
        metrics["samples_per_s"] = batch / call_s if call_s else None
        metrics["tokens_per_s"] = batch * self.new_tokens / call_s if call_s else None
        return metrics

    def energy_metrics(self, energy: Mapping) -> dict:
        return mlperf_energy(energy, 1, self.prompt.shape[0])


class ServerStep(Step):
    """Serves the Poisson stream at `rate_per_s` until `N` more requests have finished."""

    def __init__(self, inputs: Inputs, impl: str, rate_per_s: float, search: RateSearch | None = None):
        self.rate_per_s, self.search = rate_per_s, search
        self.per_call = inputs["requests_per_call"]
        self.engine = _engine(inputs, impl)
        self.server = Server(self.engine, poisson_arrivals(rate_per_s, inputs["arrival_seed"]), inputs["new_tokens"])
        self.requests: list[RequestTiming] = []

    def __call__(self):
        self.requests += self.server.run(self.per_call)
        return self.engine.logits

    def reset(self) -> None:
        self.requests = []

    def metrics(self) -> dict:
        metrics = latency_metrics(self.requests)
        metrics["server"] = {"rate_per_s": self.rate_per_s, "slots": self.engine.slots, "scheduler": SCHEDULER,
                             "arrivals": "Poisson, seeded"}
        metrics["decode"] = self.engine.mode
        if self.search is not None:
            metrics["rate_search"] = self.search.as_dict()
        return metrics

    def energy_metrics(self, energy: Mapping) -> dict:
        return mlperf_energy(energy, self.per_call, self.per_call)

    def energy_windows(self, spans: list[tuple[float, float]], energy_at: Callable[[float], float]) -> dict:
        """Energy per request and per phase: each window's energy shared out over the server's step log."""
        windows = [attribute(self.server.steps, energy_at, start, end, self.server.finished) for start, end in spans]
        return {"energy_attribution": Attribution.total(windows).as_dict()}


def _engine(inputs: Inputs, impl: str) -> TransformerSlots:
    return TransformerSlots(inputs["model"], inputs["cache"], inputs["prompts"], ops_for(impl), inputs["device"],
                            inputs["context"])


def _calibrated_capacity(inputs: Inputs, impl: str, repeats: int = 5) -> float:
    """Requests/s the slots could serve, from the median time of a prefill and of a decode iteration (after
    a warm-up): each request costs its prefill and its share of `T` − 1 decode iterations over full slots."""
    engine = _engine(inputs, impl)

    def median_s(call) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    engine.prefill(0, 0)
    engine.decode([0])
    prefill_s = median_s(lambda: engine.prefill(0, 0))
    decode_s = median_s(lambda: engine.decode([0]))
    return 1 / (prefill_s + (inputs["new_tokens"] - 1) * decode_s / engine.slots)


def _offline_build(impl: str):
    return lambda inputs: OfflineStep({**inputs, "prompt": inputs["prompts"]}, impl)


def _search_build(impl: str):
    """Searches from half the calibrated capacity, between a quarter of it and twice it, within the
    device's time budget. Each trial serves `N` requests to fill the slots, then takes p99 TTFT over the
    next `N` (the steady state, as the step measures it). Trials are short: near capacity a longer run
    queues more, which the step's own TTFT percentiles at the rate found then show."""
    def build(inputs: Inputs) -> Step:
        def p99_ttft_ms(rate: float) -> float:
            trial = Server(_engine(inputs, impl), poisson_arrivals(rate, inputs["arrival_seed"]), inputs["new_tokens"])
            trial.run(inputs["requests_per_call"])  # the ramp-up from an empty server, as the step's warm-up calls
            return latency_metrics(trial.run(inputs["requests_per_call"]))["ttft_ms"]["p99"]

        capacity = _calibrated_capacity(inputs, impl)
        search = search_max_rate(p99_ttft_ms, inputs["ttft_bound_ms"], start_rate=capacity / 2,
                                 min_rate=capacity / 4, max_rate=2 * capacity,
                                 budget_s=SEARCH_BUDGET_S[inputs["device"].type])
        rate = search.rate_per_s or min(rate for rate, _ in search.trials)
        return ServerStep(inputs, impl, rate, search)

    return build


# Inputs and accounting -----------------------------------------------------------------------------

def _inputs(prompts_key: str, cache_batch: Callable[[Params], int]):
    """Inputs of a scenario: the model, one prompt per query (`prompts_key`), a cache of `cache_batch` slots."""
    def make(params: Params, precision: str, device: torch.device, generator: torch.Generator) -> Inputs:
        config = MODEL_CONFIGS[params["model"]]
        if params["P"] + params["T"] > config.max_seq:
            raise ValueError(f"P + T must fit the model's {config.max_seq} positions, got {params['P']} + "
                             f"{params['T']}")
        skip_unless_fits({**params, "B": cache_batch(params)}, precision, device, cache_length=config.max_seq)
        model = build_model(params, precision, device, generator)
        prompts = torch.randint(0, config.vocab, (params[prompts_key], params["P"]), generator=generator,
                                device=device)
        arrival_seed = int(torch.randint(0, 2**31, (1,), generator=generator, device=device).item())
        return {"model": model, "prompts": prompts, "new_tokens": params["T"],
                "cache": KVCache(config, cache_batch(params), activation_dtype(precision), device),
                "device": device, "requests_per_call": params.get("N"), "arrival_seed": arrival_seed,
                "rate_per_s": params.get("rate"), "ttft_bound_ms": params.get("ttft")}

    return make


def _request_flops(p: Params) -> int:
    """Useful FLOPs of one request, whatever it is batched with: its prefill and its `T` − 1 decode steps."""
    return generate_flops({**p, "B": 1})


def _server_bytes(p: Params, precision: str) -> int:
    """With the slots full: each request's prefill reads the weights (batch 1), each decode iteration reads
    them once for all `B` slots; each request writes and reads its own cache."""
    alone = generate_bytes({**p, "B": 1}, precision)
    decode_weights = (p["T"] - 1) * weight_bytes(p, precision)
    return round(p["N"] * (alone - decode_weights + decode_weights / p["B"]))


def _skip(impl: str, precision: str, device: Device) -> str | None:
    if impl == "triton" and device.type == "cpu":
        return "scenarios serve many requests, too slow through the Triton interpreter; llm.* covers its correctness"
    return None


def _sizes(cpu: dict, cuda: dict) -> tuple[Size, ...]:
    """The tiny model on a CPU; on GPUs the 125M model, and Llama-3.1-8B in the full preset."""
    return device_sizes([{"model": "tiny", **cpu}], [{"model": "125m", **cuda}], [{"model": FULL_MODEL, **cuda}])


def _scenario(name: str, unit: str, sizes, make_inputs, build: Callable[[str], Callable[[Inputs], Step]],
              units_per_call, flops, bytes_) -> None:
    register(Workload(
        name=name, op="transformer", style="infer", unit=unit, suite="models", sizes=sizes, precisions=PRECISIONS,
        make_inputs=make_inputs, impls={"torch": build("torch"), "triton": build("triton")},
        units_per_call=units_per_call, flops=flops, bytes=bytes_, skip=_skip, not_capturable=SYNCHRONISES,
    ))


_scenario("scenario.single_stream", "queries",
          _sizes(cpu={"Q": 4, "P": 32, "T": 8}, cuda={"Q": 8, "P": 512, "T": 64}),
          _inputs("Q", lambda p: 1), lambda impl: lambda inputs: SingleStreamStep(inputs, impl),
          units_per_call=lambda p: p["Q"], flops=lambda p: p["Q"] * _request_flops(p),
          bytes_=lambda p, precision: p["Q"] * generate_bytes({**p, "B": 1}, precision))

_scenario("scenario.offline", "samples",
          _sizes(cpu={"N": 16, "P": 32, "T": 8}, cuda={"N": 64, "P": 512, "T": 64}),
          _inputs("N", lambda p: p["N"]), _offline_build,
          units_per_call=lambda p: p["N"], flops=lambda p: p["N"] * _request_flops(p),
          bytes_=lambda p, precision: generate_bytes({**p, "B": p["N"]}, precision))

_scenario("scenario.server", "samples",
          _sizes(cpu={"N": 16, "B": 8, "P": 32, "T": 8, "rate": 200},
                 cuda={"N": 64, "B": 64, "P": 512, "T": 64, "rate": 16}),
          _inputs("N", lambda p: p["B"]), lambda impl: lambda inputs: ServerStep(inputs, impl, inputs["rate_per_s"]),
          units_per_call=lambda p: p["N"], flops=lambda p: p["N"] * _request_flops(p), bytes_=_server_bytes)

_scenario("scenario.server_search", "samples",
          # CPU bound: the tiny model's unloaded TTFT is about 1 ms there, so 20 ms is broken by queueing only.
          _sizes(cpu={"N": 16, "B": 8, "P": 32, "T": 8, "ttft": 20},
                 cuda={"N": 64, "B": 64, "P": 512, "T": 64, "ttft": 50}),
          _inputs("N", lambda p: p["B"]), _search_build,
          units_per_call=lambda p: p["N"], flops=lambda p: p["N"] * _request_flops(p), bytes_=_server_bytes)
