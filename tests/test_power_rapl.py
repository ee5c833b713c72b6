"""RAPL through a fake /sys/class/powercap tree: domains, wraparound, missing, permission."""

from pathlib import Path

import pytest

from wattbench.device import Device
from wattbench.power import rapl, sysfs
from wattbench.power.base import SensorFault

CPU = Device("cpu", None, "Test CPU")
GPU = Device("cuda", 0, "Test GPU")


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    path = root / "class" / "powercap" / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def two_sockets(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 100)
    zone(tmp_path, "intel-rapl:0:0", "core", 50)
    zone(tmp_path, "intel-rapl:0:2", "dram", 20)
    zone(tmp_path, "intel-rapl:1", "package-1", 300)
    zone(tmp_path, "intel-rapl:2", "psys", 900)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 100)
    return tmp_path


def test_domains_stay_separate_and_the_cpu_is_the_sum_of_packages(two_sockets):
    found = rapl.probe(CPU, str(two_sockets))
    assert found.status.available
    names = [c.name for c in found.channels]
    assert names == ["rapl:package-0", "rapl:package-0/dram", "rapl:package-1", "rapl:psys"]  # no core, no mmio
    assert [c.name for c in found.primary] == ["rapl:package-0", "rapl:package-1"]
    assert all(c.method == "counter" for c in found.channels)
    assert found.channels[0].read() == pytest.approx(100e-6)


def test_beside_a_gpu_rapl_is_sampled_but_not_the_device_energy(two_sockets):
    found = rapl.probe(GPU, str(two_sockets))
    assert found.status.available and found.channels and not found.primary
    assert "host CPU" in found.status.detail


def test_wraparound_is_unwrapped_with_max_energy_range(tmp_path):
    path = zone(tmp_path, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    counter = rapl.RaplCounter(path)
    readings = []
    for raw in (900_000, 990_000, 10_000, 500_000, 5_000):
        (path / "energy_uj").write_text(str(raw))
        readings.append(counter.read())
    assert readings == pytest.approx([0.9, 0.99, 1.01, 1.5, 2.005])


def test_missing_powercap_says_why(tmp_path):
    status = rapl.probe(CPU, str(tmp_path)).status
    assert not status.available and "powercap absent" in status.detail


def test_empty_powercap_says_why(tmp_path):
    (tmp_path / "class" / "powercap").mkdir(parents=True)
    status = rapl.probe(CPU, str(tmp_path)).status
    assert not status.available and "no package, dram or psys zones" in status.detail


def test_permission_denied_is_explained_in_one_line_with_the_fix(two_sockets, monkeypatch):
    real = sysfs.read_int

    def deny_energy(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(sysfs, "read_int", deny_energy)
    status = rapl.probe(CPU, str(two_sockets)).status
    assert not status.available
    assert "permission denied" in status.detail and "chmod a+r" in status.detail and "\n" not in status.detail


def test_a_zone_that_vanishes_mid_run_is_a_permanent_fault(tmp_path):
    path = zone(tmp_path, "intel-rapl:0", "package-0", 100)
    counter = rapl.RaplCounter(path)
    (path / "energy_uj").unlink()
    with pytest.raises(SensorFault) as caught:
        counter.read()
    assert caught.value.permanent and "cannot read" in caught.value.reason
