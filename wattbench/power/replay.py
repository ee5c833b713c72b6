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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from wattbench import schema
from wattbench.errors import UsageError
from wattbench.power.base import Channel, Probe, SourceStatus

SCOPE = "external meter (everything behind the plug)"

#: How far behind the present a log's last reading may be at the start of a run: a meter that logs
#: every few seconds, or buffers its writes, is still logging.
LIVE_LAG_S = 30.0


class ReplayError(UsageError, ValueError):
    """The replay file cannot be used; the message names the file, and the line at fault where there is one."""


def parse_timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(wall-clock seconds, watts) from the CSV log (columns `schema.REPLAY_COLUMNS`), checked line by line."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ReplayError(f"{path}: is a directory, not a CSV power log")
        if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
            raise ReplayError(f"{path}: is not a regular file, not a CSV power log")
        with open(path, newline="", encoding="utf-8") as handle:
            return _parse(csv.reader(handle), path)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not a CSV text file (not UTF-8)") from None
    except csv.Error as exc:
        raise ReplayError(f"{path}: not a readable CSV file: {exc}") from None


def _parse(rows, path: Path) -> tuple[np.ndarray, np.ndarray]:
    first = next(rows, None)
    if first is None:
        raise ReplayError(f"{path}: is empty: expected a header naming a 'timestamp' and a 'watts' column")
    header = [h.strip().lower() for h in first]
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
        if not (math.isfinite(stamp) and math.isfinite(power)):
            raise ReplayError(f"{path}:{line}: timestamp and watts must be finite numbers, got {row}")
        if power < 0:
            raise ReplayError(f"{path}:{line}: watts must be >= 0, got {row}")
        if times and stamp <= times[-1]:
            raise ReplayError(f"{path}:{line}: timestamps must increase ({stamp} after {times[-1]})")
        times.append(stamp)
        watts.append(power)
    if len(times) < 2:
        raise ReplayError(f"{path}: needs at least 2 readings, found {len(times)}")
    return np.array(times), np.array(watts)


def wall_clock(stamp: float, timespec: str = "seconds") -> str:
    """A Unix time as an ISO 8601 UTC date-time, or as seconds when no date can show it."""
    try:
        return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{stamp:.6g} s (Unix time)"


def check_log(path: Path, now: float | None = None) -> None:
    """Refuse, before the first benchmark, a log that is unusable or cannot cover a run starting at `now`.

    The meter writes the log while the run goes on, so at the start the log must already have begun
    (its first reading at or before `now`) and still be current (its last reading at most
    LIVE_LAG_S before `now`); a log from another day, or on a clock that is off, never covers a window.
    """
    now = time.time() if now is None else now
    times, _ = read_log(path)
    if times[0] <= now and times[-1] >= now - LIVE_LAG_S:
        return
    why = "starts after it" if times[0] > now else f"ends more than {LIVE_LAG_S:g} s before it"
    raise ReplayError(f"{path}: the log covers {wall_clock(times[0])} to {wall_clock(times[-1])} (wall clock), "
                      f"but the run starts at {wall_clock(now)} and the log {why}: the meter must log while the "
                      f"run goes on, on this host's clock")


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
