"""Several GPUs: planning one pinned worker per GPU, and merging their run files (runs on CPU)."""

import json

import pytest

from wattbench import multi
from wattbench.config import from_command
from wattbench.errors import UsageError
from wattbench.multi import Worker


@pytest.fixture
def no_visible_setting(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_all_gives_one_worker_per_gpu_each_seeing_only_its_own(no_visible_setting):
    workers = multi.plan_workers("all", 4)
    assert [w.device for w in workers] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [w.env for w in workers] == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]


def test_a_list_picks_those_gpus(no_visible_setting):
    assert [w.index for w in multi.plan_workers("2, cuda:0", 4)] == [2, 0]


@pytest.mark.parametrize("parent, expected", [
    ("4,5", ["4", "5"]),  # a scheduler gave the job GPUs 4 and 5: worker 0 must not land on GPU 0
    ("GPU-8f1e2a3b-aaaa-bbbb-cccc-000000000001, GPU-3c", ["GPU-8f1e2a3b-aaaa-bbbb-cccc-000000000001", "GPU-3c"]),
    ("MIG-0a1b2c3d-1111-2222-3333-444444444444,MIG-5e6f", ["MIG-0a1b2c3d-1111-2222-3333-444444444444", "MIG-5e6f"]),
    ("5,4,,7", ["5", "4"]),  # CUDA reads up to the first empty entry
])
def test_each_worker_gets_the_parents_own_entry_for_its_gpu(monkeypatch, parent, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", parent)
    workers = multi.plan_workers("all", 2)
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == expected
    assert [w.device for w in workers] == ["cuda:0", "cuda:1"]  # as the parent (and the user) numbers them
    assert multi.plan_workers("1", 2)[0].env == {"CUDA_VISIBLE_DEVICES": expected[1]}


def test_a_visible_list_shorter_than_the_gpus_torch_sees_is_refused():
    with pytest.raises(UsageError, match="names 1 device"):
        multi.plan_workers("all", 2, visible="3")


@pytest.mark.parametrize("devices, count, message", [
    ("all", 0, "torch sees none"),
    ("0,0", 2, "GPU 0 listed twice"),
    ("0,5", 2, "GPU 5 does not exist"),
    ("first", 2, "use 'all' or GPU indices"),
    (",", 2, "no GPU index"),
])
def test_bad_device_lists_are_refused(no_visible_setting, devices, count, message):
    with pytest.raises(UsageError, match=message):
        multi.plan_workers(devices, count)


def part(name, benchmarks, complete=True, failed=()):
    return {"machine_info": {"node": "h", "wattbench": {"device": {"name": name}}}, "commit_info": {},
            "datetime": "d", "version": "5", "benchmarks": benchmarks,
            "wattbench": {"device": "cuda:0", "device_name": name, "complete": complete, "failed": list(failed),
                          "skipped": [], "power": {"source": "nvml"}, "started_utc": "a", "ended_utc": "b",
                          "planned": [b["params"]["wattbench_case"] for b in benchmarks] + [f["case"] for f in failed],
                          "segments": [{"started_utc": "a", "ended_utc": "b", "missing": []}]}}


def bench(case):
    return {"name": f"test_kernel[{case}]", "fullname": f"suites/test_kernels.py::test_kernel[{case}]",
            "params": {"wattbench_case": case}, "extra_info": {"device": "cuda:0", "workload": case}}


def test_merge_names_the_physical_gpu_of_every_record():
    merged = multi.merge_runs([(Worker(0, "4"), part("H100", [bench("a"), bench("b")])),
                               (Worker(3, "GPU-3c"), part("H100", [bench("a")], complete=False,
                                                          failed=[{"case": "b", "error": "boom"}]))])
    assert [b["extra_info"]["device"] for b in merged["benchmarks"]] == ["cuda:0", "cuda:0", "cuda:3"]
    assert merged["benchmarks"][2]["fullname"].endswith("@cuda:3")
    block = merged["wattbench"]
    assert block["device"] == "cuda:0,cuda:3" and block["device_name"] == "H100"
    assert block["complete"] is False
    assert block["failed"] == [{"case": "b", "error": "boom", "device": "cuda:3"}]
    assert [(d["device"], d["cuda_visible_devices"]) for d in block["per_device"]] == [("cuda:0", "4"),
                                                                                        ("cuda:3", "GPU-3c")]
    assert [d["planned"] for d in block["per_device"]] == [["a", "b"], ["a", "b"]]
    assert all(d["segments"] for d in block["per_device"]) and "segments" not in block
    assert block["planned"] == ["a", "b"]
    assert [(d["device"], d["cuda_visible_devices"], d["name"]) for d in merged["machine_info"]["wattbench"]["devices"]] \
        == [("cuda:0", "4", "H100"), ("cuda:3", "GPU-3c", "H100")]


def test_workers_run_in_parallel_and_their_files_are_merged(tmp_path, capsys):
    """The orchestration end to end, with each 'GPU' worker running on the CPU."""
    runs = tmp_path / "runs"
    runs.mkdir()
    select = "gemm and infer and torch and M1- and fp32 and not int8w and not int4w"
    config, pytest_args = from_command("cpu", "quick", select, [])  # each 'GPU' worker sees the CPU
    code = multi.run_workers([Worker(0, "0"), Worker(1, "1")], config, runs, pytest_args)
    assert code == 0
    (merged_file,) = runs.glob("[!.]*.json")
    merged = json.loads(merged_file.read_text())
    assert sorted(b["extra_info"]["device"] for b in merged["benchmarks"]) == ["cuda:0", "cuda:1"]
    assert merged["wattbench"]["complete"] is True
    out = capsys.readouterr().out
    assert "[cuda:0]" in out and "[cuda:1]" in out  # each worker's output, relayed with its GPU
    assert len(list(runs.glob(".*.workers/cuda*/runs/*.json"))) == 2  # each worker's own file is kept
