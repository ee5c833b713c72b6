"""Fixtures shared by the tests of several modules."""

from __future__ import annotations

import copy
import functools
import os
import signal
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_not_ignored():
    """Ctrl-C as a terminal delivers it, for the tests that send SIGINT to themselves or to the runs they start.
    A shell starts a background job (`pytest &`, and CI runners that do the same) with SIGINT ignored, which its
    children inherit and wattbench rightly leaves ignored; those tests would then see no interruption at all."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session", autouse=True)
def child_bytecode_cache(tmp_path_factory):
    """Python processes the tests start (wattbench runs, pytest sessions, spawned compile workers) share one
    bytecode cache in the session's temporary folder. With PYTHONDONTWRITEBYTECODE set, each of them would compile
    wattbench, pytest's assertion rewrite of it and everything they import from source again (seconds apiece);
    the source tree stays free of __pycache__ either way. This process is not affected (Python reads both at start)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PYTHONDONTWRITEBYTECODE")
        patch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.mktemp("pycache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def cpu_facts_read_once():
    """pytest-benchmark asks py-cpuinfo for the CPU's facts at the start of every pytest session, and py-cpuinfo
    runs a Python process of its own for each answer (a second apiece): the sessions tests run in this process
    (sweeps, in-process `wattbench run`) get a copy of the first answer."""
    import cpuinfo

    first = functools.cache(cpuinfo.get_cpu_info)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpuinfo, "get_cpu_info", lambda: copy.deepcopy(first()))
        yield


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


@pytest.fixture
def gpu(tmp_path, monkeypatch):
    """tests/fake_knobs.py's fake GPU behind pynvml for the rest of the test, the knob state file (what a sweep
    must put back) in the test's own folder."""
    from fake_knobs import fake_gpu_nvml

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with fake_gpu_nvml(tmp_path / "gpu.json") as fake_gpu:
        yield fake_gpu
