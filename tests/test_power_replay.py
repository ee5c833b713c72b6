"""Replay of an external meter's CSV log: parsing, wall-clock alignment, bad files."""

import time

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
    ("timestamp,watts\n1,2\n2,abc\n", r":3: expected a timestamp"),
    ("timestamp,watts\n1,2\n1,3\n", r":3: timestamps must increase"),
    ("timestamp,watts\n1,-5\n2,3\n", r":2: .*watts >= 0"),
    ("timestamp,watts\n1,2\n", "at least 2 readings"),
])
def test_malformed_logs_name_file_and_line(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(replay.ReplayError, match=match):
        replay.read_log(path)


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
    assert not after.valid and "do not cover" in after.reason
    path.write_text("garbage")
    broken = sampler.evaluate("broken", t - 3.0, t - 1.0).channels["replay"]
    assert not broken.valid and "header" in broken.reason
