"""The model-level precision knob: the tiny transformer's linear layers swapped for fp8/int8w/int4w ones, their
byte counts, and the accuracy guard (top-1 agreement and KL divergence against the dense model)."""

import math

import pytest
import torch

from wattbench.device import detect
from wattbench.models.ops import TORCH, TRITON
from wattbench.models.quantized import agreement, int4_group_size, model_accuracy, model_weight_bytes, swap_linears
from wattbench.models.transformer import LINEARS, MODEL_CONFIGS, Transformer
from wattbench.workloads import case_by_id

TINY = MODEL_CONFIGS["tiny"]
CPU = torch.device("cpu")


def tiny(dtype=torch.float32):
    return Transformer(TINY, dtype, CPU, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("precision, dtype, bound", [
    ("int8w-fp32", torch.float32, 0.02), ("int4w-fp32", torch.float32, 0.2), ("fp8", torch.bfloat16, 0.08)])
def test_the_swap_replaces_every_linear_and_stays_close(precision, dtype, bound):
    dense, swapped = tiny(dtype), tiny(dtype)
    tokens = torch.randint(0, TINY.vocab, (2, 8), generator=torch.Generator().manual_seed(1))
    path = swap_linears(swapped, precision)
    left_dense = {(i, n) for i, block in enumerate(swapped.blocks) for n in LINEARS if hasattr(block, n)}
    if precision.startswith("int4w"):  # w_down's K = 176: no group size divides it, so it stays dense
        assert left_dense == {(0, "w_down"), (1, "w_down")} and "dense: w_down (K=176)" in path
    else:
        assert not left_dense and len(swapped.swapped) == TINY.layers * len(LINEARS)
    with torch.no_grad():
        expected, actual = dense(tokens, TORCH).float(), swapped(tokens, TORCH).float()
    error = ((actual - expected).norm() / expected.norm()).item()
    assert 0 < error < bound


def test_triton_and_torch_paths_of_a_swapped_model_agree():
    model = tiny(torch.bfloat16)
    swap_linears(model, "fp8")
    tokens = torch.randint(0, TINY.vocab, (1, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch_out, triton_out = model(tokens, TORCH).float(), model(tokens, TRITON).float()
    # Every op differs (Triton's norms and attention too) in bf16, and a bf16 difference that moves an activation
    # across an e4m3 rounding boundary moves it by a whole e4m3 step (1/16 relative): 2.3% measured here.
    assert ((triton_out - torch_out).norm() / torch_out.norm()).item() < 5e-2


def test_agreement_on_known_logits():
    same = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    assert agreement(same, same) == {"top1_agreement": 1.0, "kl_divergence": 0.0}
    flipped = torch.tensor([[0.0, 2.0, 0.0], [0.0, 3.0, 0.0]])  # the first position's top token changes
    figures = agreement(same, flipped)
    p = torch.tensor([2.0, 0.0, 0.0]).softmax(0)
    q = torch.tensor([0.0, 2.0, 0.0]).softmax(0)
    assert figures["top1_agreement"] == 0.5
    assert math.isclose(figures["kl_divergence"], (p * (p / q).log()).sum().item() / 2, rel_tol=1e-6)


def test_model_accuracy_of_the_tiny_model_is_inside_the_budget():
    figures, path = model_accuracy(TINY, "int4w-fp32", CPU)
    assert figures["top1_agreement"] >= 0.9 and 0 < figures["kl_divergence"] < 0.1
    assert path.startswith("torch._weight_int4pack_mm")


def test_int4_group_sizes_per_layer():
    assert [int4_group_size(K) for K in (4096, 64, 96, 176)] == [128, 64, 32, None]


def test_weight_bytes_per_precision_by_hand():
    """tiny: 2 blocks of (K, N) = (64,64) (64,32) (64,32) (64,64) (64,176) (64,176) (176,64); 33,088 other parameters."""
    linear = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 176 * 3)
    scales = 2 * 4 * (64 + 32 + 32 + 64 + 176 + 176 + 64)  # an fp32 scale per output column
    others = 512 * 64 + 2 * 2 * 64 + 64
    assert model_weight_bytes(TINY, "fp32") == (linear + others) * 4
    assert model_weight_bytes(TINY, "fp8") == linear + scales + others * 2  # bf16 tensors around e4m3 GEMMs
    assert model_weight_bytes(TINY, "int8w-fp32") == linear + scales + others * 4
    int4_layers = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 176 * 2)  # all but w_down
    # half a byte per weight; a bf16 scale and zero per group (64 rows: one group of 64) and column
    int4 = int4_layers // 2 + 2 * 4 * (64 + 32 + 32 + 64 + 176 + 176) + 2 * 176 * 64 * 4
    assert model_weight_bytes(TINY, "int4w-fp32") == int4 + others * 4
    prefill = case_by_id("llm.prefill-torch-fp8-tiny-B1-P32").accounting()["bytes"]
    kv = 2 * TINY.layers * 1 * TINY.kv_dim * 32 * 2  # the bf16 cache of fp8's model
    assert prefill == model_weight_bytes(TINY, "fp8") + kv


@pytest.mark.parametrize("case_id", ["llm.prefill-torch-fp8-tiny-B1-P32", "llm.decode-torch-int4w-fp32-tiny-B1-P32-T4"])
def test_quantised_model_cases_carry_the_guard(case_id):
    step = case_by_id(case_id).build(detect("cpu"), 0)
    fields = step.guard(step())
    assert fields["within_budget"] is True and set(fields) >= {"top1_agreement", "kl_divergence", "reference_path"}


def test_the_cpu_runs_quantised_models_at_one_batch_size():
    from wattbench.workloads import cases

    ids = {c.id for c in cases("quick", detect("cpu")) if c.workload.name in ("llm.prefill", "llm.decode")}
    assert {i for i in ids if "-fp8-" in i} == {"llm.prefill-torch-fp8-tiny-B1-P32", "llm.prefill-triton-fp8-tiny-B1-P32",
                                                "llm.decode-torch-fp8-tiny-B1-P32-T4",
                                                "llm.decode-triton-fp8-tiny-B1-P32-T4"}
    assert "llm.decode-torch-int8w-fp32-tiny-B16-P32-T4" in ids
