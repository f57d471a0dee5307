"""Numerics of a trial: gradient magnitudes against fp16's range, and agreement with fp32."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .dtypes import FP16_MAX, FP16_MIN_SUBNORMAL
from .jsonio import MaybeFinite


@dataclass(frozen=True)
class GradStats:
    """fp32 gradient magnitudes against fp16's range, at the trial's loss scale."""

    scale: float
    elements: int
    zero_fraction: float
    underflow_fraction: float  # 0 < |g * scale| < 2^-24: flushes to zero in fp16
    overflow_fraction: float  # |g * scale| > 65504: inf in fp16
    max_abs: MaybeFinite  # inf/nan when the fp32 gradients themselves diverged
    log2_histogram: Mapping[int, int]  # floor(log2|g|) -> count, unscaled, non-zero elements only


def grad_stats(grads: Iterable, scale: float) -> GradStats:
    """Where the (fp32) gradients would land in fp16 once multiplied by the loss scale."""
    import torch

    elements = zeros = underflow = overflow = 0
    max_abs = 0.0
    histogram: Counter[int] = Counter()
    for grad in grads:
        if grad is None:
            continue
        g = grad.detach().float().abs().flatten()
        elements += g.numel()
        nonzero = g[g > 0]
        zeros += g.numel() - nonzero.numel()
        if nonzero.numel() == 0:
            continue
        scaled = nonzero * scale
        underflow += int((scaled < FP16_MIN_SUBNORMAL).sum())
        overflow += int((scaled > FP16_MAX).sum())
        max_abs = max(max_abs, float(nonzero.max()))
        exponents, counts = torch.unique(torch.floor(torch.log2(nonzero)).to(torch.int64), return_counts=True)
        histogram.update(dict(zip(exponents.tolist(), counts.tolist(), strict=True)))
    total = max(elements, 1)
    return GradStats(
        scale=scale,
        elements=elements,
        zero_fraction=zeros / total,
        underflow_fraction=underflow / total,
        overflow_fraction=overflow / total,
        max_abs=max_abs,
        log2_histogram=dict(sorted(histogram.items())),
    )


def loss_rel_diff(losses: Sequence[float], reference: Sequence[float]) -> float | None:
    """Relative distance of the measured loss curve from the fp32 curve on the same batches:
    mean |loss - fp32| / mean |fp32| over the steps both ran (from step 0 in a trial).

    Over the whole curve rather than the last step, because a model that fits its few batches
    drives the loss towards zero, where a last-step ratio explodes. None if anything is not finite.
    """
    n = min(len(losses), len(reference))
    if n == 0:
        return None
    pairs = list(zip(losses[-n:], reference[-n:], strict=True))
    if not all(math.isfinite(a) and math.isfinite(b) for a, b in pairs):
        return None
    scale = sum(abs(b) for _, b in pairs) / n
    return (sum(abs(a - b) for a, b in pairs) / n) / max(scale, 1e-12)
