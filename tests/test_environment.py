"""The environment block of a run file: every fact present, or unknown with the reason."""

import json
import re

import wattbench
from wattbench import environment
from wattbench.device import Device
from wattbench.power import nvml

CPU = Device("cpu", None, "Test CPU")


def is_unknown(value) -> bool:
    return isinstance(value, dict) and value.get("unknown") is True and bool(value.get("reason"))


def test_cpu_run_records_software_cpu_and_explains_every_gpu_fact():
    info = environment.describe(CPU)
    json.dumps(info)  # the run file is JSON
    assert info["wattbench_version"] == wattbench.__version__
    assert info["device"] == {"spec": "cpu", "type": "cpu", "name": "Test CPU", "uuid": None}
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert 1 <= info["cpu_usable"] <= info["cpu_count"]
    assert isinstance(info["cpu_governor"], str) or is_unknown(info["cpu_governor"])
    for package in ("torch", "triton", "nvidia-ml-py", "pytest-benchmark"):
        assert re.match(r"\d+\.\d+", info["packages"][package]), package
    assert set(info["gpu"]) == set(nvml.GPU_FACTS)
    for fact, value in info["gpu"].items():
        assert is_unknown(value), fact
        assert "nvml" in value["reason"].lower() or "device is cpu" in value["reason"], value["reason"]


def test_gpu_facts_describe_the_gpu_benchmarked_not_nvmls_first(monkeypatch):
    """CUDA's cuda:0 is NVML's second GPU (fastest first): the facts must be cuda:0's."""
    from fake_nvml import fake_pynvml

    import wattbench.cuda

    ours, other = "bbbbbbbb-1111-2222-3333-444444444444", "aaaaaaaa-1111-2222-3333-444444444444"
    monkeypatch.setattr(wattbench.cuda, "device_facts", lambda index: {"name": "NVIDIA H100 80GB HBM3"})
    with fake_pynvml(monkeypatch) as fake:
        handles = {"GPU-" + other: "nvml0", "GPU-" + ours: "nvml1"}
        fake.nvmlDeviceGetHandleByUUID.side_effect = handles.__getitem__
        fake.nvmlDeviceGetHandleByIndex.side_effect = ["nvml0", "nvml1"].__getitem__
        fake.nvmlDeviceGetUUID.side_effect = {handle: uuid for uuid, handle in handles.items()}.__getitem__
        info = environment.describe(Device("cuda", 0, "NVIDIA H100 80GB HBM3", ours))
    assert info["device"]["uuid"] == ours and info["gpu"]["uuid"] == "GPU-" + ours


def write_governors(root, governors):
    for index, governor in enumerate(governors):
        folder = root / f"cpu{index}" / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text(governor + "\n")


def test_governor_shared_by_every_cpu(tmp_path):
    write_governors(tmp_path, ["performance"] * 4)
    (tmp_path / "cpufreq").mkdir()  # policy folders beside cpuN are not CPUs
    assert environment.cpu_governor(tmp_path) == "performance"


def test_mixed_governors_are_counted(tmp_path):
    write_governors(tmp_path, ["powersave", "performance", "powersave", "performance", "powersave"])
    assert environment.cpu_governor(tmp_path) == "performance on 2 CPUs, powersave on 3 CPUs"


def test_governor_without_cpufreq_is_unknown_with_the_reason(tmp_path):
    (tmp_path / "cpu0").mkdir()
    governor = environment.cpu_governor(tmp_path)
    assert is_unknown(governor) and str(tmp_path) in governor["reason"] and "cpufreq" in governor["reason"]


def test_a_package_that_is_not_installed_is_unknown(monkeypatch):
    monkeypatch.setattr(environment, "PACKAGES", ("torch", "wattbench-no-such-package"))
    versions = environment.package_versions()
    assert isinstance(versions["torch"], str)
    assert versions["wattbench-no-such-package"] == {"unknown": True, "reason": "not installed"}


def test_git_commit_of_this_checkout_has_an_id_and_a_dirty_flag():
    commit = environment.git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}", commit["id"]) and isinstance(commit["dirty"], bool)


def test_git_commit_outside_a_checkout_is_unknown(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "wattbench"
    package.mkdir(parents=True)
    monkeypatch.setattr(wattbench, "__file__", str(package / "__init__.py"))
    commit = environment.git_commit()
    assert is_unknown(commit) and "git checkout" in commit["reason"]

