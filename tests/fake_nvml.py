"""A faked pynvml for tests: an autospec of the real module (real error classes and codes, real
field-value structs) answering what one whole H100 with MIG off would."""

import contextlib
from unittest import mock

import pynvml

from wattbench.conditions import BoundedCaller
from wattbench.power import nvml

NAME = "NVIDIA H100 80GB HBM3"


def field(value_mw: int, ret: int = pynvml.NVML_SUCCESS) -> pynvml.c_nvmlFieldValue_t:
    result = pynvml.c_nvmlFieldValue_t()
    result.fieldId = pynvml.NVML_FI_DEV_POWER_INSTANT
    result.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    result.value.uiVal = value_mw
    result.nvmlReturn = ret
    return result


def error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@contextlib.contextmanager
def fake_pynvml(monkeypatch):
    """nvml's pynvml replaced by the fake (and a fresh worker for its bounded calls)."""
    monkeypatch.setattr(nvml, "_caller", BoundedCaller("test-nvml"))
    with mock.patch.object(nvml, "pynvml", autospec=True) as fake:
        fake.nvmlDeviceIsMigDeviceHandle.return_value = 0
        fake.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
        fake.nvmlDeviceGetName.return_value = NAME
        fake.nvmlDeviceGetTotalEnergyConsumption.return_value = 123_456
        fake.nvmlDeviceGetFieldValues.return_value = [field(250_000)]
        fake.nvmlDeviceGetPowerUsage.return_value = 240_000
        fake.nvmlDeviceGetEnforcedPowerLimit.return_value = 700_000
        yield fake
