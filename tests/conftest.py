"""Fixtures shared by the tests of several modules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def described_gpu(monkeypatch):
    """`described_gpu(capability, shared)`: torch.cuda describing a GPU of that compute capability and opt-in
    shared memory per block (bytes), as the kernels' device checks and config pruners read it
    (wattbench.kernels.targets.device_limits), for the rest of the test."""
    import torch

    from wattbench.kernels import targets

    def describe(capability: tuple[int, int], shared: int) -> None:
        props = SimpleNamespace(major=capability[0], minor=capability[1], multi_processor_count=100,
                                shared_memory_per_block_optin=shared)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
        targets.device_limits.cache_clear()
    yield describe
    targets.device_limits.cache_clear()
