"""Model-level workloads: a decoder-only transformer in training and in inference.

- `llm.train`: forward, cross-entropy, backward and an AdamW step; work = tokens trained on.
- `llm.prefill`: the prompt's forward pass filling the KV cache; work = prompt tokens.
- `llm.decode`: token-by-token decode with the KV cache; work = generated tokens.
- `llm.generate`: whole requests (prefill, then decode), device-synchronised at every token, for
  the latency percentiles inference is judged by (TTFT, TPOT, ITL, E2E).

Prefill and decode are separate workloads so their energy is measured separately.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time

import pytest
import torch

from wattbench.compiled import COMPILED, compile_fn, compile_metrics, first_call
from wattbench.metrics import FORMULAS, RequestTiming, latency_metrics, latency_percentiles
from wattbench.models.decode import StaticDecoder, StepTimes
from wattbench.models.ops import ops_for
from wattbench.models.memory import memory_needed
from wattbench.models.quantized import accuracy_guard, model_weight_bytes, swap_linears
from wattbench.models.transformer import MODEL_CONFIGS, KVCache, Transformer, TransformerConfig
from wattbench.precision import Precision
from wattbench.workloads import (MODEL_STEP, SYNCHRONISES, Context, Inputs, Params, Step, Workload,
                                 device_sizes, register)

TRAIN_PRECISIONS = {"cpu": ("fp32",), "cuda": ("bf16",)}
#: The precision family of prefill and decode (fp8 and int4w swap the linear layers: wattbench.models.quantized);
#: whole requests (llm.generate) run the dense and int8w models only.
INFER_PRECISIONS = {"cpu": ("fp32", "fp8", "int8w-fp32", "int4w-fp32"), "cuda": ("bf16", "fp8", "int8w-bf16", "int4w-bf16")}
GENERATE_PRECISIONS = {"cpu": ("fp32", "int8w-fp32"), "cuda": ("bf16", "int8w-bf16")}
#: On a CPU, fp8 and int4w run at the first batch size only: a check of their correctness, in seconds.
CPU_QUANTISED_AT = {"prefill": "tiny-B1-P32", "decode": "tiny-B1-P32-T4"}
#: On a CPU, Triton (interpreted: its figures compare nothing, each call takes seconds) runs the first two batch
#: sizes only, a check of its correctness; the torch path draws the whole CPU curve.
CPU_INTERPRETED_AT = {"prefill": ("tiny-B1-P32", "tiny-B4-P32"), "decode": ("tiny-B1-P32-T4", "tiny-B4-P32-T4")}
ADAMW = {"lr": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}


def build_model(params: Params, precision: str, device: torch.device, generator: torch.Generator) -> Transformer:
    """The case's model: `params["model"]` names a config (or is one); int8 weights quantised as they are drawn,
    fp8 and int4w linear layers swapped in once the model is drawn (wattbench.models.quantized)."""
    config = params["model"] if isinstance(params["model"], TransformerConfig) else MODEL_CONFIGS[params["model"]]
    form = Precision.parse(precision).weight_format
    model = Transformer(config, tensor_dtype(precision), device, generator, int8_weights=form == "int8w")
    if form in ("fp8", "int4w"):
        swap_linears(model, precision)
    return model


def tensor_dtype(precision: str) -> torch.dtype:
    """The dtype of the model's tensors: the activations', bf16 for fp8 (e4m3 only inside each GEMM)."""
    return Precision.parse(precision).tensor_dtype


def _tokens(params: Params, length: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    vocab = MODEL_CONFIGS[params["model"]].vocab
    return torch.randint(0, vocab, (params["B"], length), generator=generator, device=device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Training --------------------------------------------------------------------------------------

def _train_inputs(params, precision, device, generator) -> Inputs:
    model = build_model(params, precision, device, generator)
    return {"model": model, "tokens": _tokens(params, params["S"] + 1, device, generator)}


def _train_build(impl: str):
    def build(inputs: Inputs) -> Step:
        model, tokens, ops = inputs["model"], inputs["tokens"], ops_for(impl)
        params = list(model.parameters())
        exp_avg = [torch.zeros_like(p) for p in params]
        exp_avg_sq = [torch.zeros_like(p) for p in params]
        state = {"step": 0}

        def step():
            for p in params:
                p.grad = None
            logits = model(tokens[:, :-1], ops)
            loss = ops.cross_entropy(logits, tokens[:, 1:].reshape(-1))
            loss.backward()
            state["step"] += 1
            ops.adamw_step(params, [p.grad.contiguous() for p in params], exp_avg, exp_avg_sq, state["step"],
                           **ADAMW)
            return loss.detach()

        return step

    return build


def _train_flops(p: Params) -> int:
    config = MODEL_CONFIGS[p["model"]]
    return config.train_flops_per_token(p["S"]) * p["B"] * p["S"]


def weight_bytes(p: Params, precision: str) -> int:
    """Bytes of the weights as stored: quantised linear layers in their format, with their scales (and zeros)."""
    return model_weight_bytes(MODEL_CONFIGS[p["model"]], precision)


def _train_bytes(p: Params, precision: str) -> int:
    """Weights only (activations excluded): read in forward and backward, gradient written, then AdamW's
    read of weight, gradient and both moments and write of weight and moments."""
    return 10 * weight_bytes(p, precision)


# Inference -------------------------------------------------------------------------------------

def device_memory_bytes(device: torch.device) -> int:
    """An idle device's memory: the GPU's, or the host's for a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def skip_unless_fits(params: Params, precision: str, device: torch.device, cache_length: int | None = None) -> None:
    """Skip (with the memory check's reason) a case that could not fit, before any weight is drawn: `B`
    sequences of `cache_length` positions (default: the case's prompt and new tokens)."""
    config = MODEL_CONFIGS[params["model"]]
    need = memory_needed(config, params["B"], cache_length or _cache_length(params), tensor_dtype(precision).itemsize,
                         Precision.parse(precision).weights == "int8")
    reason = need.shortfall(device_memory_bytes(device))
    if reason:
        pytest.skip(f"{params['model']} at batch {params['B']} does not fit: {reason}")


def _cache_length(params: Params) -> int:
    """Positions an inference case uses: its prompt and the tokens it generates."""
    return params["P"] + params.get("T", 0)


def _infer_inputs(params, precision, device, generator, cache: bool = True) -> Inputs:
    """The model with rotary tables (and, for prefill, a KV cache) of the case's positions, not the config's
    `max_seq`: a cache of batch 512 at 2048 positions would not fit beside an 8B model's weights, one of 576
    does. Decoding steps (`cache=False`) get their cache from their StaticDecoder."""
    skip_unless_fits(params, precision, device)
    sized = {**params, "model": dataclasses.replace(MODEL_CONFIGS[params["model"]], max_seq=_cache_length(params))}
    model = build_model(sized, precision, device, generator)
    inputs = {"model": model, "prompt": _tokens(params, params["P"], device, generator),
              "new_tokens": params.get("T", 0), "device": device}
    if cache:
        inputs["cache"] = KVCache(model.config, params["B"], tensor_dtype(precision), device)
    if Precision.parse(precision).quantized:  # the accuracy guard: this model and precision against the dense one
        inputs["guard"] = accuracy_guard(MODEL_CONFIGS[params["model"]], precision, device)
    return inputs


def _prefill_build(impl: str):
    def build(inputs: Inputs) -> Step:
        model, cache, prompt, ops = inputs["model"], inputs["cache"], inputs["prompt"], ops_for(impl)

        def step():
            with torch.no_grad():
                cache.reset()
                return model(prompt, ops, cache, last_only=True)

        return step

    return build


def decode_mode(context: Context) -> str:
    """CUDA graphs on a GPU (as serving engines decode) unless the run asks for eager decode; eager on a CPU."""
    return "cuda_graph" if context.device.type == "cuda" and not context.eager_decode else "eager"


def step_latency(steps_s: list[float]) -> dict | None:
    """A decode's ITL from its step times: p50, p90, p99 and mean in ms; None where no step was timed."""
    if not steps_s:
        return None
    return {**latency_percentiles(steps_s), "mean": statistics.fmean(steps_s) * 1e3}


class DecodeStep(Step):
    """Decode `T` tokens after a prompt of `P` through a StaticDecoder: the prompt prefilled once, outside the
    timed step; each call restarts from the prompt's first token (device copies only) and decodes `T` tokens,
    `T` graph replays in "cuda_graph" mode. The record's `decode` field says which mode ran.

    The record's ITL (`itl_ms`: p50, p90, p99 and mean in ms, over `itl_steps` steps) is the time of every step
    of the timed rounds' calls (`reset()` to `metrics()`; the energy windows are not timed per step), by the
    method in `itl_method` (wattbench.models.decode.StepTimes): "cuda_event" on a GPU, each replay's device time
    between CUDA events with no host sync inside a call; "perf_counter" on a CPU. One step makes a token for
    every sequence, so the batch's step times are every sequence's inter-token gaps (vLLM's ITL pooled over
    requests has the same percentiles). The host's read of each token is not in it (llm.generate's is)."""

    def __init__(self, inputs: Inputs, impl: str):
        context, prompt, model = inputs["context"], inputs["prompt"], inputs["model"]
        self.context, self.mode, self.new_tokens = context, decode_mode(context), inputs["new_tokens"]
        self.compile_s = None
        #: The steps being timed (from reset() until metrics()), and the ITL figures metrics() made of them.
        self.times: StepTimes | None = None
        self.itl: dict = {}
        if impl == COMPILED:  # the model's torch decode step compiled whole: its first calls compile it
            started = time.perf_counter()
            decode_fn = compile_fn(model.decode, context)
            self.decoder, _ = first_call(lambda: StaticDecoder(model, ops_for("torch"), context.device,
                                                               (prompt.shape[0],), self.mode, decode_fn), context)
        else:
            self.decoder = StaticDecoder(model, ops_for(impl), context.device, (prompt.shape[0],), self.mode)
        self.decoder.prefill(prompt)
        self.first, self.prompt_length = self.decoder.next_tokens.clone(), prompt.shape[1]
        if impl == COMPILED:
            if self.mode == "eager":  # a graph's capture has run the step already
                first_call(self, context)
            self.compile_s = time.perf_counter() - started

    def __call__(self):
        self.decoder.start(self.first, self.prompt_length)
        return self.decoder.decode(self.new_tokens, self.times)

    def reset(self) -> None:
        self.times = StepTimes(self.context.device)

    def metrics(self) -> dict:
        if self.times is not None:
            steps_s = self.times.seconds()
            self.itl = {"itl_ms": step_latency(steps_s), "itl_steps": len(steps_s), "itl_method": self.times.method,
                        "formulas": {"itl_ms": FORMULAS["itl_ms"]}}
            self.times = None
        return {"decode": self.mode, **self.itl,
                **({} if self.compile_s is None else compile_metrics(self.context, self.compile_s))}


class GenerationStep(Step):
    """One batch of requests: prefill, then greedy decode, each token's time taken after a device sync; the
    decode through a StaticDecoder (one graph replay per token on a GPU unless eager decode is asked for).

    Every request in the static batch shares the batch's timeline. `metrics()` summarises the
    requests of the timed rounds (`reset()` forgets the warm-up ones).
    """

    def __init__(self, inputs: Inputs, impl: str):
        context, self.prompt = inputs["context"], inputs["prompt"]
        self.new_tokens, self.device, self.mode = inputs["new_tokens"], inputs["device"], decode_mode(context)
        self.decoder = StaticDecoder(inputs["model"], ops_for(impl), context.device, (self.prompt.shape[0],),
                                     self.mode)
        self.requests: list[RequestTiming] = []

    def __call__(self):
        synchronize(self.device)
        start = time.perf_counter()
        logits = self.decoder.prefill(self.prompt)
        times = []
        for position in range(self.new_tokens):
            if position:
                logits = self.decoder.decode(1)
            synchronize(self.device)
            times.append(time.perf_counter())
        self.requests += [RequestTiming(start, tuple(times))] * self.prompt.shape[0]
        return logits

    def reset(self) -> None:
        self.requests = []

    def metrics(self) -> dict:
        return {**latency_metrics(self.requests), "decode": self.mode}


#: Inputs of the decoding workloads: the model and prompt, the KV cache their StaticDecoder's own.
_DECODING_INPUTS = functools.partial(_infer_inputs, cache=False)


def prefill_flops(p: Params) -> int:
    """Each prompt position attends over the positions up to it (causal): context i + 1 for position i."""
    return p["B"] * MODEL_CONFIGS[p["model"]].prefill_flops(p["P"])


def decode_flops(p: Params) -> int:
    config = MODEL_CONFIGS[p["model"]]
    return p["B"] * sum(config.forward_flops_per_token(p["P"] + t + 1) for t in range(p["T"]))


def kv_bytes(p: Params, precision: str, positions: int) -> int:
    config = MODEL_CONFIGS[p["model"]]
    element = tensor_dtype(precision).itemsize
    return 2 * config.layers * p["B"] * config.kv_heads * config.head_dim * positions * element


def decode_bytes(p: Params, precision: str) -> int:
    """Every decode step reads all weights once and the cache so far."""
    cache_reads = sum(kv_bytes(p, precision, p["P"] + t + 1) for t in range(p["T"]))
    return p["T"] * weight_bytes(p, precision) + cache_reads


def generate_flops(p: Params) -> int:
    """Whole requests of batch `B`: the prefill gives the first token, then `T` − 1 decode steps."""
    return prefill_flops(p) + decode_flops({**p, "T": p["T"] - 1})


def generate_bytes(p: Params, precision: str) -> int:
    """Weights read by the prefill and each decode step, the prompt's cache written and the cache read."""
    return weight_bytes(p, precision) + kv_bytes(p, precision, p["P"]) + decode_bytes({**p, "T": p["T"] - 1}, precision)


def _generated(p: Params) -> int:
    return p["B"] * p["T"]


#: The batch curve's points on GPUs: those of ML.ENERGY's published curves (vLLM serving Llama-3.1-8B).
GPU_BATCHES = (1, 8, 32, 64, 128, 256, 512)
#: The model of the full preset on GPUs: the size people choose serving hardware for.
FULL_MODEL = "llama3.1-8b"


def _batch_sweep(cpu_batches, extra: dict, cuda_batches=GPU_BATCHES) -> tuple[list[dict], list[dict], list[dict]]:
    """A batch curve: on GPUs the 125M model in the quick preset, Llama-3.1-8B in the full one (points that
    do not fit the device's memory are skipped with the reason); the tiny model at smaller batches on a CPU."""
    cpu = [{"model": "tiny", "B": b, **extra["cpu"]} for b in cpu_batches]
    cuda = [{"model": "125m", "B": b, **extra["cuda"]} for b in cuda_batches]
    cuda_full = [{"model": FULL_MODEL, "B": b, **extra["cuda"]} for b in cuda_batches]
    return cpu, cuda, cuda_full


register(Workload(
    name="llm.train", op="transformer", style="train", unit="tokens", suite="models",
    sizes=device_sizes(cpu=[{"model": "tiny", "B": 2, "S": 32}], cuda=[{"model": "125m", "B": 8, "S": 1024}],
                 cuda_full=[{"model": "1.3b", "B": 4, "S": 2048}]),
    precisions=TRAIN_PRECISIONS, make_inputs=_train_inputs,
    impls={"torch": _train_build("torch"), "triton": _train_build("triton")},
    units_per_call=lambda p: p["B"] * p["S"], flops=_train_flops, bytes=_train_bytes, reports_mfu=True,
    not_capturable=MODEL_STEP,
))

_PREFILL = _batch_sweep((1, 4, 16), {"cpu": {"P": 32}, "cuda": {"P": 512}})
register(Workload(
    name="llm.prefill", op="transformer", style="infer", unit="tokens", suite="models",
    sizes=device_sizes(*_PREFILL), precisions=INFER_PRECISIONS, make_inputs=_infer_inputs,
    impls={"torch": _prefill_build("torch"), "triton": _prefill_build("triton")},
    cpu_impls={"triton": CPU_INTERPRETED_AT["prefill"]},
    cpu_sizes_of={"fp8": (CPU_QUANTISED_AT["prefill"],), "int4w-fp32": (CPU_QUANTISED_AT["prefill"],)},
    units_per_call=lambda p: p["B"] * p["P"], flops=prefill_flops,
    bytes=lambda p, precision: weight_bytes(p, precision) + kv_bytes(p, precision, p["P"]),
    not_capturable=MODEL_STEP,
))

_DECODE = _batch_sweep((1, 4, 16), {"cpu": {"P": 32, "T": 4}, "cuda": {"P": 512, "T": 64}})
register(Workload(
    name="llm.decode", op="transformer", style="infer", unit="tokens", suite="models",
    sizes=device_sizes(*_DECODE), precisions=INFER_PRECISIONS, make_inputs=_DECODING_INPUTS,
    impls={impl: functools.partial(DecodeStep, impl=impl) for impl in ("torch", "triton", COMPILED)},
    cpu_impls={COMPILED: ("fp32-tiny-B4-P32-T4",), "triton": CPU_INTERPRETED_AT["decode"]},
    cpu_sizes_of={"fp8": (CPU_QUANTISED_AT["decode"],), "int4w-fp32": (CPU_QUANTISED_AT["decode"],)},
    units_per_call=_generated, flops=decode_flops, bytes=decode_bytes,
    not_capturable="the step replays graphs of its own: one per batch size, one replay per token",
))

_GENERATE = _batch_sweep((2,), {"cpu": {"P": 32, "T": 4}, "cuda": {"P": 512, "T": 64}}, cuda_batches=(1, 8, 64))
register(Workload(
    name="llm.generate", op="transformer", style="infer", unit="tokens", suite="models",
    sizes=device_sizes(*_GENERATE), precisions=GENERATE_PRECISIONS, make_inputs=_DECODING_INPUTS,
    impls={"torch": lambda inputs: GenerationStep(inputs, "torch"),
           "triton": lambda inputs: GenerationStep(inputs, "triton")},
    units_per_call=_generated, flops=generate_flops, bytes=generate_bytes,
    not_capturable=SYNCHRONISES,
))
