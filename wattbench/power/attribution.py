"""Energy per request and per phase of a served stream, from one power trace and the server's step log.

A sensor sees the whole device; a server runs many requests on it at once. The rule used here (the
one vLLM and MLPerf users ask for, and the simplest that adds up):

1. The window's energy is cut at the server's step boundaries. Each engine step (a prefill of one
   request, one decode iteration of every running request) owns the energy of its own interval
   `[start_s, end_s]`, clipped to the window.
2. A step's energy is shared among its requests by the tokens each one had processed in it: a
   prefill's whole energy goes to its request (phase `prefill`), a decode iteration's is split
   equally among the requests it gave a token (phase `decode`).
3. Everything else in the window -- the host's scheduling between steps, sleeping for arrivals --
   is `between_steps`: reported on its own, never hidden in a request's share.

So `sum(per request) + between_steps == window energy` (to float rounding), whatever the trace.
A request whose steps did not all fall inside the window is `partial`: its energy is counted in the
phase totals, but it gets no per-request figure (it would be an undercount).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from wattbench.power.integrate import counter_updates

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class EngineStep:
    """One synchronised engine call: when it ran (the trace's clock) and the tokens each request processed."""

    start_s: float
    end_s: float
    phase: str
    tokens: Mapping[int, int]

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        if not self.start_s <= self.end_s:
            raise ValueError(f"a step ends before it starts: [{self.start_s}, {self.end_s}]")
        if not self.tokens or min(self.tokens.values()) < 1:
            raise ValueError(f"a step needs at least one request with at least one token, got {dict(self.tokens)}")


@dataclass(frozen=True)
class RequestEnergy:
    request: int
    prefill_j: float
    decode_j: float
    output_tokens: int

    @property
    def joules(self) -> float:
        return self.prefill_j + self.decode_j

    @property
    def joules_per_output_token(self) -> float:
        return self.joules / self.output_tokens


@dataclass(frozen=True)
class Attribution:
    window_j: float
    phase_j: Mapping[str, float]
    between_steps_j: float
    requests: tuple[RequestEnergy, ...]
    partial_requests: int

    @classmethod
    def total(cls, windows: Sequence["Attribution"]) -> "Attribution":
        """Several energy windows' attributions as one: energies added, the requests of every window pooled."""
        return cls(window_j=sum(w.window_j for w in windows),
                   phase_j={phase: sum(w.phase_j[phase] for w in windows) for phase in PHASES},
                   between_steps_j=sum(w.between_steps_j for w in windows),
                   requests=tuple(r for w in windows for r in w.requests),
                   partial_requests=sum(w.partial_requests for w in windows))

    def as_dict(self) -> dict:
        """The record's `energy_attribution` block: medians and p90 over the window's complete requests."""
        block = {"rule": "step energy shared by tokens processed; scheduling and idle time between steps "
                         "kept apart (docs/power.md)",
                 "window_j": self.window_j, "between_steps_j": self.between_steps_j,
                 **{f"{phase}_j": self.phase_j[phase] for phase in PHASES},
                 "requests": len(self.requests), "partial_requests": self.partial_requests}
        if self.requests:
            for name, values in (("j_per_request", [r.joules for r in self.requests]),
                                 ("j_per_output_token", [r.joules_per_output_token for r in self.requests]),
                                 ("prefill_share", [r.prefill_j / r.joules if r.joules else 0.0
                                                    for r in self.requests])):
                block[f"{name}_median"] = statistics.median(values)
                block[f"{name}_p90"] = float(np.percentile(values, 90))
        return block


def cumulative_energy(timestamps_s: Sequence[float], values: Sequence[float], is_counter: bool
                      ) -> Callable[[float], float]:
    """J spent from the first reading to time t, from sampled power (trapezoids) or a polled counter
    (linear between its updates): differences of one cumulative curve add up exactly."""
    times = np.asarray(timestamps_s, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64)
    if is_counter:
        knot_times, knot_joules = counter_updates(times, vals)
    else:
        knot_times = times
        knot_joules = np.concatenate(([0.0], np.cumsum(np.diff(times) * (vals[1:] + vals[:-1]) / 2)))
    if len(knot_times) < 2:
        raise ValueError("need at least two readings (counter updates) to attribute energy")

    def at(t: float) -> float:
        if not knot_times[0] <= t <= knot_times[-1]:
            raise ValueError(f"t={t:.6g} s is outside the readings [{knot_times[0]:.6g}, {knot_times[-1]:.6g}] s")
        if is_counter:
            return float(np.interp(t, knot_times, knot_joules))
        i = int(np.clip(np.searchsorted(knot_times, t, side="right") - 1, 0, len(knot_times) - 2))
        watts_at_t = np.interp(t, times, vals)
        return float(knot_joules[i] + (t - times[i]) * (vals[i] + watts_at_t) / 2)

    return at


def attribute(steps: Sequence[EngineStep], energy_at: Callable[[float], float], start_s: float, end_s: float,
              finished: Mapping[int, int]) -> Attribution:
    """Share the energy of [start_s, end_s] among requests and phases by the rule in the module docstring.

    `finished` maps each request that got its last token to its number of output tokens; it gets a
    per-request figure when all its steps lie inside the window. Requests that still ran, or ran partly
    outside the window, are `partial`; steps wholly outside the window are ignored."""
    if not start_s < end_s:
        raise ValueError(f"start_s must be before end_s, got [{start_s}, {end_s}]")
    window_j = energy_at(end_s) - energy_at(start_s)
    phase_j = dict.fromkeys(PHASES, 0.0)
    shares: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(PHASES, 0.0))
    partial: set[int] = set()
    previous_end = -np.inf
    for step in sorted(steps, key=lambda s: s.start_s):
        if step.start_s < previous_end:
            raise ValueError(f"steps overlap at {step.start_s:.6g} s: the engine runs one step at a time")
        previous_end = step.end_s
        if step.start_s < start_s or step.end_s > end_s:
            partial.update(step.tokens)
        if step.end_s <= start_s or step.start_s >= end_s:
            continue
        joules = energy_at(min(step.end_s, end_s)) - energy_at(max(step.start_s, start_s))
        phase_j[step.phase] += joules
        total_tokens = sum(step.tokens.values())
        for request, tokens in step.tokens.items():
            shares[request][step.phase] += joules * tokens / total_tokens
    partial = (partial | (set(shares) - set(finished))) & set(shares)
    complete = tuple(RequestEnergy(request, share["prefill"], share["decode"], finished[request])
                     for request, share in sorted(shares.items()) if request not in partial)
    return Attribution(window_j, phase_j, window_j - sum(phase_j.values()), complete, len(partial))
