"""NVIDIA GPUs through NVML (nvidia-ml-py). The only module that imports pynvml.

Channels per GPU, best first:
- `counter`: nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer;
  updates about every 100 ms).
- `instant`: field NVML_FI_DEV_POWER_INSTANT, polled beside the counter for the timeline and
  a cross-check (on A100/H100 it averages ~25 ms of every 100 ms).
- `average`: nvmlDeviceGetPowerUsage, only when neither of the above exists; on Ampere and
  newer boards (except GA100) it is a 1 s rolling average, so it is labelled as such.

Besides power: `gpu_facts` (the static facts of a run file's environment block) and
`condition_sensors` (temperature, clocks and clock-event reasons during energy windows).
"""

from __future__ import annotations

import os

import pynvml
from pynvml import (NVML_CLOCK_MEM, NVML_CLOCK_SM, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_FUNCTION_NOT_FOUND,
                    NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_LIBRARY_NOT_FOUND,
                    NVML_ERROR_NO_PERMISSION, NVML_ERROR_NOT_FOUND, NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_RESET_REQUIRED,
                    NVML_ERROR_TIMEOUT, NVML_ERROR_UNINITIALIZED, NVML_FEATURE_ENABLED, NVML_FI_DEV_POWER_INSTANT,
                    NVML_POWER_SCOPE_GPU, NVML_POWER_SCOPE_MODULE, NVML_SUCCESS, NVML_TEMPERATURE_GPU, NVMLError)

from wattbench.conditions import ConditionSensors, unknown
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
    NVML_ERROR_FUNCTION_NOT_FOUND: "this driver's NVML lacks the function (an older driver)",
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
        name = _text(pynvml.nvmlDeviceGetName(handle))
    except NVMLError as err:
        pynvml.nvmlShutdown()
        return Probe(SourceStatus("nvml", False, explain(err, f"GPU {device.spec}")))
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


# -- environment facts --------------------------------------------------------------------

def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _state(value: int) -> str:
    return "enabled" if value == NVML_FEATURE_ENABLED else "disabled"


def _cuda_version(value: int) -> str:
    """NVML's CUDA version number (12040) as a version string ('12.4')."""
    return f"{value // 1000}.{value % 1000 // 10}"


#: The GPU facts of a run file's environment block: key -> (what it is, how to read it from a handle).
#: The current PCIe link drops to a lower generation when the GPU idles; it is read before the run.
GPU_FACTS = {
    "name": ("name", lambda h: _text(pynvml.nvmlDeviceGetName(h))),
    "uuid": ("UUID", lambda h: _text(pynvml.nvmlDeviceGetUUID(h))),
    "memory_bytes": ("memory", lambda h: int(pynvml.nvmlDeviceGetMemoryInfo(h).total)),
    "driver_version": ("driver version", lambda h: _text(pynvml.nvmlSystemGetDriverVersion())),
    "cuda_driver_version": ("CUDA driver version",
                            lambda h: _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion_v2())),
    "power_limit_w": ("power limit", lambda h: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0),
    "power_limit_default_w": ("default power limit",
                              lambda h: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1000.0),
    "power_limit_enforced_w": ("enforced power limit", lambda h: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
    "persistence_mode": ("persistence mode", lambda h: _state(pynvml.nvmlDeviceGetPersistenceMode(h))),
    "mig_mode": ("MIG mode", lambda h: _state(pynvml.nvmlDeviceGetMigMode(h)[0])),
    "ecc_mode": ("ECC mode", lambda h: _state(pynvml.nvmlDeviceGetEccMode(h)[0])),
    "application_clock_sm_mhz": ("application SM clock",
                                 lambda h: pynvml.nvmlDeviceGetApplicationsClock(h, NVML_CLOCK_SM)),
    "application_clock_mem_mhz": ("application memory clock",
                                  lambda h: pynvml.nvmlDeviceGetApplicationsClock(h, NVML_CLOCK_MEM)),
    "max_clock_sm_mhz": ("maximum SM clock", lambda h: pynvml.nvmlDeviceGetMaxClockInfo(h, NVML_CLOCK_SM)),
    "max_clock_mem_mhz": ("maximum memory clock", lambda h: pynvml.nvmlDeviceGetMaxClockInfo(h, NVML_CLOCK_MEM)),
    "pcie_gen_current": ("PCIe link generation", lambda h: pynvml.nvmlDeviceGetCurrPcieLinkGeneration(h)),
    "pcie_gen_max": ("maximum PCIe link generation", lambda h: pynvml.nvmlDeviceGetMaxPcieLinkGeneration(h)),
    "pcie_width_current": ("PCIe link width", lambda h: pynvml.nvmlDeviceGetCurrPcieLinkWidth(h)),
    "pcie_width_max": ("maximum PCIe link width", lambda h: pynvml.nvmlDeviceGetMaxPcieLinkWidth(h)),
}


def _fact(what: str, read, handle):
    try:
        return read(handle)
    except NVMLError as err:
        return unknown(explain(err, what))


def _all_unknown(reason: str) -> dict:
    return {key: unknown(reason) for key in GPU_FACTS}


def gpu_facts(device: Device) -> dict:
    """Every fact of GPU_FACTS about `device`: its value, or unknown with NVML's reason."""
    try:
        pynvml.nvmlInit()
    except NVMLError as err:
        return _all_unknown(explain(err, "nvmlInit"))
    try:
        if device.type != "cuda":
            return _all_unknown(f"the run's device is {device.spec}, not an NVIDIA GPU")
        try:
            handle = nvml_handle(device.index or 0)
        except NVMLError as err:
            return _all_unknown(explain(err, f"GPU {device.spec}"))
        return {key: _fact(what, read, handle) for key, (what, read) in GPU_FACTS.items()}
    finally:
        pynvml.nvmlShutdown()


# -- conditions during energy windows --------------------------------------------------------

def clock_events(handle) -> int:
    """The clock-event (throttle) reason bitmask: nvmlDeviceGetCurrentClocksEventReasons, or its
    older name nvmlDeviceGetCurrentClocksThrottleReasons on bindings or drivers without it."""
    newer = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if newer is not None:
        try:
            return newer(handle)
        except NVMLError as err:
            if err.value != NVML_ERROR_FUNCTION_NOT_FOUND:
                raise
    return pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)


#: How each quantity of wattbench.conditions.QUANTITIES is read from a handle.
CONDITIONS = {
    "temperature_c": lambda h: pynvml.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU),
    "sm_clock_mhz": lambda h: pynvml.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM),
    "mem_clock_mhz": lambda h: pynvml.nvmlDeviceGetClockInfo(h, NVML_CLOCK_MEM),
    "clock_events": clock_events,
}


def _reading_or_none(read, handle):
    """A reader that returns None when one reading fails: a window then lacks that reading."""
    def reading():
        try:
            return read(handle)
        except NVMLError:
            return None
    return reading


def condition_sensors(device: Device) -> ConditionSensors:
    """Readers of `device`'s temperature, clocks and clock events; each quantity that cannot be
    read (tried once here) is missing with NVML's reason. `close` releases NVML."""
    try:
        pynvml.nvmlInit()
    except NVMLError as err:
        return ConditionSensors.unavailable(explain(err, "nvmlInit"))
    if device.type != "cuda":
        pynvml.nvmlShutdown()
        return ConditionSensors.unavailable(f"NVML reads NVIDIA GPUs; the device is {device.spec}")
    try:
        handle = nvml_handle(device.index or 0)
    except NVMLError as err:
        pynvml.nvmlShutdown()
        return ConditionSensors.unavailable(explain(err, f"GPU {device.spec}"))
    readers, missing = {}, {}
    for quantity, read in CONDITIONS.items():
        try:
            read(handle)
        except NVMLError as err:
            missing[quantity] = explain(err, quantity)
        else:
            readers[quantity] = _reading_or_none(read, handle)
    return ConditionSensors(readers, missing, close=pynvml.nvmlShutdown)
