"""Replay of an external meter's CSV log: parsing, wall-clock alignment, bad files."""

import time
from datetime import datetime, timezone

import numpy as np
import pytest

from wattbench.power import replay
from wattbench.power.sampler import Sampler


def write_log(path, rows, header="timestamp,watts"):
    path.write_text(header + "\n" + "".join(f"{t},{w}\n" for t, w in rows))
    return path


def test_log_is_mapped_onto_the_perf_counter_clock(tmp_path):
    now = time.time()
    path = write_log(tmp_path / "meter.csv", [(now - 2 + i * 0.5, 100 + i) for i in range(9)])
    times, watts = replay.ReplayLog(str(path)).load()
    offset = time.time() - time.perf_counter()
    assert times[0] == pytest.approx(now - 2 - offset, abs=0.01)
    assert list(watts) == [100 + i for i in range(9)]


def test_iso_timestamps_are_accepted(tmp_path):
    path = tmp_path / "meter.csv"
    path.write_text("Timestamp,Watts\n2024-05-01T12:00:00+00:00,50\n2024-05-01T12:00:01+00:00,70\n")
    times, watts = replay.read_log(path)
    assert np.diff(times) == pytest.approx([1.0]) and list(watts) == [50, 70]


@pytest.mark.parametrize("text, match", [
    ("time,power\n1,2\n2,3\n", "header must name"),
    ("garbage\n", "header must name"),
    ("", r"bad\.csv: is empty"),
    ("timestamp,watts\n", "at least 2 readings, found 0"),
    ("timestamp,watts\n1,2\n2,abc\n", r":3: expected a timestamp"),
    ("timestamp,watts\n1,2\n1,3\n", r":3: timestamps must increase"),
    ("timestamp,watts\n1,2\n3,4\n2,3\n", r":4: timestamps must increase \(2\.0 after 3\.0\)"),
    ("timestamp,watts\n1,-5\n2,3\n", r":2: watts must be >= 0"),
    ("timestamp,watts\n1,2\n2,nan\n", r":3: timestamp and watts must be finite"),
    ("timestamp,watts\n1,2\n", "at least 2 readings"),
    ("timestamp,watts\n1,2\n2,\x003\n", r":3: expected a timestamp"),
])
def test_malformed_logs_name_file_and_line(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(replay.ReplayError, match=match):
        replay.read_log(path)


def test_binary_data_a_directory_and_a_missing_file_say_what_they_are(tmp_path):
    binary = tmp_path / "meter.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(replay.ReplayError, match=r"meter\.bin: not a CSV text file \(not UTF-8\)"):
        replay.read_log(binary)
    with pytest.raises(replay.ReplayError, match=r": is a directory, not a CSV power log"):
        replay.read_log(tmp_path)
    with pytest.raises(replay.ReplayError, match=r"absent\.csv: cannot read: No such file or directory"):
        replay.read_log(tmp_path / "absent.csv")


@pytest.mark.parametrize("offsets, why", [
    ((-7200, -3600), "ends more than 30 s before it"),  # a log from an hour ago
    ((60, 120), "starts after it"),  # a meter whose clock runs a minute ahead
])
def test_a_log_that_cannot_cover_the_run_is_refused_in_wall_clock_time(tmp_path, offsets, why):
    now = 1_764_000_000.0  # 2025-11-24T16:00:00Z
    path = write_log(tmp_path / "meter.csv", [(now + offsets[0], 10), (now + offsets[1], 12)])
    with pytest.raises(replay.ReplayError) as refused:
        replay.check_log(path, now)
    message = str(refused.value)
    assert message.startswith(f"{path}: the log covers 2025-11-24T")
    assert "but the run starts at 2025-11-24T16:00:00Z" in message and why in message


def test_a_live_log_covers_the_run(tmp_path):
    now = time.time()
    replay.check_log(write_log(tmp_path / "meter.csv", [(now - 20, 10), (now - 5, 12)]), now)


def test_probe_reports_missing_and_bad_files(tmp_path):
    assert "no replay file given" in replay.probe(None).status.detail
    assert "No such file" in replay.probe(str(tmp_path / "absent.csv")).status.detail
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n")
    assert not replay.probe(str(bad)).status.available


def test_window_energy_from_the_log_and_invalid_when_not_covered(tmp_path):
    now = time.time()
    path = write_log(tmp_path / "meter.csv", [(now - 5 + i * 0.1, 200.0) for i in range(60)])
    found = replay.probe(str(path))
    sampler = Sampler(found.channels)
    t = time.perf_counter()
    inside = sampler.evaluate("inside", t - 3.0, t - 1.0).channels["replay"]
    assert inside.valid and inside.method == "replay" and inside.joules == pytest.approx(400.0, rel=1e-6)
    after = sampler.evaluate("after", t + 5.0, t + 6.0).channels["replay"]
    assert not after.valid and "does not cover the window" in after.reason
    stamp = datetime.fromtimestamp(now + 5 + 0.9, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    assert "(wall clock)" in after.reason and stamp in after.reason and "e+0" not in after.reason
    path.write_text("garbage")
    broken = sampler.evaluate("broken", t - 3.0, t - 1.0).channels["replay"]
    assert not broken.valid and "header" in broken.reason
