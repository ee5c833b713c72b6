"""Whether a transformer case fits a device's memory, decided from its config before anything is allocated.

A case that cannot fit (Llama-3.1-70B in bf16 on one 80 GB GPU) is skipped with this reason rather
than started and left to run out of memory after minutes of drawing random weights. The estimate:

- weights as stored (`TransformerConfig.weight_bytes`: int8 linear layers with fp32 scales, or dense);
- the KV cache for `batch` sequences of `cache_length` positions;
- working memory for a forward pass over `batch` × `cache_length` positions (a prompt that fills the
  cache, the largest prefill the cache allows): per position, an upper bound on what one block keeps
  alive at once in `Transformer.forward`: the residual stream, its normed copies and the block's
  outputs (6 × dim), queries with their rotary and repeated copies and the attention output
  (6 × heads × head_dim), keys and values before and after the rotary embedding (3 × kv width),
  the MLP's gate, up and their product (3 × ffn); plus the last position's logits. Attention itself
  never holds the S × S scores (flash attention: the Triton kernel and PyTorch's SDPA on a GPU);
- or, while the model is built, instead of the cache and working memory, the largest weight drawn in
  fp32 (and, for int8 weights, the quantiser's fp32 temporaries, about three copies of a layer);
- a fixed reserve for the CUDA context, library workspaces and the caching allocator's rounding (the
  rotary tables, under a megabyte at benchmark lengths, are inside it).
"""

from __future__ import annotations

from dataclasses import dataclass

from wattbench.models.transformer import TransformerConfig

#: Memory outside the estimate: the CUDA context (about 0.5–1 GiB), cuBLAS/Triton workspaces, rounding.
RESERVE_BYTES = 2 * 2 ** 30


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a case needs at its peak, by what holds them."""

    weights: int
    kv_cache: int
    activations: int
    #: Transient while the weights are drawn (before the cache exists).
    drawing: int
    batch: int
    cache_length: int
    reserve: int = RESERVE_BYTES

    @property
    def total(self) -> int:
        return self.weights + max(self.drawing, self.kv_cache + self.activations) + self.reserve

    def shortfall(self, device_bytes: int) -> str | None:
        """Why the case does not fit in `device_bytes` (an idle device's total memory), or None if it does."""
        if self.total <= device_bytes:
            return None
        return (f"needs {_gb(self.total)}: weights {_gb(self.weights)} + the larger of KV cache "
                f"{_gb(self.kv_cache)} ({self.batch} × {self.cache_length} positions) with working memory "
                f"{_gb(self.activations)} and drawing the weights {_gb(self.drawing)} + reserve {_gb(self.reserve)}; "
                f"the device has {_gb(device_bytes)}")


def memory_needed(config: TransformerConfig, batch: int, cache_length: int, element_size: int,
                  int8_weights: bool = False) -> MemoryNeed:
    """The peak memory of building `config` and running prefill and decode over a cache of `batch` ×
    `cache_length` positions, in a dtype of `element_size` bytes (with int8 linear weights if asked)."""
    c = config
    rows = batch * cache_length
    per_position = 6 * c.dim + 6 * c.q_dim + 3 * c.kv_dim + 3 * c.ffn
    activations = rows * per_position * element_size + batch * c.vocab * 4
    largest_linear = c.dim * max(c.ffn, c.q_dim)  # every linear layer has dim on one side
    if int8_weights:  # the embedding and head drawn in fp32, or a linear layer in the quantiser
        drawing = max(4 * c.vocab * c.dim, (element_size + 12) * largest_linear)
    else:
        drawing = 4 * max(c.vocab * c.dim, largest_linear)
    return MemoryNeed(weights=c.weight_bytes(element_size, int8_weights),
                      kv_cache=c.kv_cache_bytes(batch, cache_length, element_size),
                      activations=activations, drawing=drawing, batch=batch, cache_length=cache_length)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
