"""A small decoder-only transformer (Llama-style) built from `wattbench.kernels`.

Token embedding, RMSNorm, multi-head attention with rotary position embeddings and grouped-query
heads, SwiGLU MLP, and an output head tied to the embedding. Weights are random (nothing is
downloaded): energy and time per token depend on shapes, not on what the weights mean.
Every op goes through an `Ops`, so the model runs all-Triton or all-torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wattbench.kernels.matmul_int8 import quantize_int8
from wattbench.models.ops import Ops


@dataclass(frozen=True)
class TransformerConfig:
    vocab: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    max_seq: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def parameter_count(self) -> int:
        """All parameters; the tied head shares the embedding's (counted once, used twice)."""
        kv_dim = self.kv_heads * self.head_dim
        per_layer = 2 * self.dim + 2 * self.dim * self.dim + 2 * self.dim * kv_dim + 3 * self.dim * self.ffn
        return self.vocab * self.dim + self.layers * per_layer + self.dim

    def train_flops_per_token(self, seq: int) -> int:
        """6N + 12·L·H·Q·T (PaLM appendix B): forward + backward, attention at context length T."""
        return 6 * self.parameter_count() + 12 * self.layers * self.heads * self.head_dim * seq

    def forward_flops_per_token(self, context: int) -> int:
        """2N + 4·L·H·Q·T: one forward pass of one token attending over `context` positions."""
        return 2 * self.parameter_count() + 4 * self.layers * self.heads * self.head_dim * context


PRESETS = {
    # Runs on a 2-core CPU through the Triton interpreter in seconds.
    "tiny": TransformerConfig(vocab=512, dim=64, layers=2, heads=4, kv_heads=2, ffn=176, max_seq=128),
    # GPT-2-small-sized (about 124M parameters) and about 1.2B parameters, for GPUs.
    "125m": TransformerConfig(vocab=50304, dim=768, layers=12, heads=12, kv_heads=12, ffn=2048, max_seq=2048),
    "1.3b": TransformerConfig(vocab=50304, dim=2048, layers=24, heads=16, kv_heads=8, ffn=5632, max_seq=2048),
}

LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


class KVCache:
    """Keys and values of every layer for a static batch, all sequences at the same length."""

    def __init__(self, config: TransformerConfig, batch: int, dtype: torch.dtype, device: torch.device):
        shape = (config.layers, batch, config.kv_heads, config.max_seq, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def reset(self) -> None:
        self.length = 0


class Transformer(torch.nn.Module):
    def __init__(self, config: TransformerConfig, dtype: torch.dtype, device: torch.device,
                 generator: torch.Generator):
        super().__init__()
        self.config = config
        c = config
        kv_dim = c.kv_heads * c.head_dim

        def weight(*shape, std=0.02):
            return torch.nn.Parameter((torch.randn(*shape, generator=generator, device=device) * std).to(dtype))

        def ones(n):
            return torch.nn.Parameter(torch.ones(n, dtype=dtype, device=device))

        self.embed = weight(c.vocab, c.dim)
        self.blocks = torch.nn.ModuleList()
        for _ in range(c.layers):
            block = torch.nn.Module()
            block.attn_norm, block.mlp_norm = ones(c.dim), ones(c.dim)
            block.wq, block.wk, block.wv = weight(c.dim, c.dim), weight(c.dim, kv_dim), weight(c.dim, kv_dim)
            block.wo = weight(c.dim, c.dim, std=0.02 / math.sqrt(2 * c.layers))
            block.w_gate, block.w_up = weight(c.dim, c.ffn), weight(c.dim, c.ffn)
            block.w_down = weight(c.ffn, c.dim, std=0.02 / math.sqrt(2 * c.layers))
            self.blocks.append(block)
        self.final_norm = ones(c.dim)
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, device=device).float() / c.head_dim))
        angles = torch.outer(torch.arange(c.max_seq, device=device).float(), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.quantized: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def quantize_int8(self) -> None:
        """Weight-only int8 for every linear layer (the tied head stays in the model's dtype)."""
        with torch.no_grad():
            for index, block in enumerate(self.blocks):
                for name in LINEARS:
                    self.quantized[(index, name)] = quantize_int8(getattr(block, name))

    def _linear(self, x: torch.Tensor, index: int, name: str, ops: Ops) -> torch.Tensor:
        if self.quantized:
            w_q, scale = self.quantized[(index, name)]
            return ops.matmul_int8w(x, w_q, scale)
        return ops.matmul(x, getattr(self.blocks[index], name))

    def _rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of x (B, heads, S, D) at the given positions (S,)."""
        cos, sin = self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)

    def _qkv(self, h2d: torch.Tensor, index: int, batch: int, seq: int, positions: torch.Tensor, ops: Ops):
        c = self.config
        q = self._linear(h2d, index, "wq", ops).view(batch, seq, c.heads, c.head_dim).transpose(1, 2)
        k = self._linear(h2d, index, "wk", ops).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self._linear(h2d, index, "wv", ops).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        return self._rotate(q, positions), self._rotate(k, positions), v

    def _mlp(self, x2d: torch.Tensor, index: int, ops: Ops) -> torch.Tensor:
        h = ops.rms_norm(x2d, self.blocks[index].mlp_norm, self.config.norm_eps)
        gated = ops.swiglu(self._linear(h, index, "w_gate", ops), self._linear(h, index, "w_up", ops))
        return x2d + self._linear(gated, index, "w_down", ops)

    def _head(self, x2d: torch.Tensor, ops: Ops) -> torch.Tensor:
        return ops.matmul(ops.rms_norm(x2d, self.final_norm, self.config.norm_eps), self.embed.t())

    def forward(self, tokens: torch.Tensor, ops: Ops, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Causal forward over tokens (B, S) → logits (B·S, vocab), or (B, vocab) of the last position only
        (prefill needs no more); with a cache, fills its first S positions."""
        c = self.config
        batch, seq = tokens.shape
        positions = torch.arange(seq, device=tokens.device)
        x = torch.nn.functional.embedding(tokens, self.embed).view(batch * seq, c.dim)
        for index, block in enumerate(self.blocks):
            h = ops.rms_norm(x, block.attn_norm, c.norm_eps)
            q, k, v = self._qkv(h, index, batch, seq, positions, ops)
            if cache is not None:
                cache.k[index, :, :, :seq] = k
                cache.v[index, :, :, :seq] = v
            group = c.heads // c.kv_heads
            attended = ops.attention(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1),
                                     causal=True)
            x = x + self._linear(attended.transpose(1, 2).reshape(batch * seq, c.dim), index, "wo", ops)
            x = self._mlp(x, index, ops)
        if cache is not None:
            cache.length = seq
        if last_only:
            x = x.view(batch, seq, c.dim)[:, -1]
        return self._head(x, ops)

    def decode(self, tokens: torch.Tensor, cache: KVCache, ops: Ops,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """One new token per sequence, tokens (B,) → logits (B, vocab).

        Without `positions`, every sequence is at `cache.length` (a static batch), which then
        advances by one. With `positions` (B,), each sequence (cache slot) is at its own position,
        as continuous batching needs, and the cache's shared length is left alone.
        """
        c = self.config
        batch = tokens.shape[0]
        static = positions is None
        if static:
            if cache.length >= c.max_seq:
                raise ValueError(f"decode: the cache is full ({c.max_seq} positions)")
            positions = torch.full((batch,), cache.length, dtype=torch.long, device=tokens.device)
        slots = torch.arange(batch, device=tokens.device)
        seq_lens = (positions + 1).to(torch.int32)
        x = torch.nn.functional.embedding(tokens, self.embed)
        for index, block in enumerate(self.blocks):
            h = ops.rms_norm(x, block.attn_norm, c.norm_eps)
            # Positions shaped (B, 1, 1) rotate each sequence's (heads, 1, head_dim) at its own position.
            q, k, v = self._qkv(h, index, batch, 1, positions.view(batch, 1, 1), ops)
            cache.k[index][slots, :, positions] = k[:, :, 0]
            cache.v[index][slots, :, positions] = v[:, :, 0]
            attended = ops.decode_attention(q[:, :, 0], cache.k[index], cache.v[index], seq_lens)
            x = x + self._linear(attended.reshape(batch, c.dim), index, "wo", ops)
            x = self._mlp(x, index, ops)
        if static:
            cache.length += 1
        return self._head(x, ops)
