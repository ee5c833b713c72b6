"""Device detection and the Triton interpreter switch."""

from types import SimpleNamespace

import pytest
import torch

from wattbench import device as devices
from wattbench.errors import UsageError


def test_cpu_is_detected_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    found = devices.detect()
    assert (found.type, found.index, found.spec) == ("cpu", None, "cpu")
    assert found.name == devices.cpu_model()


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", ""])
def test_unknown_device_names_are_refused(spec):
    with pytest.raises(UsageError, match="unknown device"):
        devices.detect(spec)


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="torch sees no CUDA device"):
        devices.detect("cuda")


def test_cuda_devices_are_found_by_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
        name=f"NVIDIA H100 80GB HBM3 #{i}", uuid=f"0000000{i}-1111-2222-3333-444444444444"))
    assert devices.detect().spec == "cuda:0"
    second = devices.detect("CUDA:1")
    assert (second.type, second.index, second.name) == ("cuda", 1, "NVIDIA H100 80GB HBM3 #1")
    assert second.uuid == "00000001-1111-2222-3333-444444444444"  # what NVML is asked for, with its prefix
    assert second.slug == "nvidia-h100-80gb-hbm3-1"
    with pytest.raises(UsageError, match="has 2 CUDA device"):
        devices.detect("cuda:2")


def test_interpreter_is_chosen_only_without_gpu_and_without_user_choice(monkeypatch):
    monkeypatch.delenv(devices.INTERPRET_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    devices.enable_triton_interpreter_without_gpu()
    assert not devices.triton_interpreted()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    devices.enable_triton_interpreter_without_gpu()
    assert devices.triton_interpreted()
    monkeypatch.setenv(devices.INTERPRET_ENV, "0")
    devices.enable_triton_interpreter_without_gpu()
    assert not devices.triton_interpreted()


def test_kernels_run_interpreted_on_this_cpu_machine():
    from wattbench.kernels import INTERPRETED

    assert INTERPRETED == (not torch.cuda.is_available())
