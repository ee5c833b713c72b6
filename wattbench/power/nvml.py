"""NVIDIA GPUs through NVML (nvidia-ml-py). The only module that imports pynvml.

Channels per GPU, best first:
- `counter`: nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer;
  updates about every 100 ms).
- `instant`: field NVML_FI_DEV_POWER_INSTANT, polled beside the counter for the timeline and
  a cross-check (on A100/H100 it averages ~25 ms of every 100 ms).
- `average`: nvmlDeviceGetPowerUsage, only when neither of the above exists; on Ampere and
  newer boards (except GA100) it is a 1 s rolling average, so it is labelled as such.
"""

from __future__ import annotations

import os

import pynvml
from pynvml import (NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT,
                    NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_NO_PERMISSION, NVML_ERROR_NOT_FOUND,
                    NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_RESET_REQUIRED, NVML_ERROR_TIMEOUT,
                    NVML_ERROR_UNINITIALIZED, NVML_FI_DEV_POWER_INSTANT, NVML_POWER_SCOPE_GPU,
                    NVML_POWER_SCOPE_MODULE, NVML_SUCCESS, NVMLError)

from wattbench.device import Device
from wattbench.power.base import Channel, Probe, SensorFault, SourceStatus

EXPLANATIONS = {
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML library (libnvidia-ml.so) not found: no NVIDIA driver on this host",
    NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded (no NVIDIA GPU, or its kernel module failed)",
    NVML_ERROR_NOT_SUPPORTED: "not supported on this GPU",
    NVML_ERROR_NO_PERMISSION: "permission denied (this process may not query the GPU; check the container's "
                              "device access)",
    NVML_ERROR_GPU_IS_LOST: "the GPU is lost (fell off the bus): it needs a reset or a reboot",
    NVML_ERROR_RESET_REQUIRED: "the GPU needs a reset",
    NVML_ERROR_NOT_FOUND: "no such GPU",
    NVML_ERROR_INVALID_ARGUMENT: "no such GPU",
    NVML_ERROR_TIMEOUT: "NVML timed out",
    NVML_ERROR_UNINITIALIZED: "NVML is not initialised",
}

#: Errors after which polling again cannot succeed.
PERMANENT = {NVML_ERROR_GPU_IS_LOST, NVML_ERROR_NO_PERMISSION, NVML_ERROR_RESET_REQUIRED,
             NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_UNINITIALIZED}

#: Instant readings lag: a 25 ms averaging window reported up to 100 ms later.
INSTANT_SETTLE_S = 0.125
#: A 1 s rolling average, updated every 100 ms.
AVERAGE_SETTLE_S = 1.1

SCOPES = ((NVML_POWER_SCOPE_GPU, "GPU"), (NVML_POWER_SCOPE_MODULE, "module (Grace CPU + GPU + memory)"))


def explain(err: NVMLError, what: str) -> str:
    return f"{what}: {EXPLANATIONS.get(err.value, str(err))} (NVML error {err.value})"


def fault(err: NVMLError, what: str) -> SensorFault:
    return SensorFault(explain(err, what), permanent=err.value in PERMANENT)


def field_number(value) -> float:
    """The number in an NVML field value, whatever its declared type."""
    members = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
    return float(getattr(value.value, members[value.valueType]))


def nvml_handle(index: int):
    """The NVML handle of torch's cuda:`index`, honouring CUDA_VISIBLE_DEVICES (indices or UUIDs)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    if index >= len(visible):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    entry = visible[index]
    return pynvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit() else pynvml.nvmlDeviceGetHandleByUUID(entry)


def counter_reader(handle):
    def read() -> float:
        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
        except NVMLError as err:
            raise fault(err, "energy counter") from None
    return read


def field_reader(handle, field_id: int, scope: int):
    def read() -> float:
        try:
            value = pynvml.nvmlDeviceGetFieldValues(handle, [(field_id, scope)])[0]
        except NVMLError as err:
            raise fault(err, "instant power") from None
        if value.nvmlReturn != NVML_SUCCESS:
            raise fault(NVMLError(value.nvmlReturn), "instant power")
        return field_number(value) / 1000.0
    return read


def usage_reader(handle):
    def read() -> float:
        try:
            return pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except NVMLError as err:
            raise fault(err, "power usage") from None
    return read


def probe(device: Device) -> Probe:
    try:
        pynvml.nvmlInit()
    except NVMLError as err:
        return Probe(SourceStatus("nvml", False, explain(err, "nvmlInit")))
    if device.type != "cuda":
        pynvml.nvmlShutdown()
        return Probe(SourceStatus("nvml", False, f"NVML measures NVIDIA GPUs; the device is {device.spec}"))
    try:
        handle = nvml_handle(device.index or 0)
        name = pynvml.nvmlDeviceGetName(handle)
    except NVMLError as err:
        pynvml.nvmlShutdown()
        return Probe(SourceStatus("nvml", False, explain(err, f"GPU {device.spec}")))
    name = name.decode() if isinstance(name, bytes) else name
    module_scope = "GH200" in name or "Grace" in name
    gpu = f"nvml:{device.index or 0}"
    channels, missing = [], []

    read = counter_reader(handle)
    try:
        read()
        scope = SCOPES[1][1] if module_scope else "GPU board"
        channels.append(Channel(f"{gpu}:counter", "nvml", "counter", scope, read=read, resolution=0.001))
    except SensorFault as err:
        missing.append(err.reason + (" (the counter needs Volta or newer)"
                                     if "not supported" in err.reason else ""))

    for scope_id, scope in SCOPES:
        read = field_reader(handle, NVML_FI_DEV_POWER_INSTANT, scope_id)
        try:
            read()
        except SensorFault as err:
            missing.append(f"{err.reason} at {scope} scope")
            continue
        channels.append(Channel(f"{gpu}:instant", "nvml", "instant", scope, read=read, settle_s=INSTANT_SETTLE_S,
                                resolution=0.001, note="averages about 25 ms of every 100 ms on A100/H100"))
        break

    if not channels:
        read = usage_reader(handle)
        try:
            read()
            channels.append(Channel(f"{gpu}:average", "nvml", "average", "GPU board", read=read,
                                    settle_s=AVERAGE_SETTLE_S, resolution=0.001,
                                    note="nvmlDeviceGetPowerUsage: a 1 s rolling average on Ampere and newer "
                                         "(except GA100); last resort"))
        except SensorFault as err:
            missing.append(err.reason)

    try:
        power_limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
    except NVMLError:
        power_limit_w = None
    info = {"device_name": name, "power_limit_w": power_limit_w, "scope": channels[0].scope if channels else None,
            "unavailable": missing}
    if not channels:
        pynvml.nvmlShutdown()
        return Probe(SourceStatus("nvml", False, f"{name}: " + "; ".join(missing)), info=info)
    detail = f"{name}: " + ", ".join(f"{c.method} ({c.scope})" for c in channels)
    if missing:
        detail += "; unavailable: " + "; ".join(missing)
    return Probe(SourceStatus("nvml", True, detail), channels, channels[:1], info, close=pynvml.nvmlShutdown)
