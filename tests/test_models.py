"""The transformer of the model-level suites: against a plain PyTorch forward, KV-cache decode against
a full recompute, int8 weights, training steps, and its FLOP formulas; on the tiny preset and on a
scaled-down model with the published architectures' features (an untied head, q/k norms, heads ×
head_dim unequal to dim)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from wattbench.models.ops import TORCH, TRITON, ops_for
from wattbench.models.transformer import MODEL_CONFIGS, KVCache, Transformer, TransformerConfig
from wattbench.workloads import case_by_id
from wattbench.device import detect

CONFIG = MODEL_CONFIGS["tiny"]
#: Qwen3's features at a CPU's scale: 4 heads × 16 = 64 wide on a 48-wide residual stream.
FEATURES = TransformerConfig(vocab=384, dim=48, layers=2, heads=4, kv_heads=2, ffn=128, max_seq=64, head_dim=16,
                             rope_theta=1e6, norm_eps=1e-6, tied_embeddings=False, qk_norm=True, max_positions=4096)
CONFIGS = pytest.mark.parametrize("config", [CONFIG, FEATURES], ids=["tiny", "untied-qk-norm"])
CPU = torch.device("cpu")


def make_model(seed=0, config=CONFIG):
    return Transformer(config, torch.float32, CPU, torch.Generator().manual_seed(seed))


def tokens(batch, length, seed=1, config=CONFIG):
    return torch.randint(0, config.vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


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
        q = (h @ block.wq).view(batch, seq, c.heads, c.head_dim)
        k = (h @ block.wk).view(batch, seq, c.kv_heads, c.head_dim)
        if c.qk_norm:
            q, k = rms(q, block.q_norm), rms(k, block.k_norm)
        q, k = rope(q.transpose(1, 2)), rope(k.transpose(1, 2))
        v = (h @ block.wv).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        group = c.heads // c.kv_heads
        scores = (q @ k.repeat_interleave(group, 1).transpose(-1, -2)) / math.sqrt(c.head_dim)
        scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        attended = scores.softmax(-1) @ v.repeat_interleave(group, 1)
        x = x + attended.transpose(1, 2).reshape(batch, seq, c.heads * c.head_dim) @ block.wo
        h = rms(x, block.mlp_norm)
        x = x + (F.silu(h @ block.w_gate) * (h @ block.w_up)) @ block.w_down
    head = model.embed.t() if c.tied_embeddings else model.output
    return (rms(x, model.final_norm) @ head).reshape(batch * seq, c.vocab)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@CONFIGS
@pytest.mark.parametrize("ops", [TORCH, TRITON], ids=["torch", "triton"])
def test_forward_matches_plain_pytorch(ops, config):
    model, ids = make_model(config=config), tokens(2, 11, config=config)
    with torch.no_grad():
        assert rel(model(ids, ops), plain_forward(model, ids)) < 1e-5


@CONFIGS
@pytest.mark.parametrize("ops", [TORCH, TRITON], ids=["torch", "triton"])
def test_kv_cache_decode_matches_a_full_recompute(ops, config):
    model, ids = make_model(config=config), tokens(3, 10, config=config)
    cache = KVCache(config, 3, torch.float32, CPU)
    with torch.no_grad():
        full = model(ids, TORCH).view(3, 10, config.vocab)
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


@CONFIGS
def test_int8_weights_stay_close_and_both_paths_agree(config):
    model, ids = make_model(config=config), tokens(2, 8, config=config)
    with torch.no_grad():
        dense = model(ids, TORCH)
        model.quantize_int8()
        torch_int8, triton_int8 = model(ids, TORCH), model(ids, TRITON)
    assert 0 < rel(torch_int8, dense) < 0.02
    assert rel(triton_int8, torch_int8) < 1e-5


@CONFIGS
def test_int8_weights_drawn_at_build_are_those_of_quantising_afterwards_and_stored_as_counted(config):
    """Built with int8_weights, no dense copy of a linear layer is kept (a 70B model in bf16 would not fit)."""
    quantised_after = make_model(config=config)
    quantised_after.quantize_int8()
    built = Transformer(config, torch.float32, CPU, torch.Generator().manual_seed(0), int8_weights=True)
    assert built.quantized.keys() == quantised_after.quantized.keys()
    for key, (w_q, scale) in built.quantized.items():
        expected_w_q, expected_scale = quantised_after.quantized[key]
        assert torch.equal(w_q, expected_w_q) and torch.equal(scale, expected_scale)
    assert not any(hasattr(block, "wq") for block in built.blocks)
    stored = list(built.parameters()) + [t for pair in built.quantized.values() for t in pair]
    assert sum(t.numel() * t.element_size() for t in stored) == config.weight_bytes(4, int8_weights=True)


def test_training_steps_agree_between_triton_and_torch_and_learn():
    losses = {}
    for impl in ("torch", "triton"):
        step = case_by_id("llm.train-%s-fp32-tiny-B2-S32" % impl).build(detect("cpu"), base_seed=5)
        losses[impl] = [step().item() for _ in range(3)]
    assert losses["triton"] == pytest.approx(losses["torch"], rel=1e-4)
    assert losses["torch"][-1] < losses["torch"][0]


@CONFIGS
def test_parameter_count_and_stored_bytes_match_the_model(config):
    model = make_model(config=config)
    assert config.parameter_count() == sum(p.numel() for p in model.parameters())
    assert config.weight_bytes(4) == sum(p.numel() * p.element_size() for p in model.parameters())


def test_preset_sizes_are_unchanged():
    """The presets' parameter counts before the published architectures' features were added."""
    assert [MODEL_CONFIGS[name].parameter_count() for name in ("tiny", "125m", "1.3b")] == [125_248, 123_587_328,
                                                                                      1_235_585_024]


@CONFIGS
def test_forward_flop_formula_matches_pytorchs_flop_counter(config):
    """2N + 4·L·H·Q·T per token: counted on the plain forward, whose attention is two explicit (unmasked)
    matmuls; FlopCounterMode counts matmuls, not norms, elementwise work or an untied embedding's lookup."""
    model, ids = make_model(config=config), tokens(2, 16, config=config)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        plain_forward(model, ids)
    norm_params = (2 * config.layers + 1) * config.dim + (2 * config.layers * config.head_dim if config.qk_norm else 0)
    expected = 2 * 16 * (config.forward_flops_per_token(16) - 2 * norm_params)
    assert counter.get_total_flops() == expected
    assert config.train_flops_per_token(16) == 3 * config.forward_flops_per_token(16)
    # A causal prefill: position i attends over i + 1 positions.
    assert config.prefill_flops(16) == sum(config.forward_flops_per_token(i + 1) for i in range(16))


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="unknown implementation 'cuda'"):
        ops_for("cuda")
