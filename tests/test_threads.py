"""CPU runs choose torch's intra-op threads so that they leave a usable CPU free, and say why."""

import pytest
import torch

from wattbench import threads


@pytest.fixture
def four_cpus(monkeypatch):
    """A process that may use 4 CPUs, where torch would start 4 threads; setting them is only recorded."""
    chosen = []
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: chosen[-1] if chosen else 4)
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return chosen


def test_by_default_one_usable_cpu_is_left_free(four_cpus):
    settings = threads.choose_cpu_threads(None)
    assert four_cpus == [3] and settings["torch_intra_op"] == 3 and settings["usable_cpus"] == 4
    assert settings["chosen_by"].startswith("default: one usable CPU left")
    assert set(settings["variables"]) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}


def test_a_requested_count_or_omp_num_threads_wins(four_cpus, monkeypatch):
    assert threads.choose_cpu_threads(2)["chosen_by"] == "--wattbench-cpu-threads" and four_cpus == [2]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.choose_cpu_threads(None)["chosen_by"] == "OMP_NUM_THREADS" and four_cpus[-1] == 2


@pytest.mark.parametrize("content, quota", [("200000 100000\n", 2.0), ("max 100000\n", None), ("junk", None),
                                            ("5 0", None)])
def test_a_cgroup_quota_narrows_the_usable_cpus(tmp_path, content, quota):
    path = tmp_path / "cpu.max"
    path.write_text(content)
    assert threads.cgroup_cpu_quota(path) == quota
    assert threads.cgroup_cpu_quota(tmp_path / "absent") is None
