"""Decode attention (one new token per sequence) over a KV cache, split along the sequence.

A decode step has too little work per sequence to fill a GPU if one program walks the whole
cache, so the cache is cut into splits (flash-decoding / split-K): each program reduces one
split of one KV head to a partial output and its log-sum-exp, and a second kernel merges the
splits. A program serves every query head of its group (grouped-query attention), so each
K/V block is read once per group, not once per query head.

Inference only: there is no backward pass.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from wattbench.kernels import INTERPRETED, targets
from wattbench.kernels.attention import (_LOG2_E, HEAD_DIMS, check_sm_scale, load_rows, program_batch_head,
                                         resolve_sm_scale)
from wattbench.kernels.matmul import check_devices, dot_precision, interpreter_upcast

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LENGTH_DTYPES = (torch.int32, torch.int64)
# Splits are whole multiples of this many keys (the largest BLOCK_N, so only a split's last block is ragged).
_SPLIT_GRANULE = 16 if INTERPRETED else 128
# The interpreter has no SMs to fill; this small target still splits test-sized caches so the merge runs.
_INTERPRETED_TARGET_PROGRAMS = 8
# Splits the merge combines at a time: a (32, HEAD_DIM) fp32 tile is 32 registers per thread at HEAD_DIM 128.
# Under the interpreter, 2, so that test caches (8 splits) take several rounds.
_MERGE_BLOCK = 2 if INTERPRETED else 32


#: Key blocks as (BLOCK_N, num_warps, num_stages), by what the dots run on: tensor cores for 16-bit
#: operands and fp32 with TF32; FMA loops for fp32 with TF32 off, whose operands all sit in registers.
#: A group of 32 or more query heads (BLOCK_G) takes 8 warps and at most 64 keys per block. None of
#: them spills registers on sm_80, sm_89 or sm_90 (`wattbench selfcheck compile`); each target tries
#: those that fit its shared memory.
_TENSOR_CORE_TILES = [(n, w, s) for n in (32, 64) for w in (4, 8) for s in (2, 3)] + [(128, 8, 2), (128, 8, 3)]
_FMA_TILES = [(16, 4, 2), (16, 4, 3), (16, 8, 2), (16, 8, 3), (32, 8, 2)]
_WIDE_GROUP = 32


def _configs(rows) -> list[triton.Config]:
    return [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s) for n, w, s in rows]


def _autotune_configs() -> list[triton.Config]:
    """Every tile, once; one small tile under the interpreter (autotuning would run them all)."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_N": 16})]
    return list(dict.fromkeys(_configs(_TENSOR_CORE_TILES + _FMA_TILES)))


def _shared_memory(config, args, capability) -> int:
    """An upper estimate: the queries, a pipeline buffer of keys and values per stage and, before
    Hopper, the probabilities' layout conversion for the second dot."""
    block_n, group, head_dim = config.kwargs["BLOCK_N"], args["BLOCK_G"], args["HEAD_DIM"]
    element = args["Q"].element_size()
    conversion = group * block_n * element * 9 // 8 if capability < (9, 0) else 0
    return (group * head_dim * element + targets.pipeline_buffers(capability, config.num_stages)
            * 2 * block_n * head_dim * element + conversion + 1024)


def _choose(args, capability):
    fma = args["Q"].dtype == torch.float32 and args["DOT_PRECISION"] == "ieee"
    rows = _FMA_TILES if fma else _TENSOR_CORE_TILES
    if args["BLOCK_G"] >= _WIDE_GROUP:
        rows = [(n, w, s) for n, w, s in rows if w == 8 and n <= 64]
    return _configs(rows)


@triton.autotune(configs=_autotune_configs(), key=["SPLIT_SIZE", "HEAD_DIM", "BLOCK_G", "DOT_PRECISION"],
                 prune_configs_by={"early_config_prune": targets.shared_memory_pruner("decode_attention", _choose,
                                                                                      _shared_memory)})
@triton.jit
def _decode_split_kernel(Q, K, V, SEQ_LENS, O_PART, LSE_PART, qk_scale, H, H_kv, S_max, GROUP, SPLIT_SIZE, NUM_SPLITS,
                         stride_lens, stride_qb, stride_qh, stride_qd,
                         stride_kb, stride_kh, stride_ks, stride_kd,
                         stride_vb, stride_vh, stride_vs, stride_vd,
                         HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, UPCAST: tl.constexpr,
                         DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Softmax-weighted sum of one split of one KV head's cache, for all GROUP query heads sharing it."""
    split = tl.program_id(1)
    _, b, kv_head = program_batch_head(0, H_kv)
    # Lengths past the cache are clamped so no program reads outside it.
    seq_len = tl.minimum(tl.load(SEQ_LENS + b * stride_lens), S_max)
    start = split * SPLIT_SIZE
    end = tl.minimum(start + SPLIT_SIZE, seq_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    head_ok = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    # One row per query head of the group, loaded in place: through `load_rows` the sm_90 compile of one
    # config (fp32 with TF32, D=16, 128 keys, 8 warps) changes (196 registers -> 175).
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                mask=head_ok[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + kv_head * stride_kh
    v_base = V + b * stride_vb + kv_head * stride_vh

    # Online softmax in the log2 domain; every block visited holds at least one valid key.
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < end
        k = load_rows(k_base, offs_n, offs_d, key_ok, stride_ks, stride_kd, UPCAST)
        v = load_rows(v_base, offs_n, offs_d, key_ok, stride_vs, stride_vd, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(key_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new

    # A split past the sequence's end contributes nothing: weight exp2(-inf) = 0 and a zero output.
    nonempty = l_i > 0
    safe_l = tl.where(nonempty, l_i, 1.0)
    rows = (b * H + heads) * NUM_SPLITS + split
    tl.store(O_PART + rows[:, None] * HEAD_DIM + offs_d[None, :], acc / safe_l[:, None], mask=head_ok[:, None])
    tl.store(LSE_PART + rows, tl.where(nonempty, m_i + tl.math.log2(safe_l), float("-inf")), mask=head_ok)


@triton.jit
def _decode_merge_kernel(O_PART, LSE_PART, O, H, NUM_SPLITS, stride_ob, stride_oh, stride_od,
                         HEAD_DIM: tl.constexpr, BLOCK_SPLITS: tl.constexpr):
    """Combine one head's split outputs, each weighted by its share of the softmax denominator,
    BLOCK_SPLITS splits at a time (rescaled as the running maximum grows), so a long cache's
    hundreds of splits never sit in registers at once."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, HEAD_DIM)
    m = tl.full((), float("-inf"), tl.float32)
    total = tl.zeros((), tl.float32)
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for start in range(0, NUM_SPLITS, BLOCK_SPLITS):
        offs_s = start + tl.arange(0, BLOCK_SPLITS)
        split_ok = offs_s < NUM_SPLITS
        rows = bh.to(tl.int64) * NUM_SPLITS + offs_s
        lse = tl.load(LSE_PART + rows, mask=split_ok, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, 0))  # split 0 is never empty, so this is finite from the first block
        alpha = tl.math.exp2(m - m_new)
        weights = tl.math.exp2(lse - m_new)
        parts = tl.load(O_PART + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=split_ok[:, None], other=0.0)
        acc = acc * alpha + tl.sum(weights[:, None] * parts, 0)
        total = total * alpha + tl.sum(weights, 0)
        m = m_new
    tl.store(O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_d * stride_od, (acc / total).to(O.dtype.element_ty))


def _target_programs(device: torch.device) -> int:
    """Enough programs to give every SM two, so short batches still fill the GPU."""
    if INTERPRETED:
        return _INTERPRETED_TARGET_PROGRAMS
    return 2 * targets.device_limits(device).sm_count


def _split_size(batch_kv_heads: int, s_max: int, device: torch.device) -> int:
    """Keys per split: as many splits as needed to reach the program target, none shorter than a granule."""
    splits = max(1, triton.cdiv(_target_programs(device), batch_kv_heads))
    return triton.cdiv(triton.cdiv(s_max, splits), _SPLIT_GRANULE) * _SPLIT_GRANULE


def _check_inputs(q, k_cache, v_cache, seq_lens, sm_scale) -> None:
    tensors = (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("seq_lens", seq_lens))
    for name, t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"decode_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t, rank, layout in (("q", q, 3, "(B, H, D)"), ("k_cache", k_cache, 4, "(B, H_kv, S_max, D)"),
                                  ("v_cache", v_cache, 4, "(B, H_kv, S_max, D)"), ("seq_lens", seq_lens, 1, "(B,)")):
        if t.dim() != rank:
            raise ValueError(f"decode_attention: {name} must be {rank}-D {layout}, got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"decode_attention: {name} must not be empty, got shape {tuple(t.shape)}")
    if q.dtype not in _DTYPES or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise TypeError(f"decode_attention: q, k_cache, v_cache must share one dtype of {_DTYPES}, "
                        f"got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if seq_lens.dtype not in _LENGTH_DTYPES:
        raise TypeError(f"decode_attention: seq_lens must be int32 or int64, got {seq_lens.dtype}")
    B, H, D = q.shape
    if (k_cache.shape != v_cache.shape or k_cache.shape[0] != B or k_cache.shape[3] != D
            or seq_lens.shape != (B,)):
        raise ValueError(f"decode_attention: expected q (B, H, D), caches (B, H_kv, S_max, D) and seq_lens (B,), "
                         f"got q{tuple(q.shape)}, k_cache{tuple(k_cache.shape)}, v_cache{tuple(v_cache.shape)}, "
                         f"seq_lens{tuple(seq_lens.shape)}")
    if H % k_cache.shape[1] != 0:
        raise ValueError(f"decode_attention: query heads H={H} must be a multiple of cache heads "
                         f"H_kv={k_cache.shape[1]}")
    if D not in HEAD_DIMS:
        raise ValueError(f"decode_attention: head dim D must be one of {HEAD_DIMS}, got {D}")
    check_devices("decode_attention", q=q, k_cache=k_cache, v_cache=v_cache, seq_lens=seq_lens)
    if torch.is_grad_enabled() and any(t.requires_grad for _, t in tensors):
        raise ValueError("decode_attention: inference only (no backward pass); call it under torch.no_grad() "
                         "or with tensors that do not require grad")
    check_sm_scale("decode_attention", sm_scale)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq_lens: torch.Tensor,
                     sm_scale: float | None = None) -> torch.Tensor:
    """Attention of one query token per sequence over its first seq_lens[b] cached keys and values.

    q (B, H, D); caches (B, H_kv, S_max, D) with H a multiple of H_kv (query head h reads cache
    head h // (H / H_kv)); seq_lens int32/int64 (B,), each in [1, S_max]. The lengths are not
    checked on the host, which would synchronise the GPU and break CUDA-graph capture; the
    kernel clamps them to S_max. D in {16, 32, 64, 128}; fp32/fp16/bf16; any strides.
    Returns a contiguous (B, H, D) tensor in q's dtype.
    """
    _check_inputs(q, k_cache, v_cache, seq_lens, sm_scale)
    B, H, D = q.shape
    H_kv, S_max = k_cache.shape[1], k_cache.shape[2]
    group = H // H_kv
    scale = resolve_sm_scale(sm_scale, D)
    split_size = _split_size(B * H_kv, S_max, q.device)
    num_splits = triton.cdiv(S_max, split_size)

    out_part = torch.empty((B, H, num_splits, D), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((B, H, num_splits), device=q.device, dtype=torch.float32)
    out = torch.empty((B, H, D), device=q.device, dtype=q.dtype)
    _decode_split_kernel[(B * H_kv, num_splits)](
        q, k_cache, v_cache, seq_lens, out_part, lse_part, scale * _LOG2_E, H, H_kv, S_max, group, split_size,
        num_splits, seq_lens.stride(0), *q.stride(), *k_cache.stride(), *v_cache.stride(),
        HEAD_DIM=D, BLOCK_G=max(16, triton.next_power_of_2(group)),  # tl.dot needs at least 16 rows
        UPCAST=interpreter_upcast(q.dtype),
        DOT_PRECISION=dot_precision(q.dtype))
    _decode_merge_kernel[(B * H,)](out_part, lse_part, out, H, num_splits, *out.stride(),
                                   HEAD_DIM=D, BLOCK_SPLITS=min(triton.next_power_of_2(num_splits), _MERGE_BLOCK))
    return out


def decode_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               seq_lens: torch.Tensor, sm_scale: float | None = None) -> torch.Tensor:
    """Plain PyTorch: repeat the cache heads to H, mask positions >= seq_lens, softmax, weight v."""
    group = q.shape[1] // k_cache.shape[1]
    k = k_cache.repeat_interleave(group, dim=1)
    v = v_cache.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    scores = torch.einsum("bhd,bhsd->bhs", q, k) * scale
    positions = torch.arange(k.shape[2], device=q.device)
    scores = scores.masked_fill(positions[None, None, :] >= seq_lens[:, None, None], float("-inf"))
    return torch.einsum("bhs,bhsd->bhd", scores.softmax(-1), v)


def decode_attention_flops(batch: int, heads: int, kv_len: int, head_dim: int) -> int:
    """Matmul FLOPs: q.k and p.v over kv_len keys (the mean valid length when lengths differ) per query head."""
    return 4 * batch * heads * kv_len * head_dim


def decode_attention_bytes(batch: int, heads: int, kv_heads: int, kv_len: int, head_dim: int,
                           element_size: int) -> int:
    """Compulsory traffic: the valid part of K and V read once per cache head, q read and o written once.

    The lengths and the fp32 split partials are not counted (tiny, and an implementation choice).
    """
    return (2 * batch * kv_heads * kv_len * head_dim + 2 * batch * heads * head_dim) * element_size
