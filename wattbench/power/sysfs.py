"""Reading and writing integers in sysfs, in one place so tests can fake a file that denies permission."""

from __future__ import annotations

from pathlib import Path

from wattbench.power.base import SensorFault


def read_int(path: Path) -> int:
    return int(path.read_text().strip())


def write_int(path: Path, value: int) -> None:
    """Write `value` to a sysfs attribute (a knob such as a RAPL limit); OSError as the kernel gives it."""
    with open(path, "w") as attribute:
        attribute.write(f"{int(value)}\n")


def read_sensor(path: Path, denied_hint: str = "") -> int:
    """A sensor file's integer; a failure is a SensorFault, permanent when access is denied or
    the file is gone (it will not come back while the run lasts)."""
    try:
        return read_int(path)
    except PermissionError:
        hint = f": {denied_hint}" if denied_hint else ""
        raise SensorFault(f"permission denied reading {path}{hint}", permanent=True) from None
    except (OSError, ValueError) as err:
        raise SensorFault(f"cannot read {path}: {err}", permanent=isinstance(err, FileNotFoundError)) from None


def read_text(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default
