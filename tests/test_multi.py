"""Several GPUs: planning one pinned worker per GPU, and merging their run files (runs on CPU)."""

import json

import pytest

from wattbench import multi
from wattbench.errors import UsageError
from wattbench.multi import Worker


def test_all_gives_one_worker_per_gpu_each_seeing_only_its_own():
    workers = multi.plan_workers("all", 4)
    assert [w.device for w in workers] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [w.env for w in workers] == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]


def test_a_list_picks_those_gpus():
    assert [w.index for w in multi.plan_workers("2, cuda:0", 4)] == [2, 0]


@pytest.mark.parametrize("devices, count, message", [
    ("all", 0, "torch sees none"),
    ("0,0", 2, "GPU 0 listed twice"),
    ("0,5", 2, "GPU 5 does not exist"),
    ("first", 2, "use 'all' or GPU indices"),
    (",", 2, "no GPU index"),
])
def test_bad_device_lists_are_refused(devices, count, message):
    with pytest.raises(UsageError, match=message):
        multi.plan_workers(devices, count)


def part(name, benchmarks, complete=True, failed=()):
    return {"machine_info": {"node": "h", "wattbench": {"device": {"name": name}}}, "commit_info": {},
            "datetime": "d", "version": "5", "benchmarks": benchmarks,
            "wattbench": {"device": "cuda:0", "device_name": name, "complete": complete, "failed": list(failed),
                          "skipped": [], "power": {"source": "nvml"}, "started_utc": "a", "ended_utc": "b"}}


def bench(case):
    return {"name": f"test_kernel[{case}]", "fullname": f"suites/test_kernels.py::test_kernel[{case}]",
            "params": {"wattbench_case": case}, "extra_info": {"device": "cuda:0", "workload": case}}


def test_merge_names_the_physical_gpu_of_every_record():
    merged = multi.merge_runs([(Worker(0), part("H100", [bench("a"), bench("b")])),
                               (Worker(3), part("H100", [bench("a")], complete=False,
                                                failed=[{"case": "b", "error": "boom"}]))])
    assert [b["extra_info"]["device"] for b in merged["benchmarks"]] == ["cuda:0", "cuda:0", "cuda:3"]
    assert merged["benchmarks"][2]["fullname"].endswith("@cuda:3")
    block = merged["wattbench"]
    assert block["device"] == "cuda:0,cuda:3" and block["device_name"] == "H100"
    assert block["complete"] is False
    assert block["failed"] == [{"case": "b", "error": "boom", "device": "cuda:3"}]
    assert [d["device"] for d in block["per_device"]] == ["cuda:0", "cuda:3"]
    assert [d["device"] for d in merged["machine_info"]["wattbench"]["devices"]] == ["cuda:0", "cuda:3"]


def test_workers_run_in_parallel_and_their_files_are_merged(tmp_path, capsys):
    """The orchestration end to end, with each 'GPU' worker running on the CPU."""
    runs = tmp_path / "runs"
    runs.mkdir()
    select = "gemm and infer and torch and M1- and fp32 and not int8w"
    code = multi.run_workers([Worker(0), Worker(1)], "quick", select, runs, [], visible_device="cpu")
    assert code == 0
    (merged_file,) = runs.glob("[!.]*.json")
    merged = json.loads(merged_file.read_text())
    assert sorted(b["extra_info"]["device"] for b in merged["benchmarks"]) == ["cuda:0", "cuda:1"]
    assert merged["wattbench"]["complete"] is True
    out = capsys.readouterr().out
    assert "[cuda:0]" in out and "[cuda:1]" in out  # each worker's output, relayed with its GPU
    assert len(list(runs.glob(".*.workers/cuda*/runs/*.json"))) == 2  # each worker's own file is kept
