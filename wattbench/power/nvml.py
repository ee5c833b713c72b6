"""NVIDIA GPUs through NVML (nvidia-ml-py). The only module that imports pynvml.

Channels per GPU, best first:
- `counter`: nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer;
  updates about every 100 ms).
- `instant`: field NVML_FI_DEV_POWER_INSTANT, polled beside the counter for the timeline and
  a cross-check (on A100/H100 it averages ~25 ms of every 100 ms).
- `average`: nvmlDeviceGetPowerUsage, only when neither of the above exists; on Ampere and
  newer boards (except GA100) it is a 1 s rolling average, so it is labelled as such.

Besides power: `gpu_facts` (the static facts of a run file's environment block),
`condition_sensors` (temperature, clocks and clock-event reasons during energy windows) and
`GpuSettings` (the power limit and locked clocks a sweep changes, for wattbench.power.knobs).

A torch device is found in NVML by its UUID (`find_gpu`): CUDA and NVML number GPUs
differently. On a MIG slice NVML measures no energy or power, and the whole GPU's readings
include every slice's tenants, so a slice gets no power source (conditions and board facts
come from its physical GPU, which they describe). Every NVML call made outside the sampler
thread is bounded in time (`_call`): a call that hangs (a GPU lost) ends that source, not the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pynvml
from pynvml import (NVML_CLOCK_MEM, NVML_CLOCK_SM, NVML_DEVICE_MIG_ENABLE, NVML_ERROR_DRIVER_NOT_LOADED,
                    NVML_ERROR_FUNCTION_NOT_FOUND, NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT,
                    NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_NO_PERMISSION, NVML_ERROR_NOT_FOUND,
                    NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_RESET_REQUIRED, NVML_ERROR_TIMEOUT, NVML_ERROR_UNINITIALIZED,
                    NVML_FEATURE_ENABLED, NVML_FI_DEV_POWER_INSTANT, NVML_POWER_SCOPE_GPU, NVML_POWER_SCOPE_MODULE,
                    NVML_SUCCESS, NVML_TEMPERATURE_GPU, NVMLError)

from wattbench.conditions import BoundedCaller, CallTimeout, ConditionSensors, decode_clock_events, unknown
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
    NVML_ERROR_TIMEOUT: "NVML timed out (the GPU may be busy, lost or hung)",
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

#: How long an NVML call outside the sampler may take (a healthy one takes microseconds to
#: milliseconds); nvmlInit may take seconds per GPU on a driver without persistence mode.
CALL_TIMEOUT_S = 10.0
INIT_TIMEOUT_S = 60.0

MIG_NO_ENERGY = ("a MIG slice: NVML measures no energy or power per slice, and the whole GPU's readings include "
                 "every slice's tenants, so this device's energy cannot be measured")


class Unanswered(NVMLError):
    """An NVML call that wattbench stopped waiting for; `reason` says which and for how long."""

    def __new__(cls, reason: str):
        err = NVMLError.__new__(cls, NVML_ERROR_TIMEOUT)
        err.reason = reason
        return err


#: The worker that makes every NVML call outside the sampler thread (see BoundedCaller).
_caller = BoundedCaller("wattbench-nvml")


def _call(what: str, fn: Callable, *args, timeout_s: float | None = None) -> Any:
    """fn(*args), waited for at most `timeout_s` (CALL_TIMEOUT_S by default); a call that does
    not return is an Unanswered error naming `what`."""
    try:
        return _caller.call(lambda: fn(*args), CALL_TIMEOUT_S if timeout_s is None else timeout_s, what)
    except CallTimeout as timeout:
        raise Unanswered(timeout.reason) from None


def _nvml(function: str, *args, timeout_s: float | None = None) -> Any:
    """pynvml.`function`(*args) through `_call`."""
    return _call(function, getattr(pynvml, function), *args, timeout_s=timeout_s)


def _init() -> None:
    _nvml("nvmlInit", timeout_s=INIT_TIMEOUT_S)


def _shutdown() -> None:
    """Release NVML; a failure (a GPU that stopped answering) leaves nothing to do at the end."""
    try:
        _nvml("nvmlShutdown")
    except NVMLError:
        pass


def explain(err: NVMLError, what: str) -> str:
    detail = err.reason if isinstance(err, Unanswered) else EXPLANATIONS.get(err.value, str(err))
    return f"{what}: {detail} (NVML error {err.value})"


def fault(err: NVMLError, what: str) -> SensorFault:
    return SensorFault(explain(err, what), permanent=err.value in PERMANENT)


def field_number(value) -> float:
    """The number in an NVML field value, whatever its declared type."""
    members = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
    return float(getattr(value.value, members[value.valueType]))


@dataclass(frozen=True)
class Gpu:
    """The NVML handles of a torch device.

    `board` is the physical GPU. `handle` is the device itself: the board, or on a MIG slice
    the slice's handle, or None where CUDA named the slice by its parent's UUID (which slice
    is then unknown). `mig` says whether the device is a MIG slice.
    """

    handle: Any
    board: Any
    mig: bool


def _false_when_unsupported(query: Callable[[], bool]) -> bool:
    """A MIG query's answer; False where the GPU or driver knows nothing of MIG."""
    try:
        return query()
    except NVMLError as err:
        if err.value in (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND):
            return False
        raise


def _is_mig_slice(handle) -> bool:
    return _false_when_unsupported(lambda: bool(_nvml("nvmlDeviceIsMigDeviceHandle", handle)))


def _mig_enabled(board) -> bool:
    return _false_when_unsupported(lambda: _nvml("nvmlDeviceGetMigMode", board)[0] == NVML_DEVICE_MIG_ENABLE)


def _on_board(board) -> Gpu:
    """The device on a physical GPU: CUDA runs only on MIG slices of a GPU in MIG mode."""
    return Gpu(None, board, mig=True) if _mig_enabled(board) else Gpu(board, board, mig=False)


def _by_uuid(uuid: str):
    """The handle of CUDA's UUID (reported without its prefix): a GPU's, else a MIG slice's."""
    try:
        return _nvml("nvmlDeviceGetHandleByUUID", "GPU-" + uuid)
    except NVMLError as err:
        if err.value not in (NVML_ERROR_NOT_FOUND, NVML_ERROR_INVALID_ARGUMENT):
            raise
    return _nvml("nvmlDeviceGetHandleByUUID", "MIG-" + uuid)


def find_gpu(device: Device) -> Gpu:
    """`device`'s handles, found by its UUID: never by index, since CUDA orders devices fastest
    first (unless CUDA_DEVICE_ORDER=PCI_BUS_ID) and through CUDA_VISIBLE_DEVICES, NVML by PCI bus.

    Without a UUID the only mapping that is provably right is a host where NVML sees one GPU:
    every CUDA device is then that GPU (or a MIG slice of it). Anywhere else this raises
    LookupError with the reason rather than guess; NVML's own errors raise NVMLError.
    """
    if device.uuid is not None:
        handle = _by_uuid(device.uuid)
        if _is_mig_slice(handle):
            return Gpu(handle, _nvml("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle), mig=True)
        return _on_board(handle)
    count = _nvml("nvmlDeviceGetCount")
    if count != 1:
        raise LookupError(f"{device.spec} has no UUID (torch reported none) and NVML sees {count} GPUs: which of "
                          "them it is cannot be known, so none is guessed")
    return _on_board(_nvml("nvmlDeviceGetHandleByIndex", 0))


def _device_name(gpu: Gpu) -> str:
    name = _text(_nvml("nvmlDeviceGetName", gpu.board if gpu.handle is None else gpu.handle))
    return f"MIG slice of {name}" if gpu.handle is None else name


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


def _unavailable(reason: str, info: dict | None = None) -> Probe:
    _shutdown()
    return Probe(SourceStatus("nvml", False, reason), info=info or {})


def _why_not(what: str, read) -> str | None:
    """Why `read` fails now, or None when it works."""
    try:
        _call(what, read)
    except SensorFault as err:
        return err.reason
    except NVMLError as err:
        return explain(err, what)
    return None


def probe(device: Device) -> Probe:
    try:
        _init()
    except NVMLError as err:
        return Probe(SourceStatus("nvml", False, explain(err, "nvmlInit")))
    if device.type != "cuda":
        return _unavailable(f"NVML measures NVIDIA GPUs; the device is {device.spec}")
    try:
        gpu = find_gpu(device)
        name = _device_name(gpu)
    except NVMLError as err:
        return _unavailable(explain(err, f"GPU {device.spec}"))
    except LookupError as err:
        return _unavailable(str(err))
    if gpu.mig:
        return _unavailable(f"{name}: {MIG_NO_ENERGY}", {"device_name": name, "mig": True, "scope": None,
                                                         "power_limit_w": None, "unavailable": [MIG_NO_ENERGY]})
    handle = gpu.handle
    module_scope = "GH200" in name or "Grace" in name
    gpu_name = f"nvml:{device.index or 0}"
    channels, missing = [], []

    read = counter_reader(handle)
    why = _why_not("energy counter", read)
    if why is None:
        scope = SCOPES[1][1] if module_scope else "GPU board"
        channels.append(Channel(f"{gpu_name}:counter", "nvml", "counter", scope, read=read, resolution=0.001,
                                sensor=gpu_name))
    else:
        missing.append(why + (" (the counter needs Volta or newer)" if "not supported" in why else ""))

    for scope_id, scope in SCOPES:
        read = field_reader(handle, NVML_FI_DEV_POWER_INSTANT, scope_id)
        why = _why_not("instant power", read)
        if why is not None:
            missing.append(f"{why} at {scope} scope")
            continue
        channels.append(Channel(f"{gpu_name}:instant", "nvml", "instant", scope, read=read,
                                settle_s=INSTANT_SETTLE_S, resolution=0.001, sensor=gpu_name,
                                note="averages about 25 ms of every 100 ms on A100/H100"))
        break

    if not channels:
        read = usage_reader(handle)
        why = _why_not("power usage", read)
        if why is None:
            channels.append(Channel(f"{gpu_name}:average", "nvml", "average", "GPU board", read=read,
                                    settle_s=AVERAGE_SETTLE_S, resolution=0.001, sensor=gpu_name,
                                    note="nvmlDeviceGetPowerUsage: a 1 s rolling average on Ampere and newer "
                                         "(except GA100); last resort"))
        else:
            missing.append(why)

    try:
        power_limit_w = _nvml("nvmlDeviceGetEnforcedPowerLimit", handle) / 1000.0
    except NVMLError:
        power_limit_w = None
    info = {"device_name": name, "power_limit_w": power_limit_w, "scope": channels[0].scope if channels else None,
            "unavailable": missing}
    if not channels:
        return _unavailable(f"{name}: " + "; ".join(missing), info)
    detail = f"{name}: " + ", ".join(f"{c.method} ({c.scope})" for c in channels)
    if missing:
        detail += "; unavailable: " + "; ".join(missing)
    return Probe(SourceStatus("nvml", True, detail), channels, channels[:1], info, close=_shutdown)


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
    "board_uuid": ("UUID of the physical GPU", lambda h: _text(pynvml.nvmlDeviceGetUUID(h))),
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


#: Facts of the device itself, which a MIG slice has of its own; the others are its physical GPU's.
DEVICE_FACTS = ("name", "uuid", "memory_bytes")

UNKNOWN_SLICE = "CUDA named this MIG slice by its GPU's UUID, so which slice it is (and its own facts) is unknown"


def _fact(what: str, read, handle):
    if handle is None:
        return unknown(UNKNOWN_SLICE)
    try:
        return _call(what, read, handle)
    except NVMLError as err:
        return unknown(explain(err, what))


def _all_unknown(reason: str) -> dict:
    return {key: unknown(reason) for key in GPU_FACTS}


def gpu_facts(device: Device) -> dict:
    """Every fact of GPU_FACTS about `device`: its value, or unknown with NVML's reason. On a MIG
    slice, `name`, `uuid` and `memory_bytes` are the slice's, the rest its physical GPU's."""
    try:
        _init()
    except NVMLError as err:
        return _all_unknown(explain(err, "nvmlInit"))
    try:
        if device.type != "cuda":
            return _all_unknown(f"the run's device is {device.spec}, not an NVIDIA GPU")
        try:
            gpu = find_gpu(device)
        except NVMLError as err:
            return _all_unknown(explain(err, f"GPU {device.spec}"))
        except LookupError as err:
            return _all_unknown(str(err))
        return {key: _fact(what, read, gpu.handle if key in DEVICE_FACTS else gpu.board)
                for key, (what, read) in GPU_FACTS.items()}
    finally:
        _shutdown()


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
    read (tried once here) is missing with NVML's reason. `close` releases NVML.

    On a MIG slice they read its physical GPU: the temperature, clocks and throttling the
    slice runs under are the GPU's. Readings go through the same bounded worker as every other
    NVML call, so a GPU that stops answering ends them all at once."""
    try:
        _init()
    except NVMLError as err:
        return ConditionSensors.unavailable(explain(err, "nvmlInit"))
    if device.type != "cuda":
        _shutdown()
        return ConditionSensors.unavailable(f"NVML reads NVIDIA GPUs; the device is {device.spec}")
    try:
        board = find_gpu(device).board
    except NVMLError as err:
        _shutdown()
        return ConditionSensors.unavailable(explain(err, f"GPU {device.spec}"))
    except LookupError as err:
        _shutdown()
        return ConditionSensors.unavailable(str(err))
    readers, missing = {}, {}
    for quantity, read in CONDITIONS.items():
        try:
            _call(quantity, read, board)
        except NVMLError as err:
            missing[quantity] = explain(err, quantity)
        else:
            readers[quantity] = _reading_or_none(read, board)
    return ConditionSensors(readers, missing, close=_shutdown, caller=_caller, timeout_s=CALL_TIMEOUT_S)


# -- power limits and locked clocks (wattbench.power.knobs) -----------------------------------

#: NVML's clock type of each clock a sweep may lock.
LOCKABLE_CLOCKS = {"sm": NVML_CLOCK_SM, "mem": NVML_CLOCK_MEM}
_LOCK = {"sm": "nvmlDeviceSetGpuLockedClocks", "mem": "nvmlDeviceSetMemoryLockedClocks"}
_UNLOCK = {"sm": "nvmlDeviceResetGpuLockedClocks", "mem": "nvmlDeviceResetMemoryLockedClocks"}

#: What fixes a setter's error, where the general explanation would not say.
SETTING_FIXES = {
    NVML_ERROR_NO_PERMISSION: "permission denied: changing it needs root or admin rights (run as root, e.g. sudo)",
    NVML_ERROR_NOT_SUPPORTED: "not supported on this GPU or driver",
    NVML_ERROR_INVALID_ARGUMENT: "the driver refused the value",
}


def setting_problem(err: NVMLError, what: str) -> str:
    """Why reading or changing a setting failed, naming the fix (root for NO_PERMISSION), with NVML's code."""
    if isinstance(err, Unanswered) or err.value not in SETTING_FIXES:
        return explain(err, what)
    return f"{what}: {SETTING_FIXES[err.value]} (NVML error {err.value})"


class GpuSettings:
    """The power limit and clocks of one whole GPU: read, set, reset.

    NVML stays initialised from `open` (or `by_uuid`) until `close`; every call is bounded in time like every
    other NVML call outside the sampler. Errors are NVMLError; the caller says what they mean for a sweep.
    `mig` says whether CUDA runs on MIG slices of this GPU (whose settings then change every tenant's).
    """

    def __init__(self, handle, uuid: str, name: str, mig: bool = False):
        self.handle, self.uuid, self.name, self.mig = handle, uuid, name, mig

    @classmethod
    def open(cls, device: Device) -> "GpuSettings":
        """The physical GPU of `device`, found by UUID (see find_gpu): NVMLError, or LookupError where which GPU
        it is cannot be known."""
        _init()
        try:
            gpu = find_gpu(device)
            return cls(gpu.board, _text(_nvml("nvmlDeviceGetUUID", gpu.board)),
                       _text(_nvml("nvmlDeviceGetName", gpu.board)), gpu.mig)
        except BaseException:
            _shutdown()
            raise

    @classmethod
    def by_uuid(cls, uuid: str) -> "GpuSettings":
        """The GPU of NVML's UUID ("GPU-..."), as a state file records it."""
        _init()
        try:
            handle = _nvml("nvmlDeviceGetHandleByUUID", uuid)
            return cls(handle, uuid, _text(_nvml("nvmlDeviceGetName", handle)))
        except BaseException:
            _shutdown()
            raise

    def close(self) -> None:
        _shutdown()

    def power_limit_range_w(self) -> tuple[float, float]:
        low_mw, high_mw = _nvml("nvmlDeviceGetPowerManagementLimitConstraints", self.handle)
        return low_mw / 1000.0, high_mw / 1000.0

    def power_limit_w(self) -> float:
        return _nvml("nvmlDeviceGetPowerManagementLimit", self.handle) / 1000.0

    def enforced_power_limit_w(self) -> float:
        """The limit the GPU obeys: the lowest of every limiter's (this one's, the board's, a host manager's)."""
        return _nvml("nvmlDeviceGetEnforcedPowerLimit", self.handle) / 1000.0

    def set_power_limit_w(self, watts: float) -> None:
        _nvml("nvmlDeviceSetPowerManagementLimit", self.handle, round(watts * 1000))

    def supported_clocks_mhz(self, clock: str) -> list[int]:
        """The clocks NVML lists for `clock` ("sm" or "mem"), ascending; SM clocks at the highest memory clock
        (the one the GPU runs at unless its memory clock is locked)."""
        memory = sorted(set(_nvml("nvmlDeviceGetSupportedMemoryClocks", self.handle)))
        if clock == "mem" or not memory:
            return memory
        return sorted(set(_nvml("nvmlDeviceGetSupportedGraphicsClocks", self.handle, memory[-1])))

    def lock_clock(self, clock: str, mhz: int) -> None:
        """Lock `clock` at `mhz` (minimum = maximum)."""
        _nvml(_LOCK[clock], self.handle, mhz, mhz)

    def reset_clock(self, clock: str) -> None:
        """Unlock `clock` (a no-op where it is not locked)."""
        _nvml(_UNLOCK[clock], self.handle)

    def clock_mhz(self, clock: str) -> int:
        return _nvml("nvmlDeviceGetClockInfo", self.handle, LOCKABLE_CLOCKS[clock])

    def clock_events(self) -> list[str]:
        """The clock-event reasons active now (throttles among them: wattbench.conditions.is_throttle)."""
        return decode_clock_events(int(_call("clock events", clock_events, self.handle)))

    def power_w(self) -> float | None:
        """The board's power now (instant field, else the 1 s average), None where neither can be read."""
        for read in (field_reader(self.handle, NVML_FI_DEV_POWER_INSTANT, NVML_POWER_SCOPE_GPU),
                     usage_reader(self.handle)):
            try:
                return _call("power", read)
            except (SensorFault, NVMLError):
                continue
        return None
