"""Which dtype to train with on one device, and why: from the verdicts, and measurements when present."""

from __future__ import annotations

from collections.abc import Mapping

from ..dtypes import Dtype
from .model import DtypeVerdict, MatmulMeasurement

# Training preference when speeds are comparable: bf16 keeps fp32's range (no loss scaling),
# fp16 needs a GradScaler, tf32 only speeds up matmuls. fp8 needs Transformer Engine / torchao
# recipes and is not a drop-in autocast dtype, so it is pointed out, never suggested.
TRAINING_PREFERENCE = (Dtype.BF16, Dtype.FP16, Dtype.TF32)

# Mixed precision adds casts and (fp16) loss scaling around the matmuls; a matmul that is only
# a little faster does not pay for them in a training step.
MIN_SPEEDUP = 1.15
# Within this fraction of the fastest, the preferred dtype wins on numerics.
COMPARABLE = 0.90


def suggest_dtype(
    verdicts: Mapping[Dtype, DtypeVerdict],
    measured: Mapping[Dtype, MatmulMeasurement] | None = None,
) -> tuple[Dtype, str]:
    if not verdicts.get(Dtype.FP32, DtypeVerdict(False, False, "")).supported:
        return Dtype.FP32, "nothing runs on this device here: " + verdicts[Dtype.FP32].why
    if measured:
        choice, why = _from_measurements(verdicts, measured)
    else:
        choice, why = _from_verdicts(verdicts)
    fp8 = verdicts.get(Dtype.FP8)
    if fp8 is not None and fp8.fast:
        why += "; fp8 tensor cores are present (Transformer Engine / torchao float8 for large matmuls)"
    return choice, why


def _from_verdicts(verdicts: Mapping[Dtype, DtypeVerdict]) -> tuple[Dtype, str]:
    for dtype in TRAINING_PREFERENCE:
        v = verdicts.get(dtype)
        if v is not None and v.supported and v.fast:
            return dtype, f"{v.why} (not measured; run with --bench to confirm)"
    slow = [f"{d}: {verdicts[d].why}" for d in (Dtype.BF16, Dtype.FP16) if d in verdicts]
    return Dtype.FP32, "no fast reduced-precision path here; " + "; ".join(slow)


def _from_measurements(
    verdicts: Mapping[Dtype, DtypeVerdict], measured: Mapping[Dtype, MatmulMeasurement]
) -> tuple[Dtype, str]:
    speedup = {
        d: m.relative_to_fp32
        for d, m in measured.items()
        if d in TRAINING_PREFERENCE and m.relative_to_fp32 is not None and verdicts[d].supported
    }
    fast_enough = {d: s for d, s in speedup.items() if s >= MIN_SPEEDUP}
    if not fast_enough:
        if not speedup:
            return _from_verdicts(verdicts)
        listed = "; ".join(
            f"{d} runs at {s:.2g}x fp32 speed ({verdicts[d].why})"
            for d, s in sorted(speedup.items(), key=lambda kv: -kv[1])
        )
        return Dtype.FP32, f"measured: {listed}. Nothing beats fp32 by {MIN_SPEEDUP}x"
    best = max(fast_enough.values())
    # Among the dtypes within COMPARABLE of the fastest (the fastest always is), a native path
    # beats an emulated one that happened to do well on a square matmul, then preference decides.
    comparable = [d for d in TRAINING_PREFERENCE if fast_enough.get(d, 0.0) >= COMPARABLE * best]
    dtype = next((d for d in comparable if verdicts[d].fast), comparable[0])
    note = "" if verdicts[dtype].fast else " (faster than fp32 although no native path was detected)"
    return dtype, f"measured {fast_enough[dtype]:.1f}x fp32 matmul speed; {verdicts[dtype].why}{note}"
