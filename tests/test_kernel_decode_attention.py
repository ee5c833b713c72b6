"""Split-K decode attention against masked, head-repeated PyTorch attention in float64."""

from __future__ import annotations

import importlib

import pytest
import torch

from kernel_checks import DEVICE, assert_rel_close, generator_for, randn, skip_if_bf16_dot_interpreted
from wattbench.kernels.decode_attention import (decode_attention, decode_attention_bytes, decode_attention_flops,
                                                decode_attention_reference)

# The module itself (the package exports a function of the same name).
decode_module = importlib.import_module("wattbench.kernels.decode_attention")


def _inputs(batch, heads, kv_heads, s_max, head_dim, dtype, length_dtype, strided: bool, generator):
    """q, caches and lengths, the first sequence 1 token long and the last filling the cache.

    `strided` gives a q with a gap in D, caches in the (B, S, H_kv, D) layout seen as
    (B, H_kv, S, D), and every other element of a longer lengths tensor.
    """
    if strided:
        q = randn(batch, heads, 2 * head_dim, dtype=dtype, generator=generator)[..., :head_dim]
        k, v = (randn(batch, s_max, kv_heads, head_dim, dtype=dtype, generator=generator).transpose(1, 2)
                for _ in range(2))
    else:
        q = randn(batch, heads, head_dim, dtype=dtype, generator=generator)
        k, v = (randn(batch, kv_heads, s_max, head_dim, dtype=dtype, generator=generator) for _ in range(2))
    lengths = torch.randint(1, s_max + 1, (2 * batch,), generator=generator)
    lengths[0], lengths[-2] = 1, s_max
    seq_lens = lengths.to(DEVICE, length_dtype)[::2] if strided else lengths[::2].contiguous().to(DEVICE, length_dtype)
    return q, k, v, seq_lens


def _check(batch, heads, kv_heads, s_max, head_dim, dtype, length_dtype=torch.int32, strided=False, sm_scale=None):
    gen = generator_for(f"decode-{batch}-{heads}-{kv_heads}-{s_max}-{head_dim}-{dtype}")
    q, k, v, seq_lens = _inputs(batch, heads, kv_heads, s_max, head_dim, dtype, length_dtype, strided, gen)
    out = decode_attention(q, k, v, seq_lens, sm_scale=sm_scale)
    expected = decode_attention_reference(q.double(), k.double(), v.double(), seq_lens, sm_scale=sm_scale)
    assert_rel_close(out, expected, dtype)


@pytest.mark.parametrize("dtype, batch, heads, kv_heads, s_max, head_dim, length_dtype, strided, sm_scale", [
    (torch.float32, 2, 2, 2, 70, 32, torch.int32, False, None),   # one query head per cache head
    (torch.float32, 2, 8, 2, 70, 16, torch.int64, True, 0.3),     # four query heads per cache head
    (torch.float16, 2, 4, 1, 70, 32, torch.int64, False, None),
    (torch.float16, 3, 2, 2, 17, 64, torch.int32, True, None),
    (torch.float32, 2, 2, 1, 17, 128, torch.int32, False, None),  # the largest head dim
    (torch.bfloat16, 2, 8, 2, 70, 32, torch.int32, True, None),
])
def test_decode_attention_matches_reference(dtype, batch, heads, kv_heads, s_max, head_dim, length_dtype, strided,
                                             sm_scale):
    skip_if_bf16_dot_interpreted(dtype)
    _check(batch, heads, kv_heads, s_max, head_dim, dtype, length_dtype, strided, sm_scale)


def test_decode_attention_long_cache_is_split_and_merged():
    batch, heads, kv_heads, s_max = 2, 4, 1, 1000
    split_size = decode_module._split_size(batch * kv_heads, s_max, DEVICE)
    assert split_size < s_max, "this cache should be cut into several splits on any device"
    _check(batch, heads, kv_heads, s_max, 16, torch.float32)


def test_decode_attention_merges_many_splits_in_rounds():
    """One sequence on one cache head splits the most; the merge combines the splits a block at a time."""
    batch, heads, kv_heads, s_max = 1, 4, 1, 5000
    split_size = decode_module._split_size(batch * kv_heads, s_max, DEVICE)
    assert -(-s_max // split_size) > decode_module._MERGE_BLOCK, "the merge should take several rounds"
    _check(batch, heads, kv_heads, s_max, 16, torch.float32)


def test_decode_attention_clamps_lengths_past_the_cache():
    gen = generator_for("decode-clamp")
    q, k, v, seq_lens = _inputs(2, 2, 2, 17, 16, torch.float32, torch.int64, False, gen)
    out = decode_attention(q, k, v, seq_lens + 100)
    expected = decode_attention_reference(q.double(), k.double(), v.double(), torch.full_like(seq_lens, 17))
    assert_rel_close(out, expected, torch.float32)


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if the launch is prepared: bad input must be rejected first."""
    def launched(*args, **kwargs):
        pytest.fail("decode_attention prepared a launch on invalid input")
    monkeypatch.setattr(decode_module, "_split_size", launched)


def _valid(**changes):
    """Valid small inputs (B=2, H=4, H_kv=2, S_max=5, D=16) with some replaced."""
    inputs = {"q": torch.ones(2, 4, 16, device=DEVICE), "k_cache": torch.ones(2, 2, 5, 16, device=DEVICE),
              "v_cache": torch.ones(2, 2, 5, 16, device=DEVICE),
              "seq_lens": torch.tensor([1, 5], dtype=torch.int32, device=DEVICE)}
    inputs.update(changes)
    return inputs


@pytest.mark.usefixtures("no_launch")
@pytest.mark.parametrize("inputs, error, match", [
    (_valid(q=torch.ones(2, 4, 48, device=DEVICE), k_cache=torch.ones(2, 2, 5, 48, device=DEVICE),
            v_cache=torch.ones(2, 2, 5, 48, device=DEVICE)), ValueError, "head dim"),
    (_valid(q=torch.ones(2, 3, 16, device=DEVICE)), ValueError, "multiple of cache heads"),
    (_valid(q=torch.ones(2, 4, 1, 16, device=DEVICE)), ValueError, "3-D"),
    (_valid(k_cache=torch.ones(2, 5, 16, device=DEVICE)), ValueError, "4-D"),
    (_valid(v_cache=torch.ones(2, 2, 6, 16, device=DEVICE)), ValueError, "expected q"),
    (_valid(k_cache=torch.ones(3, 2, 5, 16, device=DEVICE), v_cache=torch.ones(3, 2, 5, 16, device=DEVICE)),
     ValueError, "expected q"),
    (_valid(seq_lens=torch.tensor([1, 5, 5], device=DEVICE)), ValueError, "expected q"),
    (_valid(k_cache=torch.ones(2, 2, 0, 16, device=DEVICE)), ValueError, "empty"),
    (_valid(seq_lens=torch.tensor([1.0, 5.0], device=DEVICE)), TypeError, "int32 or int64"),
    (_valid(q=torch.ones(2, 4, 16, dtype=torch.float16, device=DEVICE)), TypeError, "dtype"),
    (_valid(q=torch.ones(2, 4, 16, dtype=torch.float64, device=DEVICE),
            k_cache=torch.ones(2, 2, 5, 16, dtype=torch.float64, device=DEVICE),
            v_cache=torch.ones(2, 2, 5, 16, dtype=torch.float64, device=DEVICE)), TypeError, "dtype"),
    (_valid(v_cache=torch.ones(2, 2, 5, 16, device="meta")), ValueError, "one device"),
    (_valid(q=torch.ones(2, 4, 16, device=DEVICE, requires_grad=True)), ValueError, "inference only"),
    (_valid(seq_lens=[1, 5]), TypeError, "torch.Tensor"),
    (_valid(sm_scale="0.5"), TypeError, "sm_scale"),
    (_valid(sm_scale=float("inf")), ValueError, "sm_scale"),
])
def test_decode_attention_rejects_bad_inputs(inputs, error, match):
    with pytest.raises(error, match=match):
        decode_attention(**inputs)


def test_decode_attention_flops_and_bytes():
    batch, heads, kv_heads, kv_len, head_dim = 3, 8, 2, 100, 64
    q = torch.empty(batch, heads, head_dim)
    valid_cache = torch.empty(batch, kv_heads, kv_len, head_dim)
    scores = torch.empty(batch, heads, kv_len)
    # q.k per score and p.v per score, each a multiply-add over head_dim.
    assert decode_attention_flops(batch, heads, kv_len, head_dim) == 2 * 2 * scores.numel() * head_dim
    assert decode_attention_bytes(batch, heads, kv_heads, kv_len, head_dim, element_size=2) == \
        (2 * valid_cache.numel() + 2 * q.numel()) * 2
