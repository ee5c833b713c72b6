"""Fused attention against SDPA in float64: outputs and the gradients of q, k and v."""

from __future__ import annotations

import importlib

import pytest
import torch

from kernel_checks import DEVICE, assert_rel_close, float64_leaf, generator_for, randn, skip_if_bf16_dot_interpreted
from wattbench.kernels.attention import attention, attention_bytes, attention_flops, attention_reference

# The module itself (the package exports a function of the same name).
attention_module = importlib.import_module("wattbench.kernels.attention")

B, H = 2, 2


def _inputs(shape_q, shape_kv, dtype, strided: bool, generator):
    """q, k, v leaves; `strided` gives the (B, S, H, D) layout seen as (B, H, S, D), and a v with a gap in D."""
    if not strided:
        return [randn(*shape, dtype=dtype, generator=generator).requires_grad_()
                for shape in (shape_q, shape_kv, shape_kv)]
    b, h, s_q, d = shape_q
    s_k = shape_kv[2]
    q = randn(b, s_q, h, d, dtype=dtype, generator=generator).transpose(1, 2)
    k = randn(b, s_k, h, d, dtype=dtype, generator=generator).transpose(1, 2)
    v = randn(b, h, s_k, 2 * d, dtype=dtype, generator=generator)[..., ::2]
    for t in (q, k, v):
        t.requires_grad_()
    return q, k, v


@pytest.mark.parametrize("dtype, causal, s_q, s_k, head_dim, sm_scale, strided", [
    (torch.float32, False, 17, 17, 16, None, False),
    (torch.float32, True, 70, 70, 32, 0.3, True),
    (torch.float16, True, 17, 70, 16, None, False),   # fewer queries than keys: causal mask aligned top-left
    (torch.float16, False, 70, 17, 64, None, True),
    (torch.float16, True, 1, 17, 32, None, False),    # a single query
    (torch.float32, False, 17, 17, 128, None, False),  # the largest head dim
    (torch.bfloat16, True, 70, 70, 32, None, True),
])
def test_attention_matches_sdpa_with_gradients(dtype, causal, s_q, s_k, head_dim, sm_scale, strided):
    skip_if_bf16_dot_interpreted(dtype)
    gen = generator_for(f"attention-{dtype}-{causal}-{s_q}-{s_k}-{head_dim}-{strided}")
    q, k, v = _inputs((B, H, s_q, head_dim), (B, H, s_k, head_dim), dtype, strided, gen)
    grad_out = randn(B, s_q, H, head_dim, dtype=dtype, generator=gen).transpose(1, 2)

    out = attention(q, k, v, causal=causal, sm_scale=sm_scale)
    out.backward(grad_out)

    q64, k64, v64 = (float64_leaf(t) for t in (q, k, v))
    expected = attention_reference(q64, k64, v64, causal=causal, sm_scale=sm_scale)
    expected.backward(grad_out.to(torch.float64))
    assert_rel_close(out, expected, dtype, "output")
    for name, actual, leaf in (("dq", q.grad, q64), ("dk", k.grad, k64), ("dv", v.grad, v64)):
        assert_rel_close(actual, leaf.grad, dtype, name)


def test_attention_computes_only_the_gradients_asked_for():
    gen = generator_for("attention-partial-grad")
    q = randn(1, 1, 17, 16, generator=gen).requires_grad_()
    k, v = randn(1, 1, 17, 16, generator=gen), randn(1, 1, 17, 16, generator=gen)
    attention(q, k, v, causal=True).sum().backward()
    q64 = float64_leaf(q)
    attention_reference(q64, k.double(), v.double(), causal=True).sum().backward()
    assert_rel_close(q.grad, q64.grad, torch.float32, "dq")
    assert k.grad is None and v.grad is None


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if a kernel would be launched: bad input must be rejected first."""
    def launched(*args, **kwargs):
        pytest.fail("attention launched a kernel on invalid input")
    monkeypatch.setattr(attention_module, "_forward", launched)


def _qkv(shape=(1, 2, 5, 16), dtype=torch.float32):
    return [torch.ones(shape, dtype=dtype, device=DEVICE) for _ in range(3)]


@pytest.mark.usefixtures("no_launch")
@pytest.mark.parametrize("make_inputs, error, match", [
    (lambda: _qkv((1, 2, 5, 48)), ValueError, "head dim"),
    (lambda: _qkv((2, 5, 16)), ValueError, "4-D"),
    (lambda: _qkv((1, 2, 0, 16)), ValueError, "empty"),
    (lambda: (*_qkv()[:2], torch.ones(1, 2, 6, 16, device=DEVICE)), ValueError, "expected q"),
    (lambda: (_qkv()[0], *_qkv((1, 3, 5, 16))[1:]), ValueError, "expected q"),
    (lambda: (_qkv()[0], *_qkv((1, 2, 5, 32))[1:]), ValueError, "expected q"),
    (lambda: _qkv(dtype=torch.float64), TypeError, "dtype"),
    (lambda: (*_qkv()[:2], torch.ones(1, 2, 5, 16, dtype=torch.float16, device=DEVICE)), TypeError, "dtype"),
    (lambda: (*_qkv()[:2], torch.ones(1, 2, 5, 16, device="meta")), ValueError, "one device"),
    (lambda: (*_qkv()[:2], [[1.0]]), TypeError, "torch.Tensor"),
])
def test_attention_rejects_bad_inputs(make_inputs, error, match):
    with pytest.raises(error, match=match):
        attention(*make_inputs())


@pytest.mark.usefixtures("no_launch")
@pytest.mark.parametrize("kwargs, error, match", [
    ({"causal": 1}, TypeError, "causal"),
    ({"sm_scale": "0.5"}, TypeError, "sm_scale"),
    ({"sm_scale": float("nan")}, ValueError, "sm_scale"),
])
def test_attention_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        attention(*_qkv(), **kwargs)


@pytest.mark.parametrize("s_q, s_k", [(1, 1), (17, 17), (17, 70), (70, 17)])
def test_attention_flops_count_the_visible_pairs(s_q, s_k):
    batch, heads, head_dim = 2, 3, 32
    for causal in (False, True):
        mask = torch.ones(s_q, s_k).tril() if causal else torch.ones(s_q, s_k)
        forward = 4 * batch * heads * head_dim * int(mask.sum().item())
        assert attention_flops(batch, heads, s_q, s_k, head_dim, causal) == forward
        assert attention_flops(batch, heads, s_q, s_k, head_dim, causal, mode="bwd") == forward * 5 // 2
        assert attention_flops(batch, heads, s_q, s_k, head_dim, causal, mode="fwd_bwd") == forward * 7 // 2


def test_attention_bytes_move_each_tensor_once():
    q, k, v = torch.empty(2, 3, 17, 32), torch.empty(2, 3, 70, 32), torch.empty(2, 3, 70, 32)
    one_q, one_kv = q.numel() * 2, k.numel() * 2
    assert attention_bytes(2, 3, 17, 70, 32, element_size=2) == 2 * one_q + v.numel() * 2 + one_kv
    assert attention_bytes(2, 3, 17, 70, 32, element_size=2, mode="bwd") == 4 * one_q + 4 * one_kv
    with pytest.raises(ValueError, match="mode"):
        attention_bytes(2, 3, 17, 70, 32, element_size=2, mode="train")
    with pytest.raises(ValueError, match="mode"):
        attention_flops(2, 3, 17, 70, 32, mode="backward")
