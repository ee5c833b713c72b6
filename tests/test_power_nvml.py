"""NVML behind a faked pynvml boundary (autospec of the real module, real error classes and codes)."""

import threading
import time

import pynvml
import pytest
from fake_nvml import error, fake_pynvml, field

from wattbench.device import Device
from wattbench.power import nvml
from wattbench.power.base import SensorFault

UUID = "2f6b8a1e-0000-4c1d-9a3e-1234567890ab"
GPU = Device("cuda", 0, "NVIDIA H100 80GB HBM3", UUID)


@pytest.fixture
def fake(monkeypatch):
    """One whole H100 (MIG off), found by its UUID."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with fake_pynvml(monkeypatch) as fake:
        yield fake


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
    fake.nvmlDeviceGetHandleByUUID.side_effect = error(pynvml.NVML_ERROR_NO_PERMISSION)
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


# -- which GPU: by UUID, MIG slices ---------------------------------------------------------

FAST_GPU, SLOW_GPU = "aaaaaaaa-1111-2222-3333-444444444444", "bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture
def two_gpus(fake):
    """Two GPUs in PCI order (slow first); each handle's counter says which GPU it is."""
    handles = {"GPU-" + SLOW_GPU: "pci0-slow", "GPU-" + FAST_GPU: "pci1-fast"}
    energy_mj = {"pci0-slow": 1_000, "pci1-fast": 2_000}

    def by_uuid(uuid):
        if uuid not in handles:
            raise error(pynvml.NVML_ERROR_NOT_FOUND)
        return handles[uuid]
    fake.nvmlDeviceGetHandleByUUID.side_effect = by_uuid
    fake.nvmlDeviceGetHandleByIndex.side_effect = lambda i: ["pci0-slow", "pci1-fast"][i]
    fake.nvmlDeviceGetCount.return_value = 2
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = lambda handle: energy_mj[handle]
    return fake


@pytest.mark.parametrize("order, visible", [(None, None), ("FASTEST_FIRST", None), (None, "1,0"),
                                            (None, "GPU-aaaa,GPU-bbbb"), ("PCI_BUS_ID", "GPU-aa")])
def test_the_benchmarked_gpu_is_found_by_its_uuid_whatever_cuda_numbers_it(two_gpus, monkeypatch, order, visible):
    """CUDA's cuda:0 is the fast GPU (fastest first, or through CUDA_VISIBLE_DEVICES); NVML's index 0
    is the slow one: the energy must be the fast GPU's."""
    for name, value in (("CUDA_DEVICE_ORDER", order), ("CUDA_VISIBLE_DEVICES", visible)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    found = nvml.probe(Device("cuda", 0, "NVIDIA H100 80GB HBM3", FAST_GPU))
    assert found.channels[0].read() == pytest.approx(2.0)
    two_gpus.nvmlDeviceGetHandleByUUID.assert_called_with("GPU-" + FAST_GPU)
    two_gpus.nvmlDeviceGetHandleByIndex.assert_not_called()


def test_without_a_uuid_the_gpu_is_not_guessed(two_gpus):
    status = nvml.probe(Device("cuda", 1, "NVIDIA H100 80GB HBM3")).status
    assert not status.available and "no UUID" in status.detail and "NVML sees 2 GPUs" in status.detail
    two_gpus.nvmlDeviceGetHandleByIndex.assert_not_called()


def test_without_a_uuid_the_only_gpu_of_the_host_is_used(two_gpus):
    two_gpus.nvmlDeviceGetCount.return_value = 1
    found = nvml.probe(Device("cuda", 0, "NVIDIA H100 80GB HBM3"))
    assert found.status.available and found.channels[0].read() == pytest.approx(1.0)


SLICE = "cccccccc-1111-2222-3333-444444444444"
SLICE_NAME = "NVIDIA H100 80GB HBM3 MIG 1g.10gb"


@pytest.fixture
def mig(fake):
    """A whole H100 in MIG mode with one of its slices; CUDA reports the slice's UUID."""
    handles = {"GPU-" + UUID: "board", "MIG-" + SLICE: "slice"}

    def by_uuid(uuid):
        if uuid not in handles:
            raise error(pynvml.NVML_ERROR_NOT_FOUND)
        return handles[uuid]

    def energy(handle):  # the whole GPU has a counter (every tenant's energy); a slice has none
        if handle != "board":
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 123_456
    fake.nvmlDeviceGetHandleByUUID.side_effect = by_uuid
    fake.nvmlDeviceIsMigDeviceHandle.side_effect = lambda handle: int(handle == "slice")
    fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle.side_effect = lambda handle: "board"
    fake.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    fake.nvmlDeviceGetName.side_effect = lambda handle: {"slice": SLICE_NAME, "board": "NVIDIA H100 80GB HBM3"}[handle]
    fake.nvmlDeviceGetUUID.side_effect = lambda handle: {"slice": "MIG-" + SLICE, "board": "GPU-" + UUID}[handle]
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = energy
    return fake


@pytest.mark.parametrize("uuid", [SLICE, UUID], ids=["slice uuid", "parent uuid"])
def test_a_mig_slice_has_no_energy_and_the_reason_says_so(mig, uuid):
    status = nvml.probe(Device("cuda", 0, SLICE_NAME, uuid)).status
    assert not status.available
    assert "MIG slice" in status.detail and "every slice's tenants" in status.detail
    assert "Volta" not in status.detail  # not the GPU's generation at fault
    mig.nvmlDeviceGetTotalEnergyConsumption.assert_not_called()  # the whole GPU's counter is never charged to it


def test_a_mig_slices_facts_are_its_own_and_its_gpus(mig):
    mig.nvmlDeviceGetPowerManagementLimit.side_effect = lambda handle: {"board": 700_000}[handle]
    facts = nvml.gpu_facts(Device("cuda", 0, SLICE_NAME, SLICE))
    assert facts["name"] == SLICE_NAME and facts["uuid"] == "MIG-" + SLICE
    assert facts["board_uuid"] == "GPU-" + UUID and facts["mig_mode"] == "enabled" and facts["power_limit_w"] == 700
    named_by_parent = nvml.gpu_facts(Device("cuda", 0, SLICE_NAME, UUID))
    assert named_by_parent["uuid"]["unknown"] and "which slice" in named_by_parent["uuid"]["reason"]
    assert named_by_parent["board_uuid"] == "GPU-" + UUID


def test_a_mig_slices_conditions_are_read_on_its_gpu(mig):
    mig.nvmlDeviceGetTemperature.side_effect = lambda handle, sensor: {"board": 55}[handle]
    sensors = nvml.condition_sensors(Device("cuda", 0, SLICE_NAME, SLICE))
    assert sensors.read("temperature_c") == 55


# -- a GPU that stops answering -------------------------------------------------------------

@pytest.fixture
def hang(monkeypatch):
    """A fake NVML call that never returns (released at the end of the test), and short timeouts."""
    release = threading.Event()
    monkeypatch.setattr(nvml, "CALL_TIMEOUT_S", 0.2)
    yield lambda *args: release.wait()
    release.set()


def test_a_hung_nvml_call_while_probing_is_explained_and_later_calls_do_not_wait(fake, hang):
    fake.nvmlDeviceGetName.side_effect = hang
    began = time.perf_counter()
    status = nvml.probe(GPU).status
    facts = nvml.gpu_facts(GPU)
    assert time.perf_counter() - began < 2  # one timeout, then nothing waits again
    assert not status.available and "nvmlDeviceGetName did not return within 0.2 s" in status.detail
    assert all(value["unknown"] and "did not return" in value["reason"] for value in facts.values())


def test_a_hung_condition_reading_is_a_gap_with_the_reason(h100, hang):
    sensors = nvml.condition_sensors(GPU)
    h100.nvmlDeviceGetTemperature.side_effect = hang
    began = time.perf_counter()
    assert sensors.read("temperature_c") is None and sensors.read("sm_clock_mhz") is None
    assert time.perf_counter() - began < 2
    assert "reading temperature_c did not return within 0.2 s" in sensors.hung
    sensors.close()  # nvmlShutdown cannot be called either: closing does not wait or raise


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
        "board_uuid": "GPU-2f6b8a1e-0000-4c1d-9a3e-1234567890ab", "memory_bytes": 80 * 2**30, "driver_version": "550.54.15", "cuda_driver_version": "12.4",
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
    (lambda fake: setattr(fake.nvmlDeviceGetHandleByUUID, "side_effect", error(pynvml.NVML_ERROR_NO_PERMISSION)),
     GPU, "permission denied"),
    (lambda fake: setattr(fake.nvmlDeviceGetCount, "return_value", 2), Device("cuda", 0, "x"), "no UUID"),
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
