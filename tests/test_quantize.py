"""The FP8 and INT4 quantisers: round-trip error bounds, group edges, zero and extreme values, refusals."""

from __future__ import annotations

import pytest
import torch

from kernel_checks import DEVICE, generator_for, randn
from wattbench.kernels.quantize import (FP8_MAX, INT4_SYMMETRIC_MAX, dequantize_fp8, dequantize_int4,
                                        fp8_scale_bytes, int4_weight_bytes, pack_int4, quantize_fp8_activations,
                                        quantize_fp8_weight, quantize_int4, unpack_int4)

K, N = 256, 24


def _fp8_bound(w64: torch.Tensor, scale64: torch.Tensor) -> torch.Tensor:
    """Half an e4m3 step: 2^-4 of the magnitude in e4m3's normal range, scale * 2^-10 below it (subnormals)."""
    return torch.maximum(w64.abs() * 2.0 ** -4, scale64 * 2.0 ** -10) * (1 + 1e-6)


@pytest.mark.parametrize("scaling", ["row", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_fp8_weight_round_trip_is_within_half_a_step(scaling, dtype):
    w = randn(K, N, dtype=dtype, generator=generator_for(f"fp8-weight-{scaling}-{dtype}"))
    weight = quantize_fp8_weight(w, scaling)
    assert weight.q.dtype == torch.float8_e4m3fn and weight.shape == (K, N)
    assert weight.q.stride() == (1, K), "K-contiguous, as torch._scaled_mm and FP8 wgmma take the weight"
    w64 = w.to(torch.float64)
    absmax = w64.abs().amax(dim=0) if scaling == "row" else w64.abs().amax().reshape(1)
    assert weight.scale.shape == absmax.shape and weight.scale.dtype == torch.float32
    assert torch.allclose(weight.scale.to(torch.float64), absmax / FP8_MAX, rtol=1e-6, atol=0)
    scale64 = weight.scale.to(torch.float64).expand(N)
    error = (dequantize_fp8(weight.q, weight.scale, 1) - w64).abs()
    assert (error <= _fp8_bound(w64, scale64)).all(), f"worst {(error / _fp8_bound(w64, scale64)).max():.3f} bounds"
    largest = weight.q.to(torch.float32).abs().amax(dim=0)
    assert (largest == FP8_MAX).all() if scaling == "row" else largest.max() == FP8_MAX


def test_fp8_zero_columns_and_zero_tensors_get_scale_one():
    w = randn(K, N, generator=generator_for("fp8-zero"))
    w[:, 5] = 0
    weight = quantize_fp8_weight(w, "row")
    assert weight.scale[5] == 1 and (weight.q[:, 5].to(torch.float32) == 0).all()
    assert (weight.scale[torch.arange(N) != 5] < 1).all()
    zeros = quantize_fp8_weight(torch.zeros(K, N, device=DEVICE), "tensor")
    assert zeros.scale.tolist() == [1.0] and (zeros.q.to(torch.float32) == 0).all()


@pytest.mark.parametrize("magnitude", [3e38, 1e-30], ids=["near_fp32_max", "tiny"])
def test_fp8_extreme_magnitudes_keep_the_bound(magnitude):
    w = randn(K, N, generator=generator_for(f"fp8-extreme-{magnitude}")).clamp(-1, 1) * magnitude
    weight = quantize_fp8_weight(w, "row")
    assert torch.isfinite(weight.scale).all() and (weight.scale > 0).all()
    w64 = w.to(torch.float64)
    error = (dequantize_fp8(weight.q, weight.scale, 1) - w64).abs()
    assert (error <= _fp8_bound(w64, weight.scale.to(torch.float64))).all()


def test_fp8_activation_rows_scale_independently_and_keep_non_finite_rows_non_finite():
    x = randn(6, K, dtype=torch.bfloat16, generator=generator_for("fp8-activations"))
    x[1] *= 1000
    x[2] = 0
    x[4, 7] = float("nan")
    x[5, 9] = float("inf")
    q, scale = quantize_fp8_activations(x, "row")
    expected = x.to(torch.float32).abs().amax(dim=1) / FP8_MAX
    finite = [0, 1, 3]
    assert torch.equal(scale[finite], expected[finite]) and scale[2] == 1
    assert not torch.isfinite(scale[4:]).any(), "a NaN or inf row must not get a finite scale"
    assert torch.isfinite(q[:4].to(torch.float32)).all()
    _, tensor_scale = quantize_fp8_activations(x, "tensor")
    assert not torch.isfinite(tensor_scale).any()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("quantize", [lambda w: quantize_fp8_weight(w, "row"), lambda w: quantize_int4(w, 32)],
                         ids=["fp8", "int4"])
def test_non_finite_weights_are_refused_naming_the_place(quantize, value):
    w = torch.ones(64, 4, device=DEVICE)
    w[33, 2] = value
    with pytest.raises(ValueError, match=r"w must be finite, got (nan|inf|-inf) at \(33, 2\)"):
        quantize(w)


@pytest.mark.parametrize("call, error, match", [
    (lambda: quantize_fp8_weight(torch.ones(4)), ValueError, "w must be 2-D"),
    (lambda: quantize_fp8_weight(torch.ones(4, 4, dtype=torch.int32)), TypeError, "w must be one of"),
    (lambda: quantize_fp8_weight(torch.ones(4, 4), "channel"), ValueError, "scaling must be one of"),
    (lambda: quantize_int4([[1.0]]), TypeError, "w must be a torch.Tensor"),
    (lambda: quantize_int4(torch.ones(200, 4)), ValueError, "K=200 is not a multiple of group_size=128"),
    (lambda: quantize_int4(torch.ones(128, 4), group_size=48), ValueError, "group_size must be one of"),
    (lambda: quantize_int4(torch.ones(128, 5)), ValueError, "N=5 must be even"),
], ids=["fp8_rank", "fp8_dtype", "fp8_scaling", "int4_list", "int4_partial_group", "int4_group_size", "int4_odd_n"])
def test_bad_weights_are_refused_in_one_line(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _int4_bound(weight) -> torch.Tensor:
    """Per element: half a step, plus the bf16 rounding of the scale and zero (2^-9 of |zero| + 8 scale, doubled)."""
    G = weight.group_size
    scale = weight.scales.to(torch.float64).repeat_interleave(G, dim=0)
    zero = weight.zeros.to(torch.float64).repeat_interleave(G, dim=0)
    return 0.5 * scale + 2.0 ** -8 * (zero.abs() + 8 * scale)


@pytest.mark.parametrize("symmetric", [False, True], ids=["asymmetric", "symmetric"])
@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
def test_int4_round_trip_is_within_half_a_step_per_group(group_size, symmetric):
    w = randn(K, N, generator=generator_for(f"int4-{group_size}-{symmetric}")) + 0.3  # off-centre: zeros matter
    weight = quantize_int4(w, group_size, symmetric)
    assert weight.packed.dtype == torch.uint8 and weight.packed.shape == (K, N // 2) and weight.shape == (K, N)
    assert weight.scales.shape == weight.zeros.shape == (K // group_size, N)
    error = (dequantize_int4(weight) - w.to(torch.float64)).abs()
    assert (error <= _int4_bound(weight)).all(), f"worst {(error / _int4_bound(weight)).max():.3f} bounds"
    q = unpack_int4(weight.packed).to(torch.int64).reshape(K // group_size, group_size, N)
    if symmetric:
        assert (weight.zeros == 0).all() and q.min() >= 8 - INT4_SYMMETRIC_MAX and q.max() <= 8 + INT4_SYMMETRIC_MAX
        assert ((q - 8).abs().amax(dim=1) == INT4_SYMMETRIC_MAX).all(), "each group's largest magnitude is +-7"
    else:
        assert (q.amin(dim=1) == 0).all() and (q.amax(dim=1) == 15).all(), "each group spans 0..15"


def test_int4_groups_end_at_their_edges():
    """An outlier in one group's last row changes that group's scale only, not the next group's."""
    G = 64
    w = randn(K, N, generator=generator_for("int4-edges"))
    base = quantize_int4(w, G)
    w[G - 1, 3] = 100.0
    spiked = quantize_int4(w, G)
    changed = (spiked.scales != base.scales).nonzero().tolist()
    assert changed == [[0, 3]]
    assert torch.equal(spiked.packed[G:], base.packed[G:])


def test_int4_zero_and_constant_groups():
    w = randn(K, N, generator=generator_for("int4-constant"))
    w[:128, 0] = 0
    w[:128, 1] = 0.37
    w[128:, 2] = -2.5e-3
    for symmetric in (False, True):
        weight = quantize_int4(w, 128, symmetric)
        w_hat = dequantize_int4(weight)
        # A zero group: scale 1, zero min + 8 * scale (8; 0 when symmetric), every weight back to exactly 0.
        assert weight.scales[0, 0] == 1 and weight.zeros[0, 0] == (0 if symmetric else 8)
        assert (w_hat[:128, 0] == 0).all()
        for rows, column, value in ((slice(None, 128), 1, 0.37), (slice(128, None), 2, -2.5e-3)):
            assert torch.allclose(w_hat[rows, column], torch.full_like(w_hat[rows, column], value), rtol=2 ** -8,
                                  atol=0), "a constant group is recovered to bf16 precision"


@pytest.mark.parametrize("magnitude", [1e38, 1e-30], ids=["near_fp32_max", "tiny"])
def test_int4_extreme_magnitudes_keep_the_bound(magnitude):
    """max - min of values near fp32's limit overflows fp32: the quantiser works in float64."""
    w = randn(K, N, generator=generator_for(f"int4-extreme-{magnitude}")).clamp(-1.5, 1.5) * magnitude
    weight = quantize_int4(w)
    assert torch.isfinite(weight.scales.float()).all() and torch.isfinite(weight.zeros.float()).all()
    assert (weight.scales > 0).all()
    error = (dequantize_int4(weight) - w.to(torch.float64)).abs()
    assert (error <= _int4_bound(weight)).all()


def test_int4_packing_puts_the_even_column_in_the_low_nibble():
    q = torch.tensor([[1, 2, 15, 0], [7, 8, 3, 12]], dtype=torch.uint8)
    packed = pack_int4(q)
    assert packed.tolist() == [[0x21, 0x0F], [0x87, 0xC3]]
    assert torch.equal(unpack_int4(packed), q)


def test_int4_bytes_are_half_a_byte_per_weight_plus_a_scale_and_zero_per_group():
    # 4096 x 4096 / 2 = 8,388,608 B of pairs; 32 groups x 4096 columns x (2 + 2) B = 524,288 B.
    assert int4_weight_bytes(4096, 4096, 128) == 8_912_896
    assert int4_weight_bytes(4096, 4096, 32) == 8_388_608 + 128 * 4096 * 4
    weight = quantize_int4(randn(K, N, generator=generator_for("int4-bytes")), 64)
    stored = sum(t.numel() * t.element_size() for t in (weight.packed, weight.scales, weight.zeros))
    assert int4_weight_bytes(K, N, 64) == stored


def test_fp8_scale_bytes():
    assert fp8_scale_bytes(4096, "row") == 16_384 and fp8_scale_bytes(4096, "tensor") == 4
