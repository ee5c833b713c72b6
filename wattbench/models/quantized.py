"""Quantisation as a module swap, as gpt-fast does it: a transformer's linear layers replaced by quantised ones.

`swap_linears(model, precision)` quantises every block's seven linear weights (wq, wk, wv, wo, w_gate, w_up,
w_down) from their dense values and drops the dense copies; the embedding, the head and the norms stay in the
model's dtype. Each swapped layer runs the Triton kernel or the torch path of the `Ops` it is called with:

    fp8     e4m3 weight, one fp32 scale per output column, bf16 activations quantised per row in each call
            (matmul_fp8 / torch._scaled_mm, or its labelled fallback "dequantise-then-matmul")
    int8w   int8 weight, one fp32 scale per column (matmul_int8w / dequantise-then-matmul)
    int4w   int4 groups of 128 along K, asymmetric (matmul_int4w / tinygemm, or dequantise-then-matmul); a layer
            whose K is no multiple of any group size (the tiny CPU model's w_down, K = 176) stays dense, as
            gpt-fast leaves layers its group size does not divide

`model_accuracy` is the model-level accuracy guard: the dense model (bf16 on a GPU, fp32 on a CPU) decodes
greedily; the same model, swapped, reads the same tokens; over the decoded tokens it reports how often the two
predict the same next token (top-1 agreement) and the mean KL divergence of their next-token distributions
(nats per token, KL(dense || quantised)).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from wattbench.kernels.accuracy import reference_dtype
from wattbench.kernels.matmul_fp8 import FP8_REFERENCES, fp8_reference_path, matmul_fp8
from wattbench.kernels.matmul_int4 import (int4_reference_path, matmul_int4w, matmul_int4w_reference,
                                           prepare_int4_reference)
from wattbench.kernels.matmul_int8 import matmul_int8w, matmul_int8w_reference, quantize_int8
from wattbench.kernels.quantize import (INT4_GROUP_SIZE, INT4_GROUP_SIZES, fp8_scale_bytes, int4_weight_bytes,
                                        quantize_fp8_weight, quantize_int4)
from wattbench.models.ops import TORCH, Ops
from wattbench.models.transformer import LINEARS, Transformer, TransformerConfig
from wattbench.precision import Precision

#: The weight formats a model's linear layers can be swapped to (Precision.weight_format).
SWAPPABLE = ("fp8", "int8w", "int4w")


def int4_group_size(K: int) -> int | None:
    """The group size an int4 layer of `K` inputs gets: 128, else the largest smaller size dividing K; None:
    none does (the layer stays dense)."""
    return next((size for size in sorted(INT4_GROUP_SIZES, reverse=True)
                 if size <= INT4_GROUP_SIZE and K % size == 0), None)


class QuantizedLinear:
    """x (M, K) @ a quantised (K, N) weight, by the Triton kernel or the torch path of the `Ops` it is called with.
    The torch path is chosen (probed) here, once: a probe inside a CUDA graph capture would break it."""

    def __init__(self, weight: torch.Tensor, form: str):
        K, N = weight.shape
        self.form, device = form, weight.device
        if form == "fp8":
            self.weight = quantize_fp8_weight(weight, "row")
            self.path = fp8_reference_path(device, "row", K, N)
            self.triton, self.torch, self.torch_weight = matmul_fp8, FP8_REFERENCES[self.path], self.weight
        elif form == "int4w":
            self.weight = quantize_int4(weight, int4_group_size(K))
            self.path = int4_reference_path(device, weight.dtype, K, N, self.weight.group_size)
            self.triton, self.torch = matmul_int4w, matmul_int4w_reference
            self.torch_weight = prepare_int4_reference(self.weight, weight.dtype)
        elif form == "int8w":
            w_q, scale = quantize_int8(weight)
            self.weight = self.torch_weight = (w_q, scale)
            self.path = "dequantise-then-matmul"
            self.triton = lambda x, w: matmul_int8w(x, *w)
            self.torch = lambda x, w: matmul_int8w_reference(x, *w)
        else:
            raise ValueError(f"cannot swap a linear layer to {form!r}: choose one of {', '.join(SWAPPABLE)}")

    def __call__(self, x: torch.Tensor, ops: Ops) -> torch.Tensor:
        if ops.impl == "triton":
            return self.triton(x, self.weight)
        return self.torch(x, self.torch_weight)


def swap_linears(model: Transformer, precision: str) -> str:
    """Replace `model`'s blocks' linear layers by `precision`'s quantised ones (in place, the dense weights
    dropped); returns what the torch path runs, e.g. "torch._scaled_mm", with the layers left dense named."""
    form = Precision.parse(precision).weight_format
    if form not in SWAPPABLE:
        raise ValueError(f"cannot swap a model's linear layers to {precision!r}: choose a precision whose weights "
                         f"are {', '.join(SWAPPABLE)}")
    paths, dense = set(), set()
    with torch.no_grad():
        for index, block in enumerate(model.blocks):
            for name in LINEARS:
                weight = getattr(block, name)
                if form == "int4w" and int4_group_size(weight.shape[0]) is None:
                    dense.add(f"{name} (K={weight.shape[0]})")
                    continue
                layer = QuantizedLinear(weight.detach(), form)
                model.swapped[(index, name)] = layer
                paths.add(layer.path)
                delattr(block, name)
    label = " + ".join(sorted(paths))
    return label + (f"; dense: {', '.join(sorted(dense))}" if dense else "")


def _linear_shapes(config: TransformerConfig) -> list[tuple[int, int]]:
    """(K, N) of one block's linear layers, in LINEARS' order."""
    c = config
    return [(c.dim, c.q_dim), (c.dim, c.kv_dim), (c.dim, c.kv_dim), (c.q_dim, c.dim), (c.dim, c.ffn),
            (c.dim, c.ffn), (c.ffn, c.dim)]


def _layer_bytes(K: int, N: int, form: str, dense_size: int) -> int:
    if form == "fp8":
        return K * N + fp8_scale_bytes(N, "row")
    if form == "int8w":
        return K * N + 4 * N
    if form == "int4w":
        group = int4_group_size(K)
        return int4_weight_bytes(K, N, group) if group else K * N * dense_size
    raise ValueError(f"no quantised byte count for {form!r}")


def model_weight_bytes(config: TransformerConfig, precision: str) -> int:
    """Bytes of a model's weights as a precision stores them: the blocks' linear layers in its format with their
    scales and zeros (an int4 layer no group size divides at its dense size), the embedding, head and norms in
    the tensors' dtype."""
    p = Precision.parse(precision)
    size = p.tensor_dtype.itemsize
    if p.weight_format == "dense":
        return config.parameter_count() * size
    linear = config.layers * config.layer_linear_parameter_count()
    quantised = config.layers * sum(_layer_bytes(K, N, p.weight_format, size) for K, N in _linear_shapes(config))
    return (config.parameter_count() - linear) * size + quantised


def _next_token_logits(model: Transformer, tokens: torch.Tensor, positions: int) -> torch.Tensor:
    """fp32 logits (B * positions, vocab) predicting each of the last `positions` tokens of `tokens` (B, S)."""
    batch, seq = tokens.shape
    logits = model(tokens[:, :-1], TORCH).view(batch, seq - 1, -1)
    return logits[:, -positions:].reshape(batch * positions, -1).float()


def agreement(reference: torch.Tensor, quantised: torch.Tensor) -> dict:
    """Top-1 agreement and mean KL(reference || quantised) in nats of two (positions, vocab) logit tensors."""
    ref_log, q_log = reference.log_softmax(-1).double(), quantised.log_softmax(-1).double()
    kl = (ref_log.exp() * (ref_log - q_log)).sum(-1).mean().item()
    top1 = (reference.argmax(-1) == quantised.argmax(-1)).double().mean().item()
    return {"top1_agreement": top1, "kl_divergence": max(kl, 0.0)}


#: The guard's prompts: a few sequences, short, so every model's guard costs seconds at most.
GUARD_SEQUENCES, GUARD_PROMPT, GUARD_TOKENS = 4, 64, 16


@functools.cache
def model_accuracy(config: TransformerConfig, precision: str, device: torch.device, seed: int = 0) -> tuple[dict, str]:
    """The accuracy guard of `precision` on a model of `config` (random weights from `seed`): GUARD_SEQUENCES
    random prompts of GUARD_PROMPT tokens, GUARD_TOKENS decoded greedily by the dense model in the reference
    dtype (bf16 on a GPU, fp32 on a CPU); then the same weights in the precision's tensors, swapped, read the
    same tokens. Returns `agreement`'s figures over the decoded tokens and the path label. On the torch path:
    it measures the precision (each GEMM's guard measures the kernels). Cached: every batch size of a model and
    precision shares one measure. One model is on the device at a time."""
    prompt, new_tokens = min(GUARD_PROMPT, config.max_seq - GUARD_TOKENS), GUARD_TOKENS
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.randint(0, config.vocab, (GUARD_SEQUENCES, prompt), generator=generator, device=device)
    try:
        return _measure_accuracy(config, precision, device, seed, tokens, new_tokens)
    except torch.cuda.OutOfMemoryError:
        return {}, "not guarded: the dense reference model does not fit this device"


def _measure_accuracy(config, precision, device, seed, tokens, new_tokens) -> tuple[dict, str]:
    generator = torch.Generator(device=device)
    with torch.no_grad():
        model = Transformer(config, reference_dtype(device), device, generator.manual_seed(seed + 1))
        for _ in range(new_tokens):
            last = model(tokens, TORCH, last_only=True)
            tokens = torch.cat([tokens, last.argmax(-1, keepdim=True)], dim=1)
        reference = _next_token_logits(model, tokens, new_tokens)
        del model
        model = Transformer(config, Precision.parse(precision).tensor_dtype, device, generator.manual_seed(seed + 1))
        path = swap_linears(model, precision)
        quantised = _next_token_logits(model, tokens, new_tokens)
    return agreement(reference, quantised), path


def accuracy_guard(config: TransformerConfig, precision: str, device: torch.device) -> Callable[[object], dict]:
    """The inputs' "guard" of a quantised model case: the model's accuracy figures as record fields, measured when
    the guard is called (after the case's first call; never where inputs are only made, as on meta tensors)."""
    from wattbench.accuracy import guard_fields

    return lambda outputs: guard_fields(*model_accuracy(config, precision, device))
