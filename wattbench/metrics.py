"""Latency and utilisation metrics, with their formulas written next to them (tools disagree on names).

Definitions follow vLLM's `bench serve` and NVIDIA AIPerf:
- TTFT: request start to first generated token.
- E2E: request start to last generated token.
- TPOT (per request) = (E2E − TTFT) / (output tokens − 1).
- ITL: every gap between consecutive tokens, pooled over all requests (a token-level tail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wattbench.specs import SpecTable, load_specs

FORMULAS = {
    "ttft_ms": "first token time − request start",
    "tpot_ms": "(E2E − TTFT) / (output tokens − 1), per request",
    "itl_ms": "every gap between consecutive tokens, pooled over requests",
    "e2e_ms": "last token time − request start",
}
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class RequestTiming:
    """One request's timeline on the host's monotonic clock, device-synchronised at every token."""

    start_s: float
    token_times_s: tuple[float, ...]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_percentiles(values_s: list[float]) -> dict | None:
    """p50/p90/p99 in milliseconds, or None when there is nothing to summarise."""
    if not values_s:
        return None
    return {f"p{q}": percentile(values_s, q) * 1e3 for q in PERCENTILES}


def latency_metrics(requests: list[RequestTiming]) -> dict:
    """TTFT, TPOT, ITL and E2E percentiles (ms) over requests, with each formula beside it."""
    ttft = [r.token_times_s[0] - r.start_s for r in requests if r.token_times_s]
    e2e = [r.token_times_s[-1] - r.start_s for r in requests if r.token_times_s]
    tpot = [(r.token_times_s[-1] - r.token_times_s[0]) / (len(r.token_times_s) - 1)
            for r in requests if len(r.token_times_s) > 1]
    itl = [later - earlier for r in requests for earlier, later in zip(r.token_times_s, r.token_times_s[1:])]
    return {"ttft_ms": latency_percentiles(ttft), "tpot_ms": latency_percentiles(tpot),
            "itl_ms": latency_percentiles(itl),
            "e2e_ms": latency_percentiles(e2e), "requests": len(requests), "formulas": FORMULAS}


MFU_FORMULA = ("model FLOPs per second (6N + 12·L·H·Q·T per token, PaLM appendix B) / the device's dense peak "
               "FLOP/s for the precision, from the spec table")


def model_flops_utilization(achieved_tflops: float | None, device_name: str, precision: str,
                            interpreted: bool, specs: SpecTable | None = None) -> dict:
    """MFU of a training-style model record, or None with the reason it cannot be given.

    `specs` is the spec table to take the peak from (default: the shipped one)."""
    if interpreted or achieved_tflops is None:
        return {"mfu": None, "mfu_reason": "no meaningful timing (Triton interpreter)" if interpreted
                else "no timing"}
    spec = (specs or load_specs()).find(device_name)
    peak = spec.peak_for(precision) if spec else None
    if not peak:
        return {"mfu": None, "mfu_reason": f"no {precision} peak for {device_name!r} in the spec table"}
    return {"mfu": achieved_tflops / peak, "mfu_peak_tflops": peak, "mfu_formula": MFU_FORMULA}
