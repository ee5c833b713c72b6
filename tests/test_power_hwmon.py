"""hwmon through a fake /sys/class/hwmon tree: energy preferred, µW/µJ units, GPU vs host chips."""

from pathlib import Path

import pytest

from wattbench.device import Device
from wattbench.power import hwmon

CPU = Device("cpu", None, "Test CPU")
GPU = Device("cuda", 0, "Test GPU")


def chip(root: Path, number: int, name: str, **files: str) -> Path:
    path = root / "class" / "hwmon" / f"hwmon{number}"
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    for file_name, text in files.items():
        (path / file_name).write_text(text + "\n")
    return path


def test_energy_counters_are_preferred_and_converted_from_microjoules(tmp_path):
    chip(tmp_path, 0, "amd_energy", energy1_input="2000000", energy1_label="Ecore000",
         energy2_input="7000000", energy2_label="Esocket0", power1_input="5000000")
    found = hwmon.probe(CPU, str(tmp_path))
    assert found.status.available
    assert [c.method for c in found.channels] == ["counter", "counter"]
    assert found.primary[0].name.endswith("Esocket0")  # the whole-chip sensor, not a core
    assert found.primary[0].read() == pytest.approx(7.0)


def test_power_input_then_average_in_microwatts(tmp_path):
    chip(tmp_path, 0, "ina3221", power1_input="4500000", power1_label="VDD_CPU")
    chip(tmp_path, 1, "nct6775", power1_average="12000000")
    host = hwmon.probe(CPU, str(tmp_path))
    assert [(c.method, c.read()) for c in host.channels] == [("average", pytest.approx(12.0))]
    assert host.channels[0].settle_s == hwmon.AVERAGE_SETTLE_S
    gpu = hwmon.probe(GPU, str(tmp_path))  # INA rail monitors belong to the (Jetson) GPU
    assert [(c.method, c.read()) for c in gpu.channels] == [("instant", pytest.approx(4.5))]


def test_amdgpu_measures_the_gpu_not_the_cpu(tmp_path):
    chip(tmp_path, 0, "amdgpu", power1_average="150000000", power1_label="PPT")
    assert hwmon.probe(GPU, str(tmp_path)).primary[0].name.endswith("PPT")
    status = hwmon.probe(CPU, str(tmp_path)).status
    assert not status.available and "only on amdgpu" in status.detail


def test_no_sensors_and_missing_tree_say_why(tmp_path):
    assert "absent" in hwmon.probe(CPU, str(tmp_path)).status.detail
    chip(tmp_path, 0, "k10temp", temp1_input="40000")
    status = hwmon.probe(CPU, str(tmp_path)).status
    assert not status.available and "no power or energy sensors" in status.detail


def gpu_board(root: Path, number: int, address: str, watts: int) -> None:
    """An amdgpu chip whose `device` link points at the board's PCI device, as on a real host."""
    board = root / "devices" / "pci0000:00" / address
    board.mkdir(parents=True)
    path = chip(root, number, "amdgpu", power1_average=str(watts * 1_000_000), power1_label="PPT")
    (path / "device").symlink_to(board)


def test_a_gpu_reads_the_board_at_its_pci_address_not_the_nth_chip(tmp_path, monkeypatch):
    gpu_board(tmp_path, 0, "0000:03:00.0", 100)
    gpu_board(tmp_path, 1, "0000:83:00.0", 200)
    monkeypatch.setattr(hwmon, "pci_address", lambda device: "0000:83:00")  # torch's cuda:0 is the second board
    assert hwmon.probe(GPU, str(tmp_path)).primary[0].read() == pytest.approx(200.0)
    monkeypatch.setattr(hwmon, "pci_address", lambda device: "0000:c1:00")
    status = hwmon.probe(GPU, str(tmp_path)).status
    assert not status.available and "none at cuda:0's PCI address 0000:c1:00" in status.detail


def test_without_a_pci_address_the_index_picks_the_chip(tmp_path, monkeypatch):
    gpu_board(tmp_path, 0, "0000:03:00.0", 100)
    gpu_board(tmp_path, 1, "0000:83:00.0", 200)
    monkeypatch.setattr(hwmon, "pci_address", lambda device: None)
    assert hwmon.probe(Device("cuda", 1, "Test GPU"), str(tmp_path)).primary[0].read() == pytest.approx(200.0)
