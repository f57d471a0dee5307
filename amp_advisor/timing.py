"""Timing rules shared by the probe's micro-benchmark and the trial harness: how a device is
synchronised, what "fp32" means for matmuls while measuring, and how samples are summarised."""

from __future__ import annotations

import contextlib
import statistics
from typing import Iterator, Sequence

from .dtypes import Dtype

NOISY_IQR_RATIO = 0.10  # torch.utils.benchmark warns at the same spread


def median_iqr(samples: Sequence[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q3 - q1


def is_noisy(median: float, iqr: float) -> bool:
    return median > 0 and iqr / median > NOISY_IQR_RATIO


def synchronize(device) -> None:
    """Wait for queued device work, so a host clock around it measures the work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def matmul_precision(dtype: Dtype) -> Iterator[None]:
    """fp32 means fp32 (no TF32 behind the user's back); tf32 turns it on. Restored afterwards."""
    import torch

    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if dtype is Dtype.TF32 else "highest")
    torch.backends.cudnn.allow_tf32 = dtype is Dtype.TF32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]
