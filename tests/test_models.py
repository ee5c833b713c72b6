"""The transformer of the model-level suites: against a plain PyTorch forward, KV-cache decode against
a full recompute, int8 weights, training steps, and its FLOP formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from wattbench.models.ops import TORCH, TRITON, ops_for
from wattbench.models.transformer import PRESETS, KVCache, Transformer
from wattbench.workloads import case_by_id
from wattbench.device import detect

CONFIG = PRESETS["tiny"]
CPU = torch.device("cpu")


def make_model(seed=0):
    return Transformer(CONFIG, torch.float32, CPU, torch.Generator().manual_seed(seed))


def tokens(batch, length, seed=1):
    return torch.randint(0, CONFIG.vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def plain_forward(model, ids):
    """The same network written directly in PyTorch, without the Ops switch."""
    c = model.config
    batch, seq = ids.shape
    x = model.embed[ids]
    positions = torch.arange(seq)
    cos, sin = model.cos[positions], model.sin[positions]

    def rope(t):
        even, odd = t[..., 0::2], t[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + c.norm_eps) * w

    for block in model.blocks:
        h = rms(x, block.attn_norm)
        q = rope((h @ block.wq).view(batch, seq, c.heads, c.head_dim).transpose(1, 2))
        k = rope((h @ block.wk).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2))
        v = (h @ block.wv).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        group = c.heads // c.kv_heads
        scores = (q @ k.repeat_interleave(group, 1).transpose(-1, -2)) / math.sqrt(c.head_dim)
        scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        attended = scores.softmax(-1) @ v.repeat_interleave(group, 1)
        x = x + attended.transpose(1, 2).reshape(batch, seq, c.dim) @ block.wo
        h = rms(x, block.mlp_norm)
        x = x + (F.silu(h @ block.w_gate) * (h @ block.w_up)) @ block.w_down
    return (rms(x, model.final_norm) @ model.embed.t()).reshape(batch * seq, c.vocab)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("ops", [TORCH, TRITON], ids=["torch", "triton"])
def test_forward_matches_plain_pytorch(ops):
    model, ids = make_model(), tokens(2, 11)
    with torch.no_grad():
        assert rel(model(ids, ops), plain_forward(model, ids)) < 1e-5


@pytest.mark.parametrize("ops", [TORCH, TRITON], ids=["torch", "triton"])
def test_kv_cache_decode_matches_a_full_recompute(ops):
    model, ids = make_model(), tokens(3, 10)
    cache = KVCache(CONFIG, 3, torch.float32, CPU)
    with torch.no_grad():
        full = model(ids, TORCH).view(3, 10, CONFIG.vocab)
        last = model(ids[:, :7], ops, cache, last_only=True)
        assert rel(last, full[:, 6]) < 1e-5
        for position in range(7, 10):
            logits = model.decode(ids[:, position], cache, ops)
            assert rel(logits, full[:, position]) < 1e-5, position
    assert cache.length == 10


def test_decode_refuses_a_full_cache():
    model = make_model()
    cache = KVCache(CONFIG, 1, torch.float32, CPU)
    cache.length = CONFIG.max_seq
    with pytest.raises(ValueError, match="cache is full"):
        model.decode(tokens(1, 1)[:, 0], cache, TORCH)


def test_int8_weights_stay_close_and_both_paths_agree():
    model, ids = make_model(), tokens(2, 8)
    with torch.no_grad():
        dense = model(ids, TORCH)
        model.quantize_int8()
        torch_int8, triton_int8 = model(ids, TORCH), model(ids, TRITON)
    assert 0 < rel(torch_int8, dense) < 0.02
    assert rel(triton_int8, torch_int8) < 1e-5


def test_training_steps_agree_between_triton_and_torch_and_learn():
    losses = {}
    for impl in ("torch", "triton"):
        step = case_by_id("llm.train-%s-fp32-tiny-B2-S32" % impl).build(detect("cpu"), base_seed=5)
        losses[impl] = [step().item() for _ in range(3)]
    assert losses["triton"] == pytest.approx(losses["torch"], rel=1e-4)
    assert losses["torch"][-1] < losses["torch"][0]


def test_parameter_count_and_preset_sizes():
    assert CONFIG.parameter_count() == sum(p.numel() for p in make_model().parameters())
    assert 120e6 < PRESETS["125m"].parameter_count() < 130e6
    assert 1.1e9 < PRESETS["1.3b"].parameter_count() < 1.4e9


def test_forward_flop_formula_matches_pytorchs_flop_counter():
    """2N + 4·L·H·Q·T per token: counted on the plain forward, whose attention is two explicit (unmasked)
    matmuls; FlopCounterMode counts matmuls, not norms or elementwise work."""
    model, ids = make_model(), tokens(2, 16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        plain_forward(model, ids)
    norm_params = (2 * CONFIG.layers + 1) * CONFIG.dim
    expected = 2 * 16 * (CONFIG.forward_flops_per_token(16) - 2 * norm_params)
    assert counter.get_total_flops() == expected
    assert CONFIG.train_flops_per_token(16) == 3 * CONFIG.forward_flops_per_token(16)


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="unknown implementation 'cuda'"):
        ops_for("cuda")
