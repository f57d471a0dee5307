"""Timing rules shared by the probe's micro-benchmark and the trial harness: how a device is
synchronised and how samples are summarised. (What "fp32" means for matmuls: tf32.scoped.)"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

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
