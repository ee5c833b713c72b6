"""The run file as a journal: what a resumed run keeps of its earlier sessions, and what counts as recorded."""

import json

import pytest

from wattbench.config import RunConfig
from wattbench.device import detect
from wattbench.errors import UsageError
from wattbench.journal import RunJournal, earlier_segments, recorded_cases


def test_a_segment_still_running_when_resumed_ended_without_saying_how():
    block = {"segments": [{"started_utc": "a", "ended_utc": "b", "end": "interrupted", "signal": "SIGINT"},
                          {"started_utc": "c", "ended_utc": "d", "end": "running"}]}
    first, second = earlier_segments(block)
    assert first == block["segments"][0]
    assert second["end"] == "died" and "killed" in second["note"] and second["started_utc"] == "c"


def test_a_run_file_from_before_segments_has_one_unrecorded_segment():
    assert earlier_segments({"started_utc": "a", "ended_utc": "b"}) == [
        {"started_utc": "a", "ended_utc": "b", "end": "unrecorded"}]
    assert earlier_segments({}) == []


def test_failed_and_skipped_cases_count_as_recorded():
    benchmarks = [{"params": {"wattbench_case": "a"}}, {"params": None}, {}]
    failed = [{"case": "b", "error": "x"}]
    skipped = [{"case": "c", "reason": "y"}, {"case": None, "reason": "z"}]
    assert recorded_cases(benchmarks, failed, skipped) == {"a", "b", "c"}


def test_resuming_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"benchmarks": [], "wattbench": {"preset": "quick", "select": "gemm"}}))
    journal = RunJournal(path, resume=True)
    journal.check_resumable(RunConfig(detect("cpu"), preset="quick", seed=3, keyword="gemm"))
    with pytest.raises(UsageError, match=r"run\.json: this run was made with -k 'gemm', not 'llm': resume it"):
        journal.check_resumable(RunConfig(detect("cpu"), preset="quick", seed=3, keyword="llm"))
