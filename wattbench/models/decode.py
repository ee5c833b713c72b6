"""Greedy decode of a static batch as serving engines run it: fixed buffers, one CUDA graph per batch size.

A decode step launches hundreds of small kernels per token; launched one by one from Python, a GPU
at small batch sizes waits on the host more than it computes. Serving engines (vLLM, SGLang,
gpt-fast) capture the step into a CUDA graph and replay it: one launch per token. A graph replays
fixed addresses with fixed arguments, so everything a step reads lives in a buffer allocated once
(the KV cache, the input tokens, the positions) and everything that changes from one token to the
next changes on the device, inside the graph: the step writes its greedy next tokens into the token
buffer and advances the positions buffer, from which the rotary tables, the cache rows written and
the attention lengths are indexed. The buffers hold the largest batch; each batch size gets its own
graph over their first rows, as vLLM captures one graph per batch size.

The prompt's prefill stays eager (one forward over the whole prompt: its launches are amortised over
its positions). The eager mode runs the very same step without a graph, on a CPU or when asked for on
a GPU, so both modes compute the same tokens.

`StepTimes` times each step of a decode call (the inter-token latency of every sequence in the batch)
without a host synchronisation inside the call: on a GPU a CUDA event on the stream between replays.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from wattbench.cuda import capture_graph
from wattbench.device import Device
from wattbench.models.ops import Ops
from wattbench.models.transformer import KVCache, Transformer

#: How a decoder runs its steps: the value of a record's `decode` field.
DECODE_MODES = ("cuda_graph", "eager")
#: How StepTimes takes a step's time, by device type: the value of a record's `itl_method` field.
ITL_METHODS = {"cuda": "cuda_event", "cpu": "perf_counter"}


class StepTimes:
    """The time of every step of the decode calls it is given to (`StaticDecoder.decode(steps, times)`).

    A step makes one token for every sequence of the batch, so its time is each sequence's inter-token
    latency. Each call is timed from its first step's start to its last step's end (what happens between
    calls, `start`'s copies and the L2 flush before a round, is no step's). On a GPU ("cuda_event") a CUDA
    event is recorded on the current stream before the first step and after each, graph replay or eager
    launches alike: the device's time between consecutive tokens, read once in `seconds()`, so no step
    waits for the host (an event record costs the host about a microsecond per token, inside the call).
    On a CPU ("perf_counter") the host clock after each step: a CPU's torch operations are synchronous.
    """

    def __init__(self, device: Device):
        self.on_cuda = device.type == "cuda"
        self.method = ITL_METHODS["cuda" if self.on_cuda else "cpu"]
        self._calls: list[list] = []

    def _mark(self):
        if not self.on_cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def begin_call(self) -> None:
        self._calls.append([self._mark()])

    def step_done(self) -> None:
        self._calls[-1].append(self._mark())

    def seconds(self) -> list[float]:
        """Every step's time, in order (on a GPU, after waiting for the last step's event)."""
        if self.on_cuda:
            if self._calls:
                self._calls[-1][-1].synchronize()
            return [start.elapsed_time(end) / 1e3 for call in self._calls for start, end in zip(call, call[1:])]
        return [end - start for call in self._calls for start, end in zip(call, call[1:])]


class StaticDecoder:
    """Decodes batches of one of `batch_sizes` from a KV cache and input buffers of the largest.

    `prefill(prompt)` (or `start(tokens, position)`) sets where decoding starts; `decode(steps)` then
    generates `steps` greedy tokens per sequence: `steps` replays of the batch size's graph, or
    `steps` eager calls of the same step. In "cuda_graph" mode the graphs are captured here, on
    `device` with it current; capture's warm-up runs the step (writing cache rows at the positions
    the buffers hold then, and advancing them), so no decoding starts before `start` sets the buffers.
    """

    def __init__(self, model: Transformer, ops: Ops, device: Device, batch_sizes: Sequence[int], mode: str,
                 decode_fn: Callable | None = None):
        """`decode_fn` stands for `model.decode` in the step (the compiled impl passes it compiled)."""
        if mode not in DECODE_MODES:
            raise ValueError(f"decode mode {mode!r}: choose one of {DECODE_MODES}")
        if mode == "cuda_graph" and device.type != "cuda":
            raise ValueError(f"CUDA graph decode needs a CUDA device, got {device.spec}")
        self.model, self.ops, self.device, self.mode = model, ops, device, mode
        self.decode_fn = decode_fn or model.decode
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        where, largest = model.embed.device, self.batch_sizes[-1]
        self.cache = KVCache(model.config, largest, model.embed.dtype, where)
        self.tokens = torch.zeros(largest, dtype=torch.long, device=where)
        self.positions = torch.zeros(largest, dtype=torch.long, device=where)
        self.batch: int | None = None
        #: The host's count of where the batch's sequences are (all at one position), to refuse a full
        #: cache without reading the positions buffer back.
        self.position: int | None = None
        self._logits: dict[int, torch.Tensor] = {}
        self._calls: dict[int, Callable[[], None]] = {batch: self._step(batch) for batch in self.batch_sizes}
        if mode == "cuda_graph":
            with device.current():
                self._calls = {batch: capture_graph(step, device.index) for batch, step in self._calls.items()}

    def _step(self, batch: int) -> Callable[[], None]:
        """One token for the first `batch` sequences, reading and advancing the buffers on the device."""
        tokens, positions, cache = self.tokens[:batch], self.positions[:batch], self.cache.first(batch)

        def step():
            with torch.no_grad():
                logits = self.decode_fn(tokens, cache, self.ops, positions=positions)
                tokens.copy_(logits.argmax(-1))
                positions.add_(1)
            self._logits[batch] = logits  # under capture: the graph's own output, rewritten by each replay

        return step

    def _check_batch(self, batch: int) -> None:
        if batch not in self.batch_sizes:
            raise ValueError(f"batch {batch}: this decoder runs batch sizes {self.batch_sizes}")

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Eager forward of `prompt` (B, P) into the first B sequences' cache rows [0, P); decoding then
        starts from its greedy next tokens at position P. Returns the last position's logits (B, vocab)."""
        self._check_batch(prompt.shape[0])
        with torch.no_grad(), self.device.current():
            logits = self.model(prompt, self.ops, self.cache.first(prompt.shape[0]), last_only=True)
            self.start(logits.argmax(-1), prompt.shape[1])
        return logits

    def start(self, tokens: torch.Tensor, position: int) -> None:
        """Decode next from `tokens` (B,) at `position`, for B sequences whose cache rows before it are
        filled (as `prefill` leaves them). Device copies only: the timed step of a benchmark can call it."""
        self._check_batch(tokens.shape[0])
        if not 0 <= position < self.model.config.max_seq:
            raise ValueError(f"position {position} is outside the cache's {self.model.config.max_seq} positions")
        batch = tokens.shape[0]
        self.tokens[:batch].copy_(tokens)
        self.positions[:batch].fill_(position)
        self.batch, self.position = batch, position

    def decode(self, steps: int, times: StepTimes | None = None) -> torch.Tensor:
        """`steps` greedy tokens per sequence, each step timed into `times` if given; returns the last step's
        logits (batch, vocab), which in graph mode is the graph's output buffer (the next replay rewrites it)."""
        if self.batch is None:
            raise RuntimeError("decode: call prefill() or start() first")
        if steps < 1 or self.position + steps > self.model.config.max_seq:
            raise ValueError(f"decode: {steps} steps from position {self.position} do not fit the cache's "
                             f"{self.model.config.max_seq} positions")
        call = self._calls[self.batch]
        with self.device.current():
            if times is not None:
                times.begin_call()
            for _ in range(steps):
                call()
                if times is not None:
                    times.step_done()
        self.position += steps
        return self._logits[self.batch]

    @property
    def next_tokens(self) -> torch.Tensor:
        """The tokens the next step reads: the greedy choice of the last step (or those `start` was given)."""
        return self.tokens[:self.batch]
