"""Per-target config pruning: every entry point keeps a config that fits each supported GPU, and refuses clearly
when none fits. (Spills and the real shared memory are pinned by `wattbench selfcheck compile`, test_compile_check.)"""

from __future__ import annotations

import importlib

import pytest
import torch
import triton

from wattbench.selfcheck.compilation import TARGETS
from wattbench.kernels import targets
from wattbench.kernels.attention import HEAD_DIMS

# The modules, not the entry points of the same names that wattbench.kernels exports.
attention, decode_attention, matmul, matmul_int8 = (importlib.import_module(f"wattbench.kernels.{name}")
                                                     for name in ("attention", "decode_attention", "matmul",
                                                                  "matmul_int8"))

SUPPORTED = {arch: (t.capability, t.shared_limit) for arch, t in TARGETS.items()}
# An RTX 30xx or A10 is sm_86 with the L4's 99 KB per block: the smallest limit of the sm_80 family.
SUPPORTED["sm_86"] = ((8, 6), 101_376)


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("kind", ["fwd", "dkdv", "dq"])
@pytest.mark.parametrize("operands", [(torch.bfloat16, "tf32"), (torch.float32, "tf32"), (torch.float32, "ieee")],
                         ids=["16-bit", "fp32 tf32", "fp32 ieee"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_every_attention_pass_keeps_a_tile_that_fits(arch, kind, operands, head_dim):
    capability, shared = SUPPORTED[arch]
    dtype, precision = operands
    element = torch.empty((), dtype=dtype).element_size()
    rows = attention._tile_rows(kind, dtype, precision, head_dim, capability)
    needs = [attention._shared_memory(kind, o, s, head_dim, element, precision, st, capability) for o, s, w, st in rows]
    assert min(needs) <= shared, f"{kind} {dtype} {precision} D{head_dim}: smallest tile needs {min(needs)} B"


def test_wide_attention_tiles_are_tried_only_where_they_do_not_spill():
    """16-bit D=128, 128 owned rows on 8 warps: the forward pass on sm_80 and Hopper (it spills on sm_89),
    dq on Hopper only (it spills with mma.sync); never for dk/dv, which spills everywhere."""
    def tried(kind, capability, tile):
        return tile in attention._tile_rows(kind, torch.bfloat16, "tf32", 128, capability)

    fwd = [tried("fwd", cap, (128, 128, 8, 2)) for cap in ((8, 0), (8, 6), (8, 9), (9, 0))]
    assert fwd == [True, False, False, True]
    assert [tried("dq", cap, (128, 64, 8, 2)) for cap in ((8, 0), (8, 9), (9, 0))] == [False, False, True]
    assert not any(tried("dkdv", (9, 0), (128, streamed, 8, 2)) for streamed in (32, 64, 128))
    assert tried("fwd", (8, 9), (64, 128, 8, 2))  # 128-wide key blocks on 8 warps everywhere


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("dtype, precision", [(torch.bfloat16, "tf32"), (torch.float32, "tf32"),
                                              (torch.float32, "ieee")])
@pytest.mark.parametrize("rows", [1, 4096])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_every_gemm_keeps_a_tile_that_fits(described_gpu, arch, dtype, precision, rows, activation):
    capability, shared = SUPPORTED[arch]
    described_gpu(capability, shared)
    a = torch.empty(1, dtype=dtype, device="meta")
    for kernel, b in ((matmul._matmul_kernel, a), (matmul_int8._matmul_int8w_kernel, torch.empty(1, dtype=torch.int8))):
        args = {"a_ptr": a, "b_ptr": b, "q_ptr": b, "PRECISION": precision, "M": rows, "ACTIVATION": activation}
        kept = kernel.early_config_prune(_all_configs(kernel), {}, **args)
        listed = matmul.tile_configs(matmul.dot_rows(dtype, precision, *_row_lists(kernel)))
        assert kept and all(config in listed for config in kept), kernel


def test_decode_tiles_for_decode_sized_m_only(described_gpu):
    described_gpu((9, 0), 232_448)
    a = torch.empty(1, dtype=torch.bfloat16, device="meta")
    configs = _all_configs(matmul._matmul_kernel)
    for rows, decode_tiles in ((16, True), (64, True), (65, False)):
        kept = matmul._matmul_kernel.early_config_prune(configs, {}, a_ptr=a, b_ptr=a, PRECISION="tf32", M=rows)
        assert any(c.kwargs["BLOCK_M"] == 16 for c in kept) == decode_tiles


def test_an_erf_epilogue_gets_tiles_with_room_for_it(described_gpu):
    """gelu's erf spills the 128-accumulators-per-thread tiles (128x256 on 8 warps, 128x128 on 4)."""
    described_gpu((9, 0), 232_448)
    a = torch.empty(1, dtype=torch.bfloat16, device="meta")
    configs = _all_configs(matmul._matmul_kernel)
    plain = matmul._matmul_kernel.early_config_prune(configs, {}, a_ptr=a, b_ptr=a, PRECISION="tf32", M=4096,
                                                     ACTIVATION="relu")
    gelu = matmul._matmul_kernel.early_config_prune(configs, {}, a_ptr=a, b_ptr=a, PRECISION="tf32", M=4096,
                                                    ACTIVATION="gelu")
    assert set(gelu) < set(plain)
    assert all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 32 * c.num_warps for c in gelu)


def _all_configs(kernel):
    """The kernel's tiles as the compiled (not interpreted) autotuner lists them."""
    return list(dict.fromkeys(c for rows in _row_lists(kernel) for c in matmul.tile_configs(rows)))


def _row_lists(kernel):
    if kernel is matmul._matmul_kernel:
        return matmul.GEMM_16BIT, matmul.GEMM_TF32, matmul.GEMM_FP32
    return matmul_int8.DECODE_TENSOR_CORES, matmul_int8.DECODE_TENSOR_CORES, matmul_int8.DECODE_FP32


def test_fp32_gemm_tiles_are_the_fp32_lists_not_the_16_bit_ones(described_gpu):
    """fp32 with TF32 off runs FMA loops: the 16-bit tiles spill there and need twice their shared memory."""
    described_gpu((8, 9), 101_376)
    a = torch.empty(1, dtype=torch.float32, device="meta")
    prune = matmul._matmul_kernel.early_config_prune
    kept = prune(_all_configs(matmul._matmul_kernel), {}, a_ptr=a, b_ptr=a, PRECISION="ieee", M=4096)
    assert kept and all(c in matmul.tile_configs(matmul.GEMM_FP32) for c in kept)
    big_16bit = matmul.tile_configs([(128, 256, 64, 3, 8)])[0]
    assert big_16bit not in prune(_all_configs(matmul._matmul_kernel), {}, a_ptr=a, b_ptr=a, PRECISION="tf32",
                                  M=4096)


def test_shared_memory_depends_on_the_target():
    """Hopper keeps num_stages buffers, Ampere and Ada one fewer (bf16 128x256x64, 3 stages: 96 KB vs 144 KB)."""
    stage = (128 * 64 + 64 * 256) * 2
    assert targets.pipeline_buffers((8, 0), 3) * stage == 98_304
    assert targets.pipeline_buffers((9, 0), 3) * stage == 147_456


def test_a_gpu_without_room_for_any_config_is_refused_clearly(described_gpu):
    described_gpu((8, 6), 16_384)
    a = torch.empty(1, dtype=torch.float32, device="meta")
    with pytest.raises(targets.UnsupportedDevice, match=r"matmul: none of its 10 configs .* 16,384 B .* 8\.6"):
        matmul._matmul_kernel.early_config_prune(_all_configs(matmul._matmul_kernel), {}, a_ptr=a, b_ptr=a,
                                                 PRECISION="tf32", M=1)


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("dtype, precision", [(torch.bfloat16, "tf32"), (torch.float32, "tf32"),
                                              (torch.float32, "ieee")])
@pytest.mark.parametrize("group", [16, 32])
def test_decode_keeps_a_tile_that_fits(described_gpu, arch, dtype, precision, group):
    capability, shared = SUPPORTED[arch]
    described_gpu(capability, shared)
    configs = decode_attention._configs(decode_attention._TENSOR_CORE_TILES + decode_attention._FMA_TILES)
    kept = decode_attention._decode_split_kernel.early_config_prune(
        configs, {}, Q=torch.empty(1, dtype=dtype, device="meta"), HEAD_DIM=128, BLOCK_G=group,
        DOT_PRECISION=precision)
    assert kept
    if group >= 32:  # a wide group's score tile takes 8 warps and narrow key blocks
        assert all(c.num_warps == 8 and c.kwargs["BLOCK_N"] <= 64 for c in kept)


def test_row_kernels_drop_warps_that_would_spill():
    prune = targets.prune_row_configs(32)
    configs = [triton.Config({}, num_warps=w) for w in (4, 8, 16, 32)]
    assert [c.num_warps for c in prune(configs, {}, BLOCK_N=8192)] == [8, 16, 32]
    assert [c.num_warps for c in prune(configs, {}, BLOCK_N=1024)] == [4, 8, 16, 32]
    assert [c.num_warps for c in prune(configs, {}, BLOCK_N=65536)] == [32]  # the most warps when none is enough
