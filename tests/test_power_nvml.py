"""NVML behind a faked pynvml boundary (autospec of the real module, real error classes and codes)."""

from unittest import mock

import pynvml
import pytest

from wattbench.device import Device
from wattbench.power import nvml
from wattbench.power.base import SensorFault

GPU = Device("cuda", 0, "NVIDIA H100 80GB HBM3")


def field(value_mw: int, ret: int = pynvml.NVML_SUCCESS) -> pynvml.c_nvmlFieldValue_t:
    result = pynvml.c_nvmlFieldValue_t()
    result.fieldId = pynvml.NVML_FI_DEV_POWER_INSTANT
    result.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    result.value.uiVal = value_mw
    result.nvmlReturn = ret
    return result


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with mock.patch.object(nvml, "pynvml", autospec=True) as fake:
        fake.nvmlDeviceGetName.return_value = "NVIDIA H100 80GB HBM3"
        fake.nvmlDeviceGetTotalEnergyConsumption.return_value = 123_456
        fake.nvmlDeviceGetFieldValues.return_value = [field(250_000)]
        fake.nvmlDeviceGetPowerUsage.return_value = 240_000
        fake.nvmlDeviceGetEnforcedPowerLimit.return_value = 700_000
        yield fake


def error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def test_counter_is_primary_and_instant_is_polled_beside_it(fake):
    found = nvml.probe(GPU)
    assert found.status.available
    assert [(c.method, c.scope) for c in found.channels] == [("counter", "GPU board"), ("instant", "GPU")]
    assert found.primary == found.channels[:1]
    assert found.channels[0].read() == pytest.approx(123.456)
    assert found.channels[1].read() == pytest.approx(250.0)
    assert found.info["power_limit_w"] == pytest.approx(700.0)
    fake.nvmlDeviceGetPowerUsage.assert_not_called()  # a 1 s average is a last resort only
    found.close()
    fake.nvmlShutdown.assert_called_once()


def test_missing_library_is_explained(fake):
    fake.nvmlInit.side_effect = error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    status = nvml.probe(GPU).status
    assert not status.available and "libnvidia-ml.so" in status.detail and "not found" in status.detail


def test_cpu_device_is_not_an_nvml_device(fake):
    status = nvml.probe(Device("cpu", None, "CPU")).status
    assert not status.available and "NVIDIA GPUs" in status.detail
    fake.nvmlShutdown.assert_called_once()


def test_unsupported_counter_falls_back_to_instant_power(fake):
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    found = nvml.probe(GPU)
    assert [c.method for c in found.primary] == ["instant"]
    assert "Volta or newer" in found.status.detail


def test_only_the_rolling_average_is_labelled_as_a_last_resort(fake):
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake.nvmlDeviceGetFieldValues.return_value = [field(0, ret=pynvml.NVML_ERROR_NOT_SUPPORTED)]
    found = nvml.probe(GPU)
    (channel,) = found.channels
    assert channel.method == "average" and "1 s rolling average" in channel.note
    assert channel.read() == pytest.approx(240.0)


def test_grace_hopper_falls_back_to_module_scope(fake):
    fake.nvmlDeviceGetName.return_value = "NVIDIA GH200 480GB"
    fake.nvmlDeviceGetFieldValues.side_effect = lambda handle, ids: [
        field(0, ret=pynvml.NVML_ERROR_NOT_SUPPORTED) if ids[0][1] == pynvml.NVML_POWER_SCOPE_GPU else field(600_000)]
    found = nvml.probe(GPU)
    assert all(c.scope.startswith("module") for c in found.channels)


def test_no_permission_is_explained(fake):
    fake.nvmlDeviceGetHandleByIndex.side_effect = error(pynvml.NVML_ERROR_NO_PERMISSION)
    status = nvml.probe(GPU).status
    assert not status.available and "permission denied" in status.detail
    assert f"NVML error {pynvml.NVML_ERROR_NO_PERMISSION}" in status.detail


def test_gpu_lost_mid_run_is_a_permanent_fault_and_a_timeout_is_not(fake):
    counter, instant = nvml.probe(GPU).channels
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = error(pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(SensorFault) as lost:
        counter.read()
    assert lost.value.permanent and "GPU is lost" in lost.value.reason
    fake.nvmlDeviceGetFieldValues.return_value = [field(0, ret=pynvml.NVML_ERROR_TIMEOUT)]
    with pytest.raises(SensorFault) as slow:
        instant.read()
    assert not slow.value.permanent and "timed out" in slow.value.reason


def test_cuda_visible_devices_maps_torch_indices_to_nvml(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-abc")
    nvml.probe(Device("cuda", 0, "x"))
    fake.nvmlDeviceGetHandleByIndex.assert_called_with(3)
    nvml.probe(Device("cuda", 1, "x"))
    fake.nvmlDeviceGetHandleByUUID.assert_called_with("GPU-abc")
    assert not nvml.probe(Device("cuda", 2, "x")).status.available
