"""A benchmark's precision as a value: the activations' dtype, how the weights are stored, sparsity.

Records, the registry and the CLI name a precision by a short string, parsed here and nowhere else:

    "fp32", "bf16", "fp16"          dense weights and activations of that dtype
    "fp8"                           e4m3 weights and activations with fp32 scales: bf16 tensors quantised on
                                    the way into each GEMM, whose output is bf16 (`tensor_dtype`)
    "int8w-bf16"                    weight-only int8 (int8 weights dequantised to bf16 in the kernel)
    "int4w-bf16", "int4w-fp32"      weight-only int4 in groups along K (dequantised in the kernel)
    "sp24-bf16"                     2:4 semi-structured sparse bf16 weights

`str(Precision.parse(text)) == text` for every accepted string, so records keep their strings. The
arithmetic runs in the activations' dtype, so that is the spec-table peak a record is held to
(`peak_dtype`): int8w-bf16, int4w-bf16 and sp24-bf16 run on the bf16 tensor-core peak (the table's peaks are
dense), int4w-fp32 on the fp32 one, fp8 on the FP8 tensor-core peak.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Activation dtype name -> (torch dtype attribute, bytes per element).
ACTIVATIONS = {"fp32": ("float32", 4), "bf16": ("bfloat16", 2), "fp16": ("float16", 2), "fp8": ("float8_e4m3fn", 1)}
#: Quantised weight storage, as written before the activations: "int8w-bf16" has int8 weights.
WEIGHTS = ("int8", "int4")
#: Sparsity pattern -> its prefix in a precision string ("sp24-bf16": 2:4 sparse weights).
SPARSITY = {"2:4": "sp24"}


class UnknownPrecision(ValueError, KeyError):
    """A precision string wattbench does not know: a bad value, and a failed lookup of a name."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote the message


@dataclass(frozen=True)
class Precision:
    """What a benchmark computes in: `activations` (a key of ACTIVATIONS), `weights` when the weights are
    stored quantised (a WEIGHTS entry; None: the activations' dtype) and `sparsity` ("2:4" or None)."""

    activations: str
    weights: str | None = None
    sparsity: str | None = None

    def __post_init__(self):
        if self.activations not in ACTIVATIONS:
            raise UnknownPrecision(f"unknown activation dtype {self.activations!r}: "
                                   f"expected one of {', '.join(ACTIVATIONS)}")
        if self.weights is not None and self.weights not in WEIGHTS:
            raise UnknownPrecision(f"unknown weight format {self.weights!r}: expected one of {', '.join(WEIGHTS)}")
        if self.sparsity is not None and self.sparsity not in SPARSITY:
            raise UnknownPrecision(f"unknown sparsity {self.sparsity!r}: expected one of {', '.join(SPARSITY)}")

    @classmethod
    def parse(cls, text: str | Precision) -> Precision:
        """'int8w-bf16' -> Precision('bf16', weights='int8'); UnknownPrecision naming the text when it is not one."""
        if isinstance(text, Precision):
            return text
        if not isinstance(text, str):
            raise UnknownPrecision(f"a precision is a string such as 'bf16' or 'int8w-bf16', got {text!r}")
        *prefixes, activations = text.split("-")
        sparsity = weights = None
        if prefixes and prefixes[0] in SPARSITY.values():
            sparsity = next(pattern for pattern, prefix in SPARSITY.items() if prefix == prefixes.pop(0))
        if prefixes and prefixes[0].endswith("w"):
            weights = prefixes.pop(0)[:-1]
        if prefixes:
            raise UnknownPrecision(f"unknown precision {text!r}: expected [sp24-][int8w-]DTYPE, "
                                   f"e.g. 'bf16' or 'int8w-bf16'")
        try:
            return cls(activations, weights, sparsity)
        except UnknownPrecision as exc:
            raise UnknownPrecision(f"unknown precision {text!r}: {exc}") from None

    def __str__(self) -> str:
        parts = [SPARSITY[self.sparsity]] if self.sparsity else []
        if self.weights:
            parts.append(f"{self.weights}w")
        return "-".join([*parts, self.activations])

    @property
    def dtype(self):
        """The torch dtype of the activations (and of weights that are stored unquantised)."""
        import torch  # only the run needs torch; records and reports parse precisions without it

        return getattr(torch, ACTIVATIONS[self.activations][0])

    @property
    def tensor_dtype(self):
        """The dtype of the tensors a step holds between its GEMMs: bf16 for fp8 (e4m3 lives only inside each
        GEMM, activations quantised on the way in), else `dtype`."""
        import torch

        return torch.bfloat16 if self.activations == "fp8" else self.dtype

    @property
    def quantized(self) -> bool:
        """Whether the weights are stored other than dense in `tensor_dtype` (e4m3, int8, int4, 2:4 pruned): the
        cases whose distance from the dense reference the accuracy guard measures."""
        return self.weight_format != "dense"

    @property
    def element_size(self) -> int:
        """Bytes per activation element, for byte counts."""
        return ACTIVATIONS[self.activations][1]

    @property
    def peak_dtype(self) -> str:
        """The spec table's peak_tflops key this precision computes at: the activations' dtype (dequantised
        or sparse weights multiply on that dtype's tensor cores; fp32 on the non-tensor FP32 peak)."""
        return self.activations

    @property
    def weight_format(self) -> str:
        """How the weights are stored: 'dense', 'fp8' (e4m3), 'int8w' or 'int4w' (weight-only), 'sp24' (2:4
        sparse)."""
        if self.sparsity:
            return SPARSITY[self.sparsity]
        if self.activations == "fp8":
            return "fp8"
        return f"{self.weights}w" if self.weights else "dense"

    def dense(self) -> Precision:
        """The same activations with plain dense weights: the unquantised baseline of int8w-bf16 is bf16, of
        fp8 bf16 (its tensors' dtype)."""
        return Precision("bf16" if self.activations == "fp8" else self.activations)
