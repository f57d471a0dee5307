"""The precisions amp-advisor reasons about."""

from __future__ import annotations

from enum import Enum

from .errors import BadInputError


class Dtype(str, Enum):
    """A training precision. Being a ``str`` enum, it serializes to JSON as its value."""

    FP32 = "fp32"
    TF32 = "tf32"  # fp32 tensors, matmuls on tensor cores with a 10-bit mantissa
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"  # e4m3 operands with per-tensor scales (torch._scaled_mm)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> "Dtype":
        try:
            return cls(text.lower())
        except ValueError:
            allowed = ", ".join(d.value for d in cls)
            raise BadInputError(f"unknown dtype {text!r}: expected one of {allowed}") from None


ALL_DTYPES: tuple[Dtype, ...] = tuple(Dtype)
