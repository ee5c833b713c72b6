"""Fakes for the knob tests: a GPU whose settings outlive the process that changed them, and sysfs trees.

`FakeGpu` keeps one H100's settable state in a JSON file that the faked pynvml (an autospec of the real module,
with real NVMLError codes) reads on every call and writes on every change, so a test and the subprocesses it
starts see the same GPU, as they would a real one. Nothing here can reach a real GPU: `fake_gpu_nvml` replaces
wattbench's pynvml before any call is made, and the fake answers only for its own UUID.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from unittest import mock

import pynvml

from wattbench.conditions import BoundedCaller
from wattbench.device import Device
from wattbench.power import nvml

NAME = "NVIDIA H100 80GB HBM3"
UUID = "GPU-2f6b8a1e-0000-4c1d-9a3e-1234567890ab"
GPU = Device("cuda", 0, NAME, UUID.removeprefix("GPU-"))
HANDLE = "h100-handle"

SM_CLOCKS = list(range(1980, 344, -15))  # NVML lists them descending
MEM_CLOCKS = [2619]

#: The GPU as found: 700 W of 200-700 W, clocks unlocked, idle at 90 W, changed by root only.
INITIAL = {"root": True, "power_limit_mw": 700_000, "range_mw": [200_000, 700_000], "default_mw": 700_000,
           "other_cap_mw": None, "sm_lock": None, "mem_lock": None, "sm_clocks": SM_CLOCKS, "mem_clocks": MEM_CLOCKS,
           "boost_sm_mhz": 1980, "sm_clock_now": None, "events": 0, "power_mw": 90_000, "ignores_changes": False,
           "unsupported": []}

#: nvml.h's clock-event bit for user-defined (locked or application) clocks.
USER_CLOCKS = pynvml.nvmlClocksEventReasonApplicationsClocksSetting


class FakeGpu:
    """The state of one GPU in `path` (created from INITIAL with `changes` when absent)."""

    def __init__(self, path: Path, **changes):
        self.path = Path(path)
        #: Called with (function name, args) before every setter call, e.g. to see what exists at that moment.
        self.before_change = None
        #: The faked pynvml, once installed (its mocks record every call).
        self.fake = None
        if not self.path.exists():
            self._write({**INITIAL, **changes})

    def state(self) -> dict:
        return json.loads(self.path.read_text())

    def update(self, **changes) -> None:
        """Change the GPU behind wattbench's back (another process, the driver)."""
        self._write({**self.state(), **changes})

    def _write(self, state: dict) -> None:
        partial = self.path.with_name(self.path.name + f".{os.getpid()}.partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, self.path)

    def install(self, fake) -> None:
        """Answer the faked pynvml's calls from this GPU's state."""
        self.fake = fake
        def read(name, function):
            def answer(*args):
                state = self.state()
                if name in state["unsupported"]:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
                return function(state, *args)
            return answer

        def change(name, function):
            def answer(handle, *args):
                if self.before_change is not None:
                    self.before_change(name, args)
                state = self.state()
                if name in state["unsupported"]:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
                if not state["root"]:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
                changed = function(state, *args)
                if not state["ignores_changes"]:
                    self._write({**state, **changed})
            return answer

        def by_uuid(state, uuid):
            if uuid != UUID:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return HANDLE

        def enforced(state, handle):
            caps = [state["power_limit_mw"]] + ([state["other_cap_mw"]] if state["other_cap_mw"] else [])
            return min(caps)

        def clock(state, handle, which):
            if which == pynvml.NVML_CLOCK_MEM:
                return state["mem_lock"] or max(state["mem_clocks"])
            return state["sm_clock_now"] or state["sm_lock"] or state["boost_sm_mhz"]

        def events(state, handle):
            locked = state["sm_lock"] is not None or state["mem_lock"] is not None
            return state["events"] | (USER_CLOCKS if locked else 0)

        def set_limit(state, milliwatts):
            low, high = state["range_mw"]
            if not low <= milliwatts <= high:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return {"power_limit_mw": milliwatts}

        def power_field(state, handle, ids):
            value = pynvml.c_nvmlFieldValue_t()
            value.valueType, value.nvmlReturn = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, pynvml.NVML_SUCCESS
            value.value.uiVal = state["power_mw"]
            return [value]

        answers = {
            "nvmlDeviceGetHandleByUUID": (read, by_uuid),
            "nvmlDeviceGetUUID": (read, lambda state, handle: UUID),
            "nvmlDeviceGetPowerManagementLimit": (read, lambda state, handle: state["power_limit_mw"]),
            "nvmlDeviceGetPowerManagementLimitConstraints": (read, lambda state, handle: list(state["range_mw"])),
            "nvmlDeviceGetPowerManagementDefaultLimit": (read, lambda state, handle: state["default_mw"]),
            "nvmlDeviceGetEnforcedPowerLimit": (read, enforced),
            "nvmlDeviceGetSupportedMemoryClocks": (read, lambda state, handle: list(state["mem_clocks"])),
            "nvmlDeviceGetSupportedGraphicsClocks":
                (read, lambda state, handle, mem: list(state["sm_clocks"]) if mem == max(state["mem_clocks"]) else []),
            "nvmlDeviceGetClockInfo": (read, clock),
            "nvmlDeviceGetCurrentClocksEventReasons": (read, events),
            "nvmlDeviceGetFieldValues": (read, power_field),
            "nvmlDeviceGetPowerUsage": (read, lambda state, handle: state["power_mw"]),
            "nvmlDeviceSetPowerManagementLimit": (change, set_limit),
            "nvmlDeviceSetGpuLockedClocks": (change, lambda state, low, high: {"sm_lock": high}),
            "nvmlDeviceResetGpuLockedClocks": (change, lambda state: {"sm_lock": None}),
            "nvmlDeviceSetMemoryLockedClocks": (change, lambda state, low, high: {"mem_lock": high}),
            "nvmlDeviceResetMemoryLockedClocks": (change, lambda state: {"mem_lock": None}),
        }
        for name, (kind, function) in answers.items():
            getattr(fake, name).side_effect = kind(name, function)


@contextlib.contextmanager
def fake_gpu_nvml(path: Path, **changes):
    """wattbench's pynvml replaced by an autospec answering from the FakeGpu in `path`; yields the FakeGpu."""
    gpu = FakeGpu(path, **changes)
    with mock.patch.object(nvml, "_caller", BoundedCaller("test-nvml")), \
            mock.patch.object(nvml, "pynvml", autospec=True) as fake:
        fake.nvmlDeviceIsMigDeviceHandle.return_value = 0
        fake.nvmlDeviceGetMigMode.return_value = [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
        fake.nvmlDeviceGetName.return_value = NAME
        gpu.install(fake)
        yield gpu


# -- sysfs trees -------------------------------------------------------------------------------------

def write(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return path


def rapl_tree(root: Path, packages: int = 2, limit_w: int = 95, max_w: int | None = 125) -> list[Path]:
    """Package zones (with a core subzone each, which is not a knob) under ROOT/class/powercap; the long-term
    limit files, one per package."""
    limits = []
    for package in range(packages):
        zone = root / "class" / "powercap" / f"intel-rapl:{package}"
        write(zone / "name", f"package-{package}")
        write(zone / "enabled", 1)
        write(zone / "energy_uj", 1000)
        write(zone / "max_energy_range_uj", 262143328850)
        write(zone / "constraint_0_name", "long_term")
        limits.append(write(zone / "constraint_0_power_limit_uw", limit_w * 1_000_000))
        if max_w is not None:
            write(zone / "constraint_0_max_power_uw", max_w * 1_000_000)
        write(zone / "constraint_1_name", "short_term")
        write(zone / "constraint_1_power_limit_uw", 2 * limit_w * 1_000_000)
        write(root / "class" / "powercap" / f"intel-rapl:{package}:0" / "name", "core")
    return limits


def cpufreq_tree(root: Path, policies: int = 2, max_mhz: int = 3500, min_mhz: int = 800,
                 available_mhz: list[int] | None = None) -> list[Path]:
    """cpufreq policies under ROOT/devices/system/cpu/cpufreq; their scaling_max_freq files."""
    limits = []
    for index in range(policies):
        policy = root / "devices" / "system" / "cpu" / "cpufreq" / f"policy{index}"
        write(policy / "cpuinfo_min_freq", min_mhz * 1000)
        write(policy / "cpuinfo_max_freq", max_mhz * 1000)
        limits.append(write(policy / "scaling_max_freq", max_mhz * 1000))
        if available_mhz is not None:
            write(policy / "scaling_available_frequencies", " ".join(str(mhz * 1000) for mhz in available_mhz))
    return limits


def values(paths: list[Path]) -> list[int]:
    return [int(path.read_text()) for path in paths]
