"""Published model shapes and the memory check that decides where they can run; from the configs alone
(no test builds an 8B model)."""

import dataclasses
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wattbench.models.memory import RESERVE_BYTES, memory_needed
from wattbench.models.ops import TORCH
from wattbench.models.transformer import MODEL_CONFIGS, KVCache, Transformer
from test_models import FEATURES

GB = 1e9
H100_BYTES = 80 * 2 ** 30
H200_BYTES = 141 * GB


# Totals as published: the Hugging Face model pages' safetensors sizes (meta-llama/Llama-3.1-8B 8.03B,
# meta-llama/Llama-3.1-70B 70.6B, Qwen/Qwen3-8B 8.19B; the Qwen3-8B card says 8.2B, 6.95B non-embedding).
@pytest.mark.parametrize("name, published", [("llama3.1-8b", 8.03e9), ("qwen3-8b", 8.19e9), ("llama3.1-70b", 70.6e9)])
def test_parameter_counts_are_the_published_ones(name, published):
    assert MODEL_CONFIGS[name].parameter_count() == pytest.approx(published, rel=0.01)


def test_qwen3_8b_outside_its_embedding_and_head_is_the_cards_6_95b():
    c = MODEL_CONFIGS["qwen3-8b"]
    assert c.parameter_count() - 2 * c.vocab * c.dim == pytest.approx(6.95e9, rel=0.005)


def test_published_shapes():
    llama, qwen = MODEL_CONFIGS["llama3.1-8b"], MODEL_CONFIGS["qwen3-8b"]
    assert (llama.q_dim, llama.kv_dim, llama.heads // llama.kv_heads) == (4096, 1024, 4)
    assert (qwen.head_dim, qwen.qk_norm, qwen.tied_embeddings, qwen.rope_theta) == (128, True, False, 1e6)
    assert (llama.rope_theta, llama.norm_eps, llama.max_positions) == (500000.0, 1e-5, 131072)
    assert MODEL_CONFIGS["llama3.1-70b"].q_dim == 8192


def test_a_cache_longer_than_the_models_positions_is_refused():
    with pytest.raises(ValueError, match="exceeds the model's 40960 positions"):
        dataclasses.replace(MODEL_CONFIGS["qwen3-8b"], max_seq=65536)


def test_the_8b_models_fit_an_80_gb_gpu_at_batch_64():
    for name in ("llama3.1-8b", "qwen3-8b"):
        need = memory_needed(MODEL_CONFIGS[name], batch=64, cache_length=576, element_size=2)
        assert need.shortfall(H100_BYTES) is None


def test_llama_70b_needs_int8_weights_on_one_141_gb_gpu_and_says_why_otherwise():
    config = MODEL_CONFIGS["llama3.1-70b"]
    dense = memory_needed(config, batch=16, cache_length=576, element_size=2)
    reason = dense.shortfall(H200_BYTES)
    assert reason.startswith("needs 149.7 GB: weights 141.1 GB") and reason.endswith("the device has 141.0 GB")
    assert "KV cache 3.0 GB (16 × 576 positions)" in reason
    int8 = memory_needed(config, batch=64, cache_length=576, element_size=2, int8_weights=True)
    assert int8.shortfall(H200_BYTES) is None
    assert int8.shortfall(H100_BYTES).startswith("needs 100.8 GB: weights 72.7 GB")


def test_the_estimate_adds_what_holds_memory_at_the_peak():
    need = memory_needed(MODEL_CONFIGS["llama3.1-8b"], batch=4, cache_length=1024, element_size=2)
    assert need.weights == MODEL_CONFIGS["llama3.1-8b"].weight_bytes(2)
    assert need.total == need.weights + max(need.drawing, need.kv_cache + need.activations) + RESERVE_BYTES
    assert need.drawing == 4 * 128256 * 4096  # the embedding (or head) drawn in fp32


def test_the_kv_cache_estimate_is_the_caches_size():
    cache = KVCache(FEATURES, 3, torch.float32, torch.device("cpu"))
    need = memory_needed(FEATURES, batch=3, cache_length=FEATURES.max_seq, element_size=4)
    assert need.kv_cache == cache.k.numel() * 4 + cache.v.numel() * 4


class PeakLiveBytes(TorchDispatchMode):
    """The most bytes of tensor storage created inside the mode that were alive at once."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.seen:
                storage = t.untyped_storage()
                self.seen.add(storage.data_ptr())
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._freed, storage.data_ptr(), storage.nbytes())
        return out

    def _freed(self, pointer, nbytes):
        self.seen.discard(pointer)
        self.live -= nbytes


@pytest.mark.parametrize("batch, prompt", [(1, 64), (4, 32)])
def test_the_working_memory_allowance_covers_a_prefill_that_fills_the_cache(batch, prompt):
    """Measured on the torch path: every tensor a prefill creates, alive at once at its worst."""
    config = dataclasses.replace(FEATURES, max_seq=prompt)
    model = Transformer(config, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))
    cache = KVCache(config, batch, torch.float32, torch.device("cpu"))
    prompt_tokens = torch.randint(0, config.vocab, (batch, prompt), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), PeakLiveBytes() as peak:
        model(prompt_tokens, TORCH, cache, last_only=True)
    allowance = memory_needed(config, batch, prompt, element_size=4).activations
    assert peak.peak <= allowance < 4 * peak.peak
