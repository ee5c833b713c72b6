"""Precision as a value: parsed once, printed back exactly, and one spec-table peak for every reader."""

import math

import pytest
import torch

from wattbench.metrics import model_flops_utilization
from wattbench.precision import Precision, UnknownPrecision
from wattbench.report.load import _spec_columns
from wattbench.specs import load_specs
from wattbench.workloads import cases, workloads
from wattbench.device import detect

H100 = "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("text, value", [
    ("fp32", Precision("fp32")),
    ("bf16", Precision("bf16")),
    ("fp16", Precision("fp16")),
    ("fp8", Precision("fp8")),
    ("int8w-bf16", Precision("bf16", weights="int8")),
    ("int8w-fp32", Precision("fp32", weights="int8")),
    ("int4w-bf16", Precision("bf16", weights="int4")),
    ("sp24-bf16", Precision("bf16", sparsity="2:4")),
    ("sp24-int8w-bf16", Precision("bf16", weights="int8", sparsity="2:4")),
])
def test_parse_and_str_round_trip(text, value):
    assert Precision.parse(text) == value
    assert str(value) == text
    assert Precision.parse(value) is value


def test_every_registry_precision_round_trips():
    texts = {p for w in workloads() for precisions in w.precisions.values() for p in precisions}
    assert {"fp32", "bf16", "int8w-bf16", "sp24-bf16"} <= texts
    for text in texts:
        assert str(Precision.parse(text)) == text


@pytest.mark.parametrize("text", ["fp64", "int8w", "bf16-int8w", "int3w-bf16", "sp22-bf16", "", "x-y-bf16", None])
def test_unknown_precisions_are_refused_naming_them(text):
    with pytest.raises(UnknownPrecision, match="precision") as caught:
        Precision.parse(text)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, KeyError)
    assert not str(caught.value).startswith("'")  # one readable line, not a quoted KeyError


def test_dtype_element_size_and_weight_format():
    assert Precision.parse("int8w-bf16").dtype == torch.bfloat16
    assert Precision.parse("fp32").dtype == torch.float32
    for text in ("fp32", "bf16", "fp16"):
        precision = Precision.parse(text)
        assert precision.element_size == torch.empty((), dtype=precision.dtype).element_size()
    assert [Precision.parse(t).weight_format for t in ("bf16", "int8w-bf16", "sp24-bf16")] == ["dense", "int8w", "sp24"]
    assert Precision.parse("int8w-bf16").dense() == Precision("bf16")


def test_bf16_activations_are_held_to_the_bf16_peak_by_every_reader():
    """int8w-bf16 and sp24-bf16 multiply in bf16: the roofline, the report row and MFU all find the bf16 peak."""
    from wattbench.selfcheck.kernels import roofline_tflops

    spec = load_specs().find(H100)
    bf16 = spec.peak_tflops["bf16"]
    assert Precision.parse("int8w-bf16").peak_dtype == "bf16"
    for text in ("int8w-bf16", "sp24-bf16", "bf16"):
        assert spec.peak_for(text) == bf16
        assert roofline_tflops(spec, text, flops=1e15, bytes_moved=1.0) == bf16
        assert _spec_columns(load_specs(), H100, text, 100.0, 1.0, math.inf)["peak_tflops"] == bf16
        assert model_flops_utilization(100.0, H100, text, interpreted=False)["mfu_peak_tflops"] == bf16
    assert spec.peak_for("fp32") == spec.peak_tflops["fp32"]
    assert spec.peak_for("not a precision") is None


def test_registry_cases_still_build_from_precision_strings():
    case = next(c for c in cases("quick", detect("cpu")) if c.precision == "int8w-fp32")
    assert case.dtype == torch.float32


def test_the_quantised_formats_and_their_peaks():
    """fp8 multiplies on the FP8 tensor cores with bf16 tensors around it; int4w on its activations' peak."""
    import torch as _torch

    fp8, int4 = Precision.parse("fp8"), Precision.parse("int4w-bf16")
    assert (fp8.peak_dtype, fp8.weight_format, fp8.tensor_dtype, fp8.dense()) == \
        ("fp8", "fp8", _torch.bfloat16, Precision("bf16"))
    assert (int4.peak_dtype, int4.weight_format, int4.tensor_dtype) == ("bf16", "int4w", _torch.bfloat16)
    assert Precision.parse("int4w-fp32").peak_dtype == "fp32"
    spec = load_specs().find(H100)
    assert spec.peak_for("fp8") == spec.peak_tflops["fp8"] > spec.peak_for("int4w-bf16") == spec.peak_tflops["bf16"]
    assert [Precision.parse(t).quantized for t in ("fp32", "bf16", "fp8", "int8w-bf16", "int4w-fp32", "sp24-bf16")] \
        == [False, False, True, True, True, True]
