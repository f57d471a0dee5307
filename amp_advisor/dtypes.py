"""Every dtype fact amp-advisor uses, stated once: the precisions, which of them train, the torch
dtype behind each, which needs a GradScaler, fp16's limits, GradScaler's defaults and when TF32
matmuls are on. Everything else imports these."""

from __future__ import annotations

from enum import Enum
from typing import Any

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
    def parse(cls, text: str) -> Dtype:
        try:
            return cls(text.lower())
        except ValueError:
            allowed = ", ".join(d.value for d in cls)
            raise BadInputError(f"unknown dtype {text!r}: expected one of {allowed}") from None

    @property
    def is_training(self) -> bool:
        return self in TRAINING_DTYPES

    @property
    def needs_grad_scaler(self) -> bool:
        """Only fp16's 5-bit exponent loses small gradients; bf16 has fp32's range."""
        return self is Dtype.FP16

    @property
    def autocasts(self) -> bool:
        """Trained under torch.autocast (fp32 and tf32 keep fp32 tensors)."""
        return self in (Dtype.FP16, Dtype.BF16)


ALL_DTYPES: tuple[Dtype, ...] = tuple(Dtype)
# What a trial can measure and a recommendation can name, in the order tables show them.
# fp8 is probed, not trained (planned: torchao float8 / Transformer Engine).
TRAINING_DTYPES: tuple[Dtype, ...] = (Dtype.FP32, Dtype.TF32, Dtype.FP16, Dtype.BF16)
TRAINING_DTYPE_NAMES: tuple[str, ...] = tuple(d.value for d in TRAINING_DTYPES)

# fp16's range: anything above FP16_MAX is inf, anything below FP16_MIN_SUBNORMAL flushes to zero.
FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0**-24

# torch.amp.GradScaler's own defaults (what a recommendation says when it says nothing else).
DEFAULT_INIT_SCALE = 2.0**16
DEFAULT_GROWTH_FACTOR = 2.0
DEFAULT_BACKOFF_FACTOR = 0.5
DEFAULT_GROWTH_INTERVAL = 2000


def torch_dtype(dtype: Dtype) -> Any:
    """The torch dtype the math runs in: fp16/bf16 under autocast, float32 otherwise (TF32 is a
    matmul mode of float32 tensors)."""
    import torch

    return {Dtype.FP16: torch.float16, Dtype.BF16: torch.bfloat16}.get(dtype, torch.float32)


def torch_dtype_name(dtype: Dtype) -> str:
    """The same fact as source text, for paste-ready snippets."""
    return {Dtype.FP16: "torch.float16", Dtype.BF16: "torch.bfloat16"}.get(dtype, "torch.float32")


def uses_tf32(dtype: Dtype, tf32_fast: bool) -> bool:
    """Whether TF32 matmuls are on for a dtype: always for tf32; for bf16/fp16 (the fp32 parts
    autocast leaves, and the backward's fp32 matmuls) when the device has fast TF32; never for fp32,
    which means fp32. Trials are measured this way and recommendations carry the same flag."""
    if dtype is Dtype.TF32:
        return True
    return dtype.autocasts and tf32_fast
