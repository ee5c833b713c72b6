"""What every power source hands the sampler: status, channels, and the fault it may raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: Methods, best first: a cumulative counter beats sampled power, which beats a rolling average.
METHODS = ("counter", "instant", "average", "replay")


@dataclass(frozen=True)
class SourceStatus:
    name: str
    available: bool
    detail: str


class SensorFault(Exception):
    """A reading failed. `permanent` faults (device lost, permission) stop the channel's polling."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Channel:
    """One quantity a source measures.

    A `counter` channel's `read` returns cumulative joules (already unwrapped); the other
    methods return watts. Polled channels have `read`; file-backed ones (replay) have `load`,
    returning (timestamps on the perf_counter clock, watts); a channel with neither only
    describes readings recorded elsewhere (the self-check's simulated ones).
    """

    name: str
    source: str
    method: str
    scope: str
    read: Callable[[], float] | None = None
    load: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    #: How long readings lag the true power (sensor averaging window plus update period).
    settle_s: float = 0.0
    #: Smallest step of a reading: joules for a counter, watts otherwise.
    resolution: float = 0.0
    note: str = ""
    #: The one device this channel reads (e.g. "nvml:0"): a counter and an instant channel with
    #: the same sensor measure the same device, and their energies are cross-checked.
    sensor: str | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.read is not None and self.load is not None:
            raise ValueError(f"channel {self.name!r} is either polled (read) or loaded (load), not both")

    @property
    def is_counter(self) -> bool:
        return self.method == "counter"

    def describe(self) -> dict:
        return {"channel": self.name, "source": self.source, "method": self.method, "scope": self.scope,
                **({"note": self.note} if self.note else {})}


@dataclass
class Probe:
    """What probing one source found for one device.

    `channels` are all that will be sampled; `primary` are those whose sum is the device's
    energy (empty when the source measures something else, e.g. RAPL beside a GPU).
    """

    status: SourceStatus
    channels: list[Channel] = field(default_factory=list)
    primary: list[Channel] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None
