"""Matching a run's device name to the spec table: a MIG slice is never taken for its whole GPU."""

import json

import pytest

from wattbench.specs import load_specs


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                                  "NVIDIA A100-SXM4-80GB MIG 1c.2g.20gb", "MIG slice of NVIDIA H100 80GB HBM3"])
def test_a_mig_slice_never_matches_its_whole_gpus_peaks(name):
    assert load_specs().find(name) is None


def test_the_whole_gpu_still_matches():
    assert load_specs().find("NVIDIA H100 80GB HBM3").name == "NVIDIA H100 SXM"


def test_a_slice_matches_an_entry_written_for_slices(tmp_path):
    figure = {"value": 1.0, "source": "my measurement of one 1g.10gb slice"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"format": "wattbench-device-specs/1", "devices": [
        {"name": "H100 MIG 1g.10gb", "match": [r"H100.*MIG 1g\.10gb"], "peak_tflops": {"bf16": figure}}]}))
    table = load_specs(path)
    assert table.find("NVIDIA H100 80GB HBM3 MIG 1g.10gb").name == "H100 MIG 1g.10gb"
    assert table.find("NVIDIA H100 80GB HBM3").name == "NVIDIA H100 SXM"  # the slice entry is not the GPU's
