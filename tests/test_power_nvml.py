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


# -- environment facts and window conditions ----------------------------------------------

@pytest.fixture
def h100(fake):
    """The fake answers what an H100 SXM with persistence on, MIG off and ECC on would."""
    memory = pynvml.c_nvmlMemory_t()
    memory.total = 80 * 2**30
    fake.nvmlDeviceGetUUID.return_value = "GPU-2f6b8a1e-0000-4c1d-9a3e-1234567890ab"
    fake.nvmlDeviceGetMemoryInfo.return_value = memory
    fake.nvmlSystemGetDriverVersion.return_value = "550.54.15"
    fake.nvmlSystemGetCudaDriverVersion_v2.return_value = 12040
    fake.nvmlDeviceGetPowerManagementLimit.return_value = 650_000
    fake.nvmlDeviceGetPowerManagementDefaultLimit.return_value = 700_000
    fake.nvmlDeviceGetPersistenceMode.return_value = pynvml.NVML_FEATURE_ENABLED
    fake.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
    fake.nvmlDeviceGetEccMode.return_value = [pynvml.NVML_FEATURE_ENABLED, pynvml.NVML_FEATURE_ENABLED]
    fake.nvmlDeviceGetApplicationsClock.side_effect = lambda h, clock: {pynvml.NVML_CLOCK_SM: 1755,
                                                                         pynvml.NVML_CLOCK_MEM: 2619}[clock]
    fake.nvmlDeviceGetMaxClockInfo.side_effect = lambda h, clock: {pynvml.NVML_CLOCK_SM: 1980,
                                                                    pynvml.NVML_CLOCK_MEM: 2619}[clock]
    fake.nvmlDeviceGetCurrPcieLinkGeneration.return_value = 5
    fake.nvmlDeviceGetMaxPcieLinkGeneration.return_value = 5
    fake.nvmlDeviceGetCurrPcieLinkWidth.return_value = 16
    fake.nvmlDeviceGetMaxPcieLinkWidth.return_value = 16
    fake.nvmlDeviceGetTemperature.return_value = 41
    fake.nvmlDeviceGetClockInfo.side_effect = lambda h, clock: {pynvml.NVML_CLOCK_SM: 1980,
                                                                 pynvml.NVML_CLOCK_MEM: 2619}[clock]
    fake.nvmlDeviceGetCurrentClocksEventReasons.return_value = pynvml.nvmlClocksEventReasonGpuIdle
    return fake


def test_gpu_facts_are_read_and_nvml_is_released(h100):
    facts = nvml.gpu_facts(GPU)
    assert facts == {
        "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-2f6b8a1e-0000-4c1d-9a3e-1234567890ab",
        "memory_bytes": 80 * 2**30, "driver_version": "550.54.15", "cuda_driver_version": "12.4",
        "power_limit_w": 650.0, "power_limit_default_w": 700.0, "power_limit_enforced_w": 700.0,
        "persistence_mode": "enabled", "mig_mode": "disabled", "ecc_mode": "enabled",
        "application_clock_sm_mhz": 1755, "application_clock_mem_mhz": 2619,
        "max_clock_sm_mhz": 1980, "max_clock_mem_mhz": 2619,
        "pcie_gen_current": 5, "pcie_gen_max": 5, "pcie_width_current": 16, "pcie_width_max": 16,
    }
    assert h100.nvmlInit.call_count == h100.nvmlShutdown.call_count == 1


def test_each_missing_gpu_fact_is_unknown_with_its_own_reason(h100):
    h100.nvmlDeviceGetMigMode.side_effect = error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    h100.nvmlDeviceGetPowerManagementDefaultLimit.side_effect = error(pynvml.NVML_ERROR_NO_PERMISSION)
    h100.nvmlDeviceGetApplicationsClock.side_effect = error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    facts = nvml.gpu_facts(GPU)
    assert facts["mig_mode"] == {"unknown": True, "reason": "MIG mode: not supported on this GPU (NVML error 3)"}
    assert facts["power_limit_default_w"]["unknown"]
    assert "permission denied" in facts["power_limit_default_w"]["reason"]
    assert all(facts[k]["unknown"] for k in ("application_clock_sm_mhz", "application_clock_mem_mhz"))
    assert facts["name"] == "NVIDIA H100 80GB HBM3" and facts["power_limit_w"] == 650.0  # the rest is still read


@pytest.mark.parametrize("break_nvml, device, reason", [
    (lambda fake: setattr(fake.nvmlInit, "side_effect", error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)), GPU,
     "libnvidia-ml.so"),
    (lambda fake: setattr(fake.nvmlDeviceGetHandleByIndex, "side_effect", error(pynvml.NVML_ERROR_NO_PERMISSION)),
     GPU, "permission denied"),
    (lambda fake: None, Device("cpu", None, "CPU"), "the run's device is cpu"),
])
def test_gpu_facts_are_all_unknown_when_no_gpu_can_be_read(h100, break_nvml, device, reason):
    break_nvml(h100)
    facts = nvml.gpu_facts(device)
    assert set(facts) == set(nvml.GPU_FACTS)
    assert all(value["unknown"] and reason in value["reason"] for value in facts.values())


def test_clock_event_names_match_nvml_bits():
    from wattbench.conditions import CLOCK_EVENTS

    names = {"gpu_idle": "GpuIdle", "applications_clocks_setting": "ApplicationsClocksSetting",
             "sw_power_cap": "SwPowerCap", "hw_slowdown": "HwSlowdown", "sync_boost": "SyncBoost",
             "sw_thermal_slowdown": "SwThermalSlowdown", "hw_thermal_slowdown": "HwThermalSlowdown",
             "hw_power_brake_slowdown": "HwPowerBrakeSlowdown", "display_clock_setting": "DisplayClockSetting",
             "board_limit": "BoardLimit", "reliability": "Reliability"}
    for bit, (name, _) in CLOCK_EVENTS.items():
        assert getattr(pynvml, "nvmlClocksThrottleReason" + names[name]) == bit


def test_condition_sensors_read_temperature_clocks_and_clock_events(h100):
    sensors = nvml.condition_sensors(GPU)
    assert sensors.missing == {}
    assert [sensors.read(q) for q in ("temperature_c", "sm_clock_mhz", "mem_clock_mhz", "clock_events")] == \
        [41, 1980, 2619, pynvml.nvmlClocksEventReasonGpuIdle]
    h100.nvmlDeviceGetTemperature.side_effect = error(pynvml.NVML_ERROR_TIMEOUT)
    assert sensors.read("temperature_c") is None  # one failed reading is a gap, not an exception
    h100.nvmlShutdown.assert_not_called()
    sensors.close()
    h100.nvmlShutdown.assert_called_once()


def test_clock_events_fall_back_to_the_throttle_reasons_call(h100):
    h100.nvmlDeviceGetCurrentClocksThrottleReasons.return_value = pynvml.nvmlClocksThrottleReasonSwPowerCap
    h100.nvmlDeviceGetCurrentClocksEventReasons.side_effect = error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    assert nvml.condition_sensors(GPU).read("clock_events") == pynvml.nvmlClocksThrottleReasonSwPowerCap
    del h100.nvmlDeviceGetCurrentClocksEventReasons  # bindings older than the rename
    assert nvml.condition_sensors(GPU).read("clock_events") == pynvml.nvmlClocksThrottleReasonSwPowerCap


def test_unreadable_conditions_are_missing_with_the_reason(h100):
    h100.nvmlDeviceGetTemperature.side_effect = error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    h100.nvmlDeviceGetCurrentClocksEventReasons.side_effect = error(pynvml.NVML_ERROR_NO_PERMISSION)
    sensors = nvml.condition_sensors(GPU)
    assert set(sensors.readers) == {"sm_clock_mhz", "mem_clock_mhz"}
    assert "not supported" in sensors.missing["temperature_c"]
    assert "permission denied" in sensors.missing["clock_events"]
    assert "NVIDIA GPUs" in nvml.condition_sensors(Device("cpu", None, "CPU")).why_unavailable()
    h100.nvmlInit.side_effect = error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    nothing = nvml.condition_sensors(GPU)
    assert nothing.readers == {} and "driver is not loaded" in nothing.why_unavailable()
