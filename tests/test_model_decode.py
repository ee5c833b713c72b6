"""Decode from static buffers (wattbench.models.decode): the tokens and logits of the eager
`Transformer.decode` loop, in eager mode on the CPU and under CUDA-graph replay on the simulated device
(whose graphs re-run the captured torch operations and Triton launches, freeze Python values, and
refuse host reads while capturing)."""

import functools

import pytest
import torch

from simulated_cuda import SimulatedCuda
from test_models import FEATURES
from wattbench import cuda
from wattbench.device import Device
from wattbench.models.decode import StaticDecoder
from wattbench.models.ops import TORCH, TRITON
from wattbench.models.transformer import KVCache, Transformer

CPU = torch.device("cpu")
ON_CPU = Device("cpu", None, "cpu")
GPU0, GPU1 = Device("cuda", 0, "Simulated H100"), Device("cuda", 1, "Simulated H100")
OPS = pytest.mark.parametrize("ops", [TORCH, TRITON], ids=["torch", "triton"])
STEPS = 3  # tokens that feed back, at three positions past the prompt


@pytest.fixture
def sim(monkeypatch):
    return SimulatedCuda(devices=2, replay_ops=True).install(monkeypatch)


def make_model():
    """The untied head makes greedy tokens vary from step to step (a tied random head echoes its input)."""
    return Transformer(FEATURES, torch.float32, CPU, torch.Generator().manual_seed(0))


def prompt(batch, length=7, seed=1):
    return torch.randint(0, FEATURES.vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@functools.cache
def eager_loop(ops, batch, seed, steps=STEPS):
    """The model-level decode step as it was: prefill, then `Transformer.decode` at the cache's length
    (kept: the Triton interpreter takes a while, and both modes are compared with it)."""
    model, prompt_tokens = make_model(), prompt(batch, seed=seed)
    cache = KVCache(model.config, batch, torch.float32, CPU)
    with torch.no_grad():
        token = model(prompt_tokens, ops, cache, last_only=True).argmax(-1)
        tokens, logits = [token], []
        for _ in range(steps):
            logits.append(model.decode(token, cache, ops))
            token = logits[-1].argmax(-1)
            tokens.append(token)
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def static_decode(decoder, prompt_tokens, steps=STEPS):
    decoder.prefill(prompt_tokens)
    tokens, logits = [decoder.next_tokens.clone()], []
    for _ in range(steps):
        logits.append(decoder.decode(1).clone())
        tokens.append(decoder.next_tokens.clone())
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def assert_same_decode(decoder, ops, batch, seed):
    tokens, logits = static_decode(decoder, prompt(batch, seed=seed))
    expected_tokens, expected_logits = eager_loop(ops, batch, seed)
    assert torch.equal(tokens, expected_tokens)
    assert torch.equal(logits, expected_logits)
    assert len(set(tokens[0].tolist())) > 2  # tokens that feed back, not one repeated


@OPS
def test_eager_mode_decodes_what_the_eager_loop_decodes(ops):
    model = make_model()
    decoder = StaticDecoder(model, ops, ON_CPU, batch_sizes=(1, 3), mode="eager")
    assert_same_decode(decoder, ops, batch=3, seed=1)
    assert_same_decode(decoder, ops, batch=1, seed=2)  # in the rows batch 3 used


@OPS
def test_graph_replays_decode_what_the_eager_loop_decodes_on_cuda_1(sim, ops):
    model = make_model()
    with GPU0.current():  # cuda:0 current outside, as by default
        decoder = StaticDecoder(model, ops, GPU1, batch_sizes=(1, 3), mode="cuda_graph")
        assert len(sim.graphs) == 2  # one graph per batch size, captured once
        assert_same_decode(decoder, ops, batch=3, seed=1)
        assert_same_decode(decoder, ops, batch=1, seed=2)
        assert_same_decode(decoder, ops, batch=3, seed=3)
    assert len(sim.graphs) == 2
    assert {launch.device for launch in sim.launches} == {1}


class StandIn:
    """A model as the decoder uses it, whose decode launches simulated work that notes the positions it
    reads on the device, and whose greedy next token is the input token + 1."""

    def __init__(self, sim, host_read=False):
        self.sim, self.host_read = sim, host_read
        self.config = FEATURES
        self.embed = torch.zeros(FEATURES.vocab, 1)
        self.seen: list[list[int]] = []

    def _next(self, tokens):
        return torch.nn.functional.one_hot((tokens + 1) % FEATURES.vocab, FEATURES.vocab).float()

    def __call__(self, prompt_tokens, ops, cache, last_only):
        return self._next(prompt_tokens[:, -1])

    def decode(self, tokens, cache, ops, positions):
        if self.host_read:
            int(positions.max())  # a Python int from a tensor: a host read
        self.sim.launch("decode", 20e-6, effect=lambda: self.seen.append(positions.tolist()))
        return self._next(tokens)


def test_each_replay_reads_the_positions_the_previous_one_advanced(sim):
    model = StandIn(sim)
    decoder = StaticDecoder(model, TORCH, GPU1, batch_sizes=(2, 4), mode="cuda_graph")
    assert [sum(node[0] == "decode" for node in graph.nodes) for graph in sim.graphs.values()] == [1, 1]
    model.seen.clear()  # the capture's warm-up calls
    decoder.prefill(torch.tensor([[3, 4, 5, 6, 10], [1, 2, 3, 4, 20]]))
    decoder.decode(4)
    assert model.seen == [[5, 5], [6, 6], [7, 7], [8, 8]]
    assert decoder.next_tokens.tolist() == [15, 25]
    decoder.start(torch.tensor([7, 7, 7, 7]), position=2)  # another batch size, its own graph
    decoder.decode(2)
    assert model.seen[4:] == [[2, 2, 2, 2], [3, 3, 3, 3]]
    assert len(sim.launched("replay:decode")) == 6
    assert {launch.device for launch in sim.launches} == {1}


def test_a_step_that_reads_a_tensor_on_the_host_cannot_be_captured(sim):
    with pytest.raises(RuntimeError, match="not permitted when stream is capturing"):
        StaticDecoder(StandIn(sim, host_read=True), TORCH, GPU1, batch_sizes=(2,), mode="cuda_graph")


def test_python_positions_are_frozen_in_a_graph(sim):
    """Why the decoder keeps positions on the device: the earlier decode, at the cache's Python-int
    length, writes the row of the capture at every replay."""
    model = make_model()
    cache = KVCache(FEATURES, 1, torch.float32, CPU)
    token = torch.tensor([5])
    with torch.no_grad():
        replay = cuda.capture_graph(lambda: model.decode(token, cache, TORCH), index=1, warmup=1)
        cache.k.zero_()
        with GPU1.current():
            replay()
            replay()
    written = cache.k[0, 0, 0].abs().sum(-1).nonzero().flatten().tolist()
    assert written == [1]  # the warm-up took position 0, the capture position 1; both replays wrote 1


def test_the_decoder_refuses_what_it_cannot_run():
    model = make_model()
    with pytest.raises(ValueError, match="needs a CUDA device"):
        StaticDecoder(model, TORCH, ON_CPU, batch_sizes=(1,), mode="cuda_graph")
    decoder = StaticDecoder(model, TORCH, ON_CPU, batch_sizes=(1, 4), mode="eager")
    with pytest.raises(RuntimeError, match="prefill"):
        decoder.decode(1)
    with pytest.raises(ValueError, match=r"batch 2: this decoder runs batch sizes \(1, 4\)"):
        decoder.prefill(prompt(2))
    decoder.start(torch.tensor([1]), position=FEATURES.max_seq - 2)
    with pytest.raises(ValueError, match="3 steps from position 62"):
        decoder.decode(3)
