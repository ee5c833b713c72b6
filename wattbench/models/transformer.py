"""A small decoder-only transformer (Llama-style) built from `wattbench.kernels`.

Token embedding, RMSNorm, multi-head attention with rotary position embeddings and grouped-query
heads (optionally RMSNorm on each query and key head, as Qwen3), SwiGLU MLP, and an output head
tied to the embedding or a separate matrix (as Llama-3.1 and Qwen3). Weights are random (nothing
is downloaded): energy and time per token depend on shapes, not on what the weights mean.
Every op goes through an `Ops`, so the model runs all-Triton or all-torch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

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
    #: Positions the KV cache and the rotary tables hold: benchmark-sized (prompt + new tokens), not
    #: the published context length, so a cache fits beside the weights.
    max_seq: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    #: Width of one attention head; dim // heads when not given. Qwen3 fixes it at 128 whatever dim is.
    head_dim: int | None = None
    #: The output head reuses the embedding matrix (GPT-2 style) or is a matrix of its own.
    tied_embeddings: bool = True
    #: RMSNorm over head_dim of every query and key head, before the rotary embedding (Qwen3).
    qk_norm: bool = False
    #: The published context length (max_position_embeddings); None: max_seq.
    max_positions: int | None = None

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.dim // self.heads)
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.max_positions is not None and self.max_seq > self.max_positions:
            raise ValueError(f"max_seq {self.max_seq} exceeds the model's {self.max_positions} positions")

    @property
    def q_dim(self) -> int:
        """Width of all query heads together (and of the attention output): heads × head_dim, not always dim."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linear_parameter_count(self) -> int:
        """One block's seven linear layers: wq, wk, wv, wo, w_gate, w_up, w_down."""
        return self.dim * self.q_dim + 2 * self.dim * self.kv_dim + self.q_dim * self.dim + 3 * self.dim * self.ffn

    def layer_parameter_count(self) -> int:
        """One block: its linear layers, its two norms and the q/k norms if any."""
        return self.layer_linear_parameter_count() + 2 * self.dim + (2 * self.head_dim if self.qk_norm else 0)

    def parameter_count(self) -> int:
        """All parameters; a tied head shares the embedding's (counted once, used twice)."""
        head = 0 if self.tied_embeddings else self.dim * self.vocab
        return self.vocab * self.dim + self.layers * self.layer_parameter_count() + self.dim + head

    def compute_parameter_count(self) -> int:
        """Parameters a token's forward pass multiplies by: all but an untied embedding table, which is
        only looked up (a tied one is the head's matrix). Norms are included, as in the 2N convention."""
        return self.parameter_count() - (0 if self.tied_embeddings else self.vocab * self.dim)

    def train_flops_per_token(self, seq: int) -> int:
        """6N + 12·L·H·Q·T (PaLM appendix B): forward + backward, attention at context length T."""
        return 6 * self.compute_parameter_count() + 12 * self.layers * self.q_dim * seq

    def forward_flops_per_token(self, context: int) -> int:
        """2N + 4·L·H·Q·T: one forward pass of one token attending over `context` positions."""
        return 2 * self.compute_parameter_count() + 4 * self.layers * self.q_dim * context

    def prefill_flops(self, prompt: int) -> int:
        """One sequence's prompt: position i attends over i + 1 positions (causal)."""
        return 2 * self.compute_parameter_count() * prompt + 4 * self.layers * self.q_dim * prompt * (prompt + 1) // 2

    def weight_bytes(self, element_size: int, int8_weights: bool = False) -> int:
        """Bytes of the weights as stored: with int8 weights, the blocks' linear layers are int8 with one
        fp32 scale per output column, while embedding, head and norms keep `element_size`."""
        if not int8_weights:
            return self.parameter_count() * element_size
        linear = self.layers * self.layer_linear_parameter_count()
        scales = self.layers * (self.q_dim + 2 * self.kv_dim + self.dim + 2 * self.ffn + self.dim)  # output columns
        return (self.parameter_count() - linear) * element_size + linear + 4 * scales

    def kv_cache_bytes(self, batch: int, positions: int, element_size: int) -> int:
        """Keys and values of every layer for `batch` sequences of `positions` each."""
        return 2 * self.layers * batch * self.kv_dim * positions * element_size


MODEL_CONFIGS = {
    # Runs on a 2-core CPU through the Triton interpreter in seconds.
    "tiny": TransformerConfig(vocab=512, dim=64, layers=2, heads=4, kv_heads=2, ffn=176, max_seq=128),
    # GPT-2-small-sized (about 124M parameters) and about 1.2B parameters, for GPUs.
    "125m": TransformerConfig(vocab=50304, dim=768, layers=12, heads=12, kv_heads=12, ffn=2048, max_seq=2048),
    "1.3b": TransformerConfig(vocab=50304, dim=2048, layers=24, heads=16, kv_heads=8, ffn=5632, max_seq=2048),
    # Published architectures with random weights. Every figure is the model's Hugging Face config.json:
    # hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
    # vocab_size, rope_theta, rms_norm_eps, tie_word_embeddings, max_position_embeddings. Llama-3.1's
    # rope_scaling ("llama3": it rescales the rotary frequencies past 8192 positions) is not modelled: it
    # changes the precomputed cos/sin tables, not the work per token.
    # meta-llama/Llama-3.1-8B config.json; 8.03B parameters (the model card's safetensors size).
    "llama3.1-8b": TransformerConfig(vocab=128256, dim=4096, layers=32, heads=32, kv_heads=8, ffn=14336,
                                     max_seq=2048, rope_theta=500000.0, norm_eps=1e-5, head_dim=128,
                                     tied_embeddings=False, max_positions=131072),
    # Qwen/Qwen3-8B config.json; the model card: 8.2B parameters, 6.95B of them outside the embeddings
    # (and head), q/k layernorm. Its 32 heads × 128 happen to equal its dim of 4096.
    "qwen3-8b": TransformerConfig(vocab=151936, dim=4096, layers=36, heads=32, kv_heads=8, ffn=12288,
                                  max_seq=2048, rope_theta=1000000.0, norm_eps=1e-6, head_dim=128,
                                  tied_embeddings=False, qk_norm=True, max_positions=40960),
    # meta-llama/Llama-3.1-70B config.json; 70.6B parameters, 141 GB in bf16: on one GPU mostly with int8
    # weights (wattbench.models.memory says whether a case fits).
    "llama3.1-70b": TransformerConfig(vocab=128256, dim=8192, layers=80, heads=64, kv_heads=8, ffn=28672,
                                      max_seq=2048, rope_theta=500000.0, norm_eps=1e-5, head_dim=128,
                                      tied_embeddings=False, max_positions=131072),
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

    def first(self, batch: int) -> "KVCache":
        """The first `batch` sequences, as a cache whose tensors are views of this one's."""
        view = copy.copy(self)
        view.k, view.v = self.k[:, :batch], self.v[:, :batch]
        return view


class Transformer(torch.nn.Module):
    def __init__(self, config: TransformerConfig, dtype: torch.dtype, device: torch.device,
                 generator: torch.Generator, int8_weights: bool = False):
        """Random weights on `device`. With `int8_weights`, each block's linear layer is quantised as soon as
        it is drawn and its dense copy dropped, so the model never holds more than one dense layer: a
        model whose dense weights exceed the device (Llama-3.1-70B in bf16 on one GPU) still builds."""
        super().__init__()
        self.config = config
        c = config
        self.quantized: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        #: Linear layers swapped for quantised ones (wattbench.models.quantized): (block, name) -> layer(x, ops).
        self.swapped: dict[tuple[int, str], Callable[[torch.Tensor, Ops], torch.Tensor]] = {}

        def weight(*shape, std=0.02):
            # In place: one fp32 copy of the weight while it is drawn, then the cast.
            drawn = torch.randn(*shape, generator=generator, device=device).mul_(std)
            return torch.nn.Parameter(drawn.to(dtype))

        def ones(n):
            return torch.nn.Parameter(torch.ones(n, dtype=dtype, device=device))

        def linear(index, block, name, *shape, std=0.02):
            if int8_weights:
                with torch.no_grad():
                    self.quantized[(index, name)] = quantize_int8(weight(*shape, std=std))
            else:
                setattr(block, name, weight(*shape, std=std))

        residual_std = 0.02 / math.sqrt(2 * c.layers)
        self.embed = weight(c.vocab, c.dim)
        self.blocks = torch.nn.ModuleList()
        for index in range(c.layers):
            block = torch.nn.Module()
            block.attn_norm, block.mlp_norm = ones(c.dim), ones(c.dim)
            if c.qk_norm:
                block.q_norm, block.k_norm = ones(c.head_dim), ones(c.head_dim)
            linear(index, block, "wq", c.dim, c.q_dim)
            linear(index, block, "wk", c.dim, c.kv_dim)
            linear(index, block, "wv", c.dim, c.kv_dim)
            linear(index, block, "wo", c.q_dim, c.dim, std=residual_std)
            linear(index, block, "w_gate", c.dim, c.ffn)
            linear(index, block, "w_up", c.dim, c.ffn)
            linear(index, block, "w_down", c.ffn, c.dim, std=residual_std)
            self.blocks.append(block)
        self.final_norm = ones(c.dim)
        if not c.tied_embeddings:
            self.output = weight(c.dim, c.vocab)
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, device=device).float() / c.head_dim))
        angles = torch.outer(torch.arange(c.max_seq, device=device).float(), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def quantize_int8(self) -> None:
        """Weight-only int8 for every block's linear layer, replacing its dense weight; the embedding, the
        head and the norms stay in the model's dtype."""
        with torch.no_grad():
            for index, block in enumerate(self.blocks):
                for name in LINEARS:
                    self.quantized[(index, name)] = quantize_int8(getattr(block, name))
                    delattr(block, name)

    def _linear(self, x: torch.Tensor, index: int, name: str, ops: Ops) -> torch.Tensor:
        swapped = self.swapped.get((index, name))
        if swapped is not None:
            return swapped(x, ops)
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
        q = self._linear(h2d, index, "wq", ops).view(batch, seq, c.heads, c.head_dim)
        k = self._linear(h2d, index, "wk", ops).view(batch, seq, c.kv_heads, c.head_dim)
        v = self._linear(h2d, index, "wv", ops).view(batch, seq, c.kv_heads, c.head_dim).transpose(1, 2)
        if c.qk_norm:
            block = self.blocks[index]
            q, k = ops.rms_norm(q, block.q_norm, c.norm_eps), ops.rms_norm(k, block.k_norm, c.norm_eps)
        return self._rotate(q.transpose(1, 2), positions), self._rotate(k.transpose(1, 2), positions), v

    def _mlp(self, x2d: torch.Tensor, index: int, ops: Ops) -> torch.Tensor:
        h = ops.rms_norm(x2d, self.blocks[index].mlp_norm, self.config.norm_eps)
        gated = ops.swiglu(self._linear(h, index, "w_gate", ops), self._linear(h, index, "w_up", ops))
        return x2d + self._linear(gated, index, "w_down", ops)

    def _head(self, x2d: torch.Tensor, ops: Ops) -> torch.Tensor:
        head = self.embed.t() if self.config.tied_embeddings else self.output
        return ops.matmul(ops.rms_norm(x2d, self.final_norm, self.config.norm_eps), head)

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
            x = x + self._linear(attended.transpose(1, 2).reshape(batch * seq, c.q_dim), index, "wo", ops)
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
        as continuous batching needs, and the cache's shared length is left alone; nothing is then
        read back on the host (positions index the cache and the rotary tables on the device), so the
        call can be captured into a CUDA graph and replayed with new positions.
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
            x = x + self._linear(attended.reshape(batch, c.q_dim), index, "wo", ops)
            x = self._mlp(x, index, ops)
        if static:
            cache.length += 1
        return self._head(x, ops)
