"""Reading integers from sysfs, in one place so tests can fake a file that denies permission."""

from __future__ import annotations

from pathlib import Path


def read_int(path: Path) -> int:
    return int(path.read_text().strip())


def read_text(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default
