"""Fused (flash-style) attention with an online softmax, differentiable through Triton kernels.

The forward pass never materialises the S_q x S_k score matrix: each program streams key
blocks past one block of queries, rescaling its running sum as the row maximum grows. It
keeps the per-row log-sum-exp so the backward pass can rebuild the probabilities block by
block instead of storing them. The backward pass runs three kernels: delta = rowsum(o * do),
then dk/dv (one program per key block, looping over queries) and dq (one program per query
block, looping over keys), so no program needs atomics.

Causal masking is aligned top-left, as in `torch.nn.functional.scaled_dot_product_attention`:
query i sees keys 0..i, whatever S_q and S_k are.
"""

from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED, targets
from wattbench.kernels.matmul import check_devices, dot_precision, interpreter_upcast

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HEAD_DIMS = (16, 32, 64, 128)
_LOG2_E = 1.4426950408889634
_MODES = ("fwd", "bwd", "fwd_bwd")


#: Tiles as (owned block, streamed block, num_warps, num_stages): each program keeps one owned block
#: (queries in the forward pass and for dq, keys for dk and dv) and loops over streamed blocks. One
#: list per pass, per what its dots run on (16-bit and fp32-with-TF32 operands on tensor cores, fp32
#: with TF32 off on FMA loops, whose operands all sit in registers) and per head dim (64 and less, or
#: 128). None of them spills registers on sm_80, sm_89 or sm_90 (`wattbench selfcheck compile`); each
#: target tries those that fit its shared memory.
_TILES = {
    "fwd": {"16bit": {64: [(64, 64, 4, 3), (64, 128, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3)],
                      128: [(64, 64, 4, 3), (64, 128, 4, 3), (64, 128, 8, 2), (64, 128, 8, 3), (128, 64, 8, 2),
                            (128, 64, 8, 3)]},
            "tf32": {128: [(64, 32, 4, 2), (32, 64, 4, 2), (64, 64, 4, 2), (64, 64, 8, 3), (128, 64, 8, 2)]},
            "ieee": {64: [(16, 32, 4, 2), (16, 64, 8, 2), (64, 32, 8, 2)],
                     128: [(16, 16, 4, 2), (16, 64, 8, 2), (32, 64, 8, 2)]}},
    "dkdv": {"16bit": {64: [(64, 32, 4, 3), (64, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 3)],
                       128: [(32, 64, 4, 2), (64, 32, 4, 2), (64, 64, 8, 2), (64, 64, 8, 3)]},
             "tf32": {128: [(32, 32, 4, 2)]},
             "ieee": {64: [(16, 32, 4, 2), (32, 16, 4, 2), (32, 32, 8, 2)], 128: [(16, 16, 4, 2), (32, 16, 4, 2)]}},
    "dq": {"16bit": {64: [(64, 64, 4, 3), (64, 64, 8, 3), (128, 32, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3)],
                     128: [(64, 32, 4, 3), (64, 64, 8, 2), (64, 64, 8, 3), (64, 128, 8, 2), (64, 128, 8, 3)]},
           "tf32": {128: [(32, 32, 4, 2), (32, 64, 4, 2), (64, 32, 4, 2), (64, 64, 8, 3)]},
           "ieee": {64: [(32, 32, 8, 2), (32, 64, 8, 2), (64, 16, 4, 2)],
                    128: [(16, 64, 4, 2), (32, 32, 8, 2), (64, 16, 4, 2)]}},
}
#: 16-bit D=128 tiles with 128 owned rows, tried only on the targets where they compile without
#: spilling: the forward pass's 128x128 on 8 warps spills on sm_89 (16 B per thread) but not on sm_80
#: or with Hopper's wgmma; dq's 128x64 spills on sm_80 (8 B) but not with wgmma. (dk/dv with 128 owned
#: keys spills everywhere, 48 B to 0.9 KB: its two 128xD accumulators fill the registers.)
_WIDE_TILES = {"fwd": [(128, 128, 8, 2), (128, 128, 8, 3)], "dq": [(128, 64, 8, 2), (128, 64, 8, 3)]}
_WIDE_TILE_TARGETS = {"fwd": lambda capability: capability == (8, 0) or capability >= (9, 0),
                      "dq": lambda capability: capability >= (9, 0)}
_BLOCK_NAMES = {"fwd": ("BLOCK_M", "BLOCK_N"), "dkdv": ("BLOCK_N", "BLOCK_M"), "dq": ("BLOCK_M", "BLOCK_N")}


def _tile_rows(kind: str, dtype: torch.dtype, precision: str, head_dim: int, capability: tuple[int, int]) -> list:
    """The tiles a call tries, before its target's shared-memory pruning."""
    operands = "16bit" if dtype != torch.float32 else precision
    by_head_dim = _TILES[kind][operands]
    rows = by_head_dim[64] if head_dim <= 64 and 64 in by_head_dim else by_head_dim[128]
    if operands == "16bit" and head_dim > 64 and kind in _WIDE_TILES and _WIDE_TILE_TARGETS[kind](capability):
        rows = rows + _WIDE_TILES[kind]
    return rows


def _configs(kind: str, rows) -> list[triton.Config]:
    owned, streamed = _BLOCK_NAMES[kind]
    return [triton.Config({owned: o, streamed: s}, num_warps=w, num_stages=st) for o, s, w, st in rows]


def _autotune_configs(kind: str) -> list[triton.Config]:
    """Every tile of the pass, once; one small tile under the interpreter, where autotuning would run them all."""
    if INTERPRETED:
        owned, streamed = _BLOCK_NAMES[kind]
        return [triton.Config({owned: 32, streamed: 16})]
    rows = [row for by_head_dim in _TILES[kind].values() for tiles in by_head_dim.values() for row in tiles]
    return list(dict.fromkeys(_configs(kind, rows + _WIDE_TILES.get(kind, []))))


def _shared_memory(kind: str, owned: int, streamed: int, head_dim: int, element: int, precision: str,
                   stages: int, capability: tuple[int, int]) -> int:
    """An upper estimate of a tile's shared memory, fitted to Triton 3.9's allocations on sm_80 to sm_90:
    the owned block's operands, a pipeline buffer of the streamed block's per stage, and, before
    Hopper, the probabilities' layout conversion for the second dot (none for 16-bit 128-row owned
    blocks); fp32 with TF32 adds a 16 KB scratch."""
    if kind == "fwd":  # q; k and v
        resident, stage = owned * head_dim * element, 2 * streamed * head_dim * element
    elif kind == "dkdv":  # k and v; q, do and their log-sum-exp and delta rows
        resident, stage = 2 * owned * head_dim * element, 2 * streamed * (head_dim * element + 4)
    else:  # q and do; k and v
        resident, stage = 2 * owned * head_dim * element, 2 * streamed * head_dim * element
    conversion = 0
    if capability < (9, 0) and not (element == 2 and owned >= 128):
        conversion = owned * streamed * element * 9 // 8 + (16384 if element == 4 and precision == "tf32" else 0)
    return resident + targets.pipeline_buffers(capability, stages) * stage + conversion + 1024


def _pruner(kind: str):
    owned_name, streamed_name = _BLOCK_NAMES[kind]

    def choose(args, capability):
        return _configs(kind, _tile_rows(kind, args["Q"].dtype, args["DOT_PRECISION"], args["HEAD_DIM"], capability))

    def needs(config, args, capability):
        return _shared_memory(kind, config.kwargs[owned_name], config.kwargs[streamed_name], args["HEAD_DIM"],
                              args["Q"].element_size(), args["DOT_PRECISION"], config.num_stages, capability)

    return targets.shared_memory_pruner(f"attention ({kind})", choose, needs)


def _autotune(kind: str):
    return triton.autotune(configs=_autotune_configs(kind), key=["S_q", "S_k", "HEAD_DIM", "CAUSAL", "DOT_PRECISION"],
                           prune_configs_by={"early_config_prune": _pruner(kind)})


@triton.jit
def program_batch_head(AXIS: tl.constexpr, H):
    """This program's flat (batch, head) index on grid axis AXIS, and its batch and head in int64,
    so that the offsets they scale do not wrap past 2**31 elements."""
    bh = tl.program_id(AXIS)
    return bh, (bh // H).to(tl.int64), (bh % H).to(tl.int64)


@triton.jit
def load_rows(base, offs, offs_d, row_ok, stride_s, stride_d, UPCAST: tl.constexpr):
    """The [rows, HEAD_DIM] tile of one head at rows `offs`, zero where `row_ok` is false (where it
    adds nothing to a dot); in fp32 when UPCAST (`interpreter_upcast`)."""
    tile = tl.load(base + offs[:, None] * stride_s + offs_d[None, :] * stride_d, mask=row_ok[:, None], other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def store_rows(base, tile, offs, offs_d, row_ok, stride_s, stride_d):
    """The fp32 tile into one head's rows `offs` where `row_ok`, in the output's dtype."""
    tl.store(base + offs[:, None] * stride_s + offs_d[None, :] * stride_d, tile.to(base.dtype.element_ty),
             mask=row_ok[:, None])


@_autotune("fwd")
@triton.jit
def _attention_fwd_kernel(Q, K, V, O, LSE, qk_scale, H, S_q, S_k,
                          stride_qb, stride_qh, stride_qs, stride_qd,
                          stride_kb, stride_kh, stride_ks, stride_kd,
                          stride_vb, stride_vh, stride_vs, stride_vd,
                          stride_ob, stride_oh, stride_os, stride_od,
                          CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                          DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh, b, h = program_batch_head(1, H)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S_q
    q = load_rows(Q + b * stride_qb + h * stride_qh, offs_m, offs_d, row_ok, stride_qs, stride_qd, UPCAST)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    # Scores live in the log2 domain (scaled by log2(e)) so the softmax can use exp2.
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    end_n = S_k
    if CAUSAL:
        end_n = tl.minimum(S_k, start_m + BLOCK_M)
    # Key 0 is visible to every row, so the first block gives each row a finite maximum.
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < S_k
        k = load_rows(k_base, offs_n, offs_d, col_ok, stride_ks, stride_kd, UPCAST)
        v = load_rows(v_base, offs_n, offs_d, col_ok, stride_vs, stride_vd, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        visible = col_ok[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new

    store_rows(O + b * stride_ob + h * stride_oh, acc / l_i[:, None], offs_m, offs_d, row_ok, stride_os, stride_od)
    tl.store(LSE + bh * S_q + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)


@triton.jit
def _attention_bwd_delta_kernel(O, DO, DELTA, H, S_q,
                                stride_ob, stride_oh, stride_os, stride_od,
                                stride_dob, stride_doh, stride_dos, stride_dod,
                                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d o_id * do_id: the softmax-Jacobian term every score gradient needs."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh, b, h = program_batch_head(1, H)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S_q
    o = load_rows(O + b * stride_ob + h * stride_oh, offs_m, offs_d, row_ok, stride_os, stride_od, False)
    do = load_rows(DO + b * stride_dob + h * stride_doh, offs_m, offs_d, row_ok, stride_dos, stride_dod, False)
    tl.store(DELTA + bh * S_q + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=row_ok)


@_autotune("dkdv")
@triton.jit
def _attention_bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, sm_scale, qk_scale, H, S_q, S_k,
                               stride_qb, stride_qh, stride_qs, stride_qd,
                               stride_kb, stride_kh, stride_ks, stride_kd,
                               stride_vb, stride_vh, stride_vs, stride_vd,
                               stride_dob, stride_doh, stride_dos, stride_dod,
                               stride_dkb, stride_dkh, stride_dks, stride_dkd,
                               stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                               CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                               DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One block of keys: dv = P^T dO and dk = scale * dS^T Q, summed over every query that sees them."""
    start_n = tl.program_id(0) * BLOCK_N
    bh, b, h = program_batch_head(1, H)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < S_k
    k = load_rows(K + b * stride_kb + h * stride_kh, offs_n, offs_d, col_ok, stride_ks, stride_kd, UPCAST)
    v = load_rows(V + b * stride_vb + h * stride_vh, offs_n, offs_d, col_ok, stride_vs, stride_vd, UPCAST)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    start_m0 = 0
    if CAUSAL:
        start_m0 = (start_n // BLOCK_M) * BLOCK_M  # earlier queries never see these keys
    for start_m in range(start_m0, S_q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < S_q
        q = load_rows(q_base, offs_m, offs_d, row_ok, stride_qs, stride_qd, UPCAST)
        do = load_rows(do_base, offs_m, offs_d, row_ok, stride_dos, stride_dod, UPCAST)
        lse = tl.load(LSE + bh * S_q + offs_m, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * S_q + offs_m, mask=row_ok, other=0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale
        visible = col_ok[:, None] & row_ok[None, :]
        if CAUSAL:
            visible = visible & (offs_n[:, None] <= offs_m[None, :])
        p_t = tl.where(visible, tl.math.exp2(s_t - lse[None, :]), 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)

    store_rows(DK + b * stride_dkb + h * stride_dkh, dk * sm_scale, offs_n, offs_d, col_ok, stride_dks, stride_dkd)
    store_rows(DV + b * stride_dvb + h * stride_dvh, dv, offs_n, offs_d, col_ok, stride_dvs, stride_dvd)


@_autotune("dq")
@triton.jit
def _attention_bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, sm_scale, qk_scale, H, S_q, S_k,
                             stride_qb, stride_qh, stride_qs, stride_qd,
                             stride_kb, stride_kh, stride_ks, stride_kd,
                             stride_vb, stride_vh, stride_vs, stride_vd,
                             stride_dob, stride_doh, stride_dos, stride_dod,
                             stride_dqb, stride_dqh, stride_dqs, stride_dqd,
                             CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                             DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One block of queries: dq = scale * dS K, summed over every key the queries see."""
    start_m = tl.program_id(0) * BLOCK_M
    bh, b, h = program_batch_head(1, H)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < S_q
    q = load_rows(Q + b * stride_qb + h * stride_qh, offs_m, offs_d, row_ok, stride_qs, stride_qd, UPCAST)
    do = load_rows(DO + b * stride_dob + h * stride_doh, offs_m, offs_d, row_ok, stride_dos, stride_dod, UPCAST)
    lse = tl.load(LSE + bh * S_q + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * S_q + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    end_n = S_k
    if CAUSAL:
        end_n = tl.minimum(S_k, start_m + BLOCK_M)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < S_k
        k = load_rows(k_base, offs_n, offs_d, col_ok, stride_ks, stride_kd, UPCAST)
        v = load_rows(v_base, offs_n, offs_d, col_ok, stride_vs, stride_vd, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        visible = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        p = tl.where(visible, tl.math.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)

    store_rows(DQ + b * stride_dqb + h * stride_dqh, dq * sm_scale, offs_m, offs_d, row_ok, stride_dqs, stride_dqd)


def _kernel_options(dtype: torch.dtype) -> dict:
    """fp32 products follow torch's TF32 switch (off by default), so both impls compute the same thing."""
    return {"UPCAST": interpreter_upcast(dtype), "DOT_PRECISION": dot_precision(dtype)}


def _forward(q, k, v, causal: bool, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, S_q, D = q.shape
    S_k = k.shape[2]
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((B, H, S_q), device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(S_q, meta["BLOCK_M"]), B * H)  # noqa: E731
    _attention_fwd_kernel[grid](q, k, v, o, lse, sm_scale * _LOG2_E, H, S_q, S_k,
                                *q.stride(), *k.stride(), *v.stride(), *o.stride(),
                                CAUSAL=causal, HEAD_DIM=D, **_kernel_options(q.dtype))
    return o, lse


def _backward(q, k, v, o, lse, grad_o, causal: bool, sm_scale: float, need_dq: bool, need_dkdv: bool):
    B, H, S_q, D = q.shape
    S_k = k.shape[2]
    options = _kernel_options(q.dtype)
    delta = torch.empty_like(lse)
    delta_block = 16 if INTERPRETED else 64
    _attention_bwd_delta_kernel[(triton.cdiv(S_q, delta_block), B * H)](
        o, grad_o, delta, H, S_q, *o.stride(), *grad_o.stride(), HEAD_DIM=D, BLOCK_M=delta_block)
    dq = dk = dv = None
    if need_dkdv:
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        grid = lambda meta: (triton.cdiv(S_k, meta["BLOCK_N"]), B * H)  # noqa: E731
        _attention_bwd_dkdv_kernel[grid](q, k, v, grad_o, dk, dv, lse, delta, sm_scale, sm_scale * _LOG2_E,
                                         H, S_q, S_k, *q.stride(), *k.stride(), *v.stride(), *grad_o.stride(),
                                         *dk.stride(), *dv.stride(), CAUSAL=causal, HEAD_DIM=D, **options)
    if need_dq:
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        grid = lambda meta: (triton.cdiv(S_q, meta["BLOCK_M"]), B * H)  # noqa: E731
        _attention_bwd_dq_kernel[grid](q, k, v, grad_o, dq, lse, delta, sm_scale, sm_scale * _LOG2_E,
                                       H, S_q, S_k, *q.stride(), *k.stride(), *v.stride(), *grad_o.stride(),
                                       *dq.stride(), CAUSAL=causal, HEAD_DIM=D, **options)
    return dq, dk, dv


class _AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        o, lse = _forward(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal = causal
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, grad_o):
        q, k, v, o, lse = ctx.saved_tensors
        need_dq = ctx.needs_input_grad[0]
        need_dkdv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        dq, dk, dv = _backward(q, k, v, o, lse, grad_o, ctx.causal, ctx.sm_scale, need_dq, need_dkdv)
        return dq, dk, dv, None, None


def _check_inputs(q, k, v, causal, sm_scale) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"attention: {name} must be 4-D (B, H, S, D), got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"attention: {name} must not be empty, got shape {tuple(t.shape)}")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"attention: q, k, v must share one dtype of {_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"attention: expected q (B, H, S_q, D) and k, v (B, H, S_k, D), "
                         f"got q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}")
    if q.shape[3] not in HEAD_DIMS:
        raise ValueError(f"attention: head dim D must be one of {HEAD_DIMS}, got {q.shape[3]}")
    check_devices("attention", q=q, k=k, v=v)
    if not isinstance(causal, bool):
        raise TypeError(f"attention: causal must be a bool, got {type(causal).__name__}")
    check_sm_scale("attention", sm_scale)


def check_sm_scale(op: str, sm_scale: object) -> None:
    """`sm_scale` is None (the default) or a finite real number; a bool is rejected, not taken as 0 or 1."""
    if sm_scale is not None:
        if isinstance(sm_scale, bool) or not isinstance(sm_scale, numbers.Real):
            raise TypeError(f"{op}: sm_scale must be None or a real number, got {type(sm_scale).__name__}")
        if not math.isfinite(sm_scale):
            raise ValueError(f"{op}: sm_scale must be finite, got {sm_scale}")


def resolve_sm_scale(sm_scale: float | None, head_dim: int) -> float:
    """The scale the kernels apply: 1/sqrt(D) unless the caller chose one."""
    return 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              sm_scale: float | None = None) -> torch.Tensor:
    """softmax(scale * q k^T [causal mask]) v for q (B, H, S_q, D), k and v (B, H, S_k, D).

    D in {16, 32, 64, 128}; fp32/fp16/bf16, accumulating in fp32; any strides. `sm_scale`
    defaults to 1/sqrt(D). The result is contiguous, in the inputs' dtype.
    """
    _check_inputs(q, k, v, causal, sm_scale)
    return _AttentionFunction.apply(q, k, v, causal, resolve_sm_scale(sm_scale, q.shape[3]))


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                        sm_scale: float | None = None) -> torch.Tensor:
    """The PyTorch path (SDPA: flash/cuDNN/efficient/math backend as PyTorch picks) with the same semantics."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=sm_scale)


def _visible_pairs(seq_q: int, seq_k: int, causal: bool) -> int:
    """Query-key pairs that enter the softmax; causal counts exactly (query i sees min(i + 1, S_k) keys)."""
    if not causal:
        return seq_q * seq_k
    overlap = min(seq_q, seq_k)
    return overlap * (overlap + 1) // 2 + (seq_q - overlap) * seq_k


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"attention: mode must be one of {_MODES}, got {mode!r}")


def attention_flops(batch: int, heads: int, seq_q: int, seq_k: int, head_dim: int, causal: bool = False,
                    mode: str = "fwd") -> int:
    """Matmul FLOPs of the algorithm (softmax and scaling not counted), per pass.

    fwd: q k^T and p v, 2 * 2 * D per visible pair, i.e. 4 * B * H * S_q * S_k * D, about half
    of that when causal. bwd: q k^T recomputed, dv = p^T do, dp = do v^T, dq and dk, so 2.5x fwd
    (the count of useful work; these kernels recompute q k^T and do v^T once more to avoid atomics).
    """
    _check_mode(mode)
    forward = 4 * batch * heads * _visible_pairs(seq_q, seq_k, causal) * head_dim
    return {"fwd": forward, "bwd": forward * 5 // 2, "fwd_bwd": forward + forward * 5 // 2}[mode]


def attention_bytes(batch: int, heads: int, seq_q: int, seq_k: int, head_dim: int, element_size: int,
                    mode: str = "fwd") -> int:
    """Compulsory traffic per pass, each tensor moved once (the fp32 log-sum-exp and delta rows are not counted).

    fwd: read q, k, v, write o. bwd: read q, k, v, o, do, write dq, dk, dv.
    """
    _check_mode(mode)
    q_elems = batch * heads * seq_q * head_dim
    kv_elems = batch * heads * seq_k * head_dim
    forward = (2 * q_elems + 2 * kv_elems) * element_size
    backward = (4 * q_elems + 4 * kv_elems) * element_size
    return {"fwd": forward, "bwd": backward, "fwd_bwd": forward + backward}[mode]
