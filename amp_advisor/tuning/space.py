"""What the tuner may choose from, built from the probe's verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..dtypes import Dtype
from ..errors import BadInputError

TUNABLE_DTYPES = (Dtype.FP32, Dtype.TF32, Dtype.BF16, Dtype.FP16)
# On a CPU throughput stops growing at small batches (measured here: the transformer example ran
# 42-54 samples/s at 8-64 and 33 at 128), while each step of a big batch costs seconds.
DEFAULT_BATCH_SIZES = {"cpu": (8, 16, 32, 64), "gpu": (8, 16, 32, 64, 128, 256, 512)}


def default_batch_sizes(device_profile) -> tuple[int, ...]:
    return DEFAULT_BATCH_SIZES["cpu" if device_profile.kind == "cpu" else "gpu"]
DEFAULT_GROWTH_INTERVALS = (100, 500, 2000)
FP16_HEADROOM = 8.0  # the largest gradient times the scale stays 8x below fp16's maximum
FP16_MAX = 65504.0


@dataclass(frozen=True, order=True)
class Candidate:
    dtype: Dtype
    batch_size: int
    init_scale: float = 0.0  # fp16 only; 0 elsewhere, so equal configurations compare equal
    growth_interval: int = 0

    def canonical(self) -> "Candidate":
        if self.dtype is Dtype.FP16:
            return self
        return Candidate(self.dtype, self.batch_size)

    @property
    def label(self) -> str:
        text = f"{self.dtype} bs={self.batch_size}"
        if self.dtype is Dtype.FP16:
            text += f" scale=2^{math.log2(self.init_scale):g} growth={self.growth_interval}"
        return text

    def to_dict(self) -> dict:
        return {"dtype": self.dtype.value, "batch_size": self.batch_size,
                "init_scale": self.init_scale, "growth_interval": self.growth_interval}

    @classmethod
    def from_dict(cls, data: dict) -> "Candidate":
        return cls(Dtype(data["dtype"]), int(data["batch_size"]), float(data["init_scale"]), int(data["growth_interval"]))


@dataclass(frozen=True)
class SearchSpace:
    dtypes: tuple[Dtype, ...]
    batch_sizes: tuple[int, ...]
    init_scales: tuple[float, ...]
    growth_intervals: tuple[int, ...]
    global_batch: int | None = None

    def grad_accum(self, batch_size: int) -> int:
        return self.global_batch // batch_size if self.global_batch else 1

    def candidates(self) -> list[Candidate]:
        """Every distinct configuration: the scaler settings only multiply fp16's."""
        out = []
        for dtype in self.dtypes:
            for bs in self.batch_sizes:
                if dtype is Dtype.FP16:
                    out += [Candidate(dtype, bs, s, g) for s in self.init_scales for g in self.growth_intervals]
                else:
                    out.append(Candidate(dtype, bs))
        return out

    def to_dict(self) -> dict:
        return {"dtypes": [d.value for d in self.dtypes], "batch_sizes": list(self.batch_sizes),
                "init_scales": list(self.init_scales), "growth_intervals": list(self.growth_intervals),
                "global_batch": self.global_batch}

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        return cls(tuple(Dtype(d) for d in data["dtypes"]), tuple(data["batch_sizes"]),
                   tuple(float(s) for s in data["init_scales"]), tuple(data["growth_intervals"]), data["global_batch"])


def seeded_init_scale(max_abs_grad: float | None) -> float:
    """The largest power of two that keeps the largest fp32 gradient FP16_HEADROOM below fp16's max."""
    if not max_abs_grad or max_abs_grad <= 0 or not math.isfinite(max_abs_grad):
        return 2.0**16  # torch's default when nothing was measured
    exponent = math.floor(math.log2(FP16_MAX / (max_abs_grad * FP16_HEADROOM)))
    return 2.0 ** max(0, min(24, exponent))


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise BadInputError(f"--batch-sizes {text!r}: expected comma-separated integers, e.g. 16,32,64") from None
    if not sizes or sizes[0] < 1:
        raise BadInputError(f"--batch-sizes {text!r}: batch sizes must be >= 1")
    return sizes


def build_space(device_profile, *, batch_sizes: tuple[int, ...] | None = None, global_batch: int | None = None,
                init_scale_seed: float = 2.0**16) -> tuple[SearchSpace, list[str]]:
    notes = []
    dtypes = tuple(d for d in TUNABLE_DTYPES if device_profile.dtypes[d].supported)
    for d in TUNABLE_DTYPES:
        if d not in dtypes:
            notes.append(f"{d} left out: {device_profile.dtypes[d].why}")
    sizes = batch_sizes or default_batch_sizes(device_profile)
    if global_batch is not None:
        if global_batch < 1:
            raise BadInputError(f"--global-batch must be >= 1, got {global_batch}")
        dividing = tuple(b for b in sizes if b <= global_batch and global_batch % b == 0)
        if not dividing:
            dividing = tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b <= global_batch and global_batch % b == 0)
        notes.append(f"global batch {global_batch}: micro-batches {dividing} with gradient accumulation to match")
        sizes = dividing
    scales = tuple(sorted({init_scale_seed / 2**4, init_scale_seed, min(init_scale_seed * 2**4, 2.0**24)}))
    return SearchSpace(dtypes, tuple(sizes), scales, DEFAULT_GROWTH_INTERVALS, global_batch), notes
