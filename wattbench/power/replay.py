"""Replay: a CSV power log from an external meter (e.g. a wall-plug analyzer).

The log has a header with `timestamp` (Unix seconds, or ISO 8601 date-time) and `watts`
columns. Its wall-clock timestamps are mapped onto the perf_counter clock the sampler uses,
through (time.time(), time.perf_counter()) pairs recorded while the monitor runs. The file is
re-read for each window, so a log still being written by the meter works.
"""

from __future__ import annotations

import csv
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.power.base import Channel, Probe, SourceStatus

SCOPE = "external meter (everything behind the plug)"


class ReplayError(UsageError, ValueError):
    """The replay file cannot be used; the message names the file, and the line at fault where there is one."""


def parse_timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(wall-clock seconds, watts) from the CSV log (columns `schema.REPLAY_COLUMNS`), checked line by line."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return _parse(csv.reader(handle), path)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not a CSV text file (not UTF-8)") from None
    except csv.Error as exc:
        raise ReplayError(f"{path}: not a readable CSV file: {exc}") from None


def _parse(rows, path: Path) -> tuple[np.ndarray, np.ndarray]:
    header = [h.strip().lower() for h in next(rows, [])]
    if any(column not in header for column in schema.REPLAY_COLUMNS):
        raise ReplayError(f"{path}: the header must name a 'timestamp' and a 'watts' column, got {header}")
    t_col, w_col = (header.index(column) for column in schema.REPLAY_COLUMNS)
    times, watts = [], []
    for row in rows:
        line = rows.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            stamp, power = parse_timestamp(row[t_col].strip()), float(row[w_col])
        except (IndexError, ValueError, OverflowError, OSError):  # the last two: dates beyond the platform's range
            raise ReplayError(f"{path}:{line}: expected a timestamp and a number of watts, got {row}") from None
        if not (math.isfinite(stamp) and math.isfinite(power)) or power < 0:
            raise ReplayError(f"{path}:{line}: timestamp and watts must be finite, watts >= 0, got {row}")
        if times and stamp <= times[-1]:
            raise ReplayError(f"{path}:{line}: timestamps must increase ({stamp} after {times[-1]})")
        times.append(stamp)
        watts.append(power)
    if len(times) < 2:
        raise ReplayError(f"{path}: needs at least 2 readings, found {len(times)}")
    return np.array(times), np.array(watts)


def clock_offset() -> float:
    """time.time() - time.perf_counter(), read between two perf_counter calls to halve the error."""
    before = time.perf_counter()
    wall = time.time()
    after = time.perf_counter()
    return wall - (before + after) / 2


class ReplayLog:
    def __init__(self, path: str):
        self.path = Path(path)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The log on the perf_counter clock."""
        times, watts = read_log(self.path)
        return times - clock_offset(), watts


def probe(replay_path: str | None) -> Probe:
    if replay_path is None:
        return Probe(SourceStatus("replay", False, "no replay file given (a CSV log of timestamp,watts from an "
                                                   "external meter)"))
    log = ReplayLog(replay_path)
    try:
        times, _ = read_log(log.path)
    except ReplayError as err:
        return Probe(SourceStatus("replay", False, str(err)))
    channel = Channel("replay", "replay", "replay", SCOPE, load=log.load)
    detail = f"{replay_path}: {len(times)} readings so far, wall-clock aligned"
    return Probe(SourceStatus("replay", True, detail), [channel], [channel], {"path": str(replay_path)})
