"""A landscape: what is true of one workload on one machine, for every configuration of the space.

Per (dtype, batch size): the true samples/s, peak memory, the first step's time and the numerics
(loss agreement with fp32; fp16 non-finite). Per landscape: the device (a probe profile made from
fakes), its memory, the model-build time, fp32's largest gradient (what seeds GradScaler's
init_scale) and the noise the machine makes (noise.py). A batch size between two of the points
(the tuner bisects an out-of-memory edge) is interpolated: throughput log-linearly, memory
linearly.

Levers (amp_advisor/levers/): torch.compile's speed-up and one-time compile cost per (dtype,
batch) where a compiled sweep measured them (`lever_points`, "default" mode; the nearest measured
batch's ratio to eager elsewhere); a mode the sweep did not measure runs as "default" with
AUTOTUNE_FACTOR x its compile time; where nothing was measured, compile is neutral (eager's speed,
NEUTRAL_COMPILE_S to compile), as is every other lever (the CPU's bf16 matmuls).

The truth is what a recommendation is scored against: quality = the true rate of the
recommendation over the planned run (train_steps optimizer steps, a one-time cost included) / the
best such rate over the configurations of the space, with or without levers, whose numerics pass
and that fit in memory (less the tuner's safety margin).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field, replace

from amp_advisor.dtypes import Dtype
from amp_advisor.tuning.settings import DEFAULT_TRAIN_STEPS

from .noise import Noise

GIB = 2**30
TOLERANCE = 0.05  # the tuner's default loss tolerance vs fp32 (TuneSettings.tolerance)
MEMORY_MARGIN = 0.10  # the tuner's default safety margin (TuneSettings.memory_margin)
ISLAND_COST = 0.05  # an fp32 island costs this share of the speed (a repaired configuration)
NEUTRAL_COMPILE_S = 10.0  # compile time where no sweep measured it (its speed: eager's)
AUTOTUNE_FACTOR = 3.0  # a compile mode the sweeps did not measure: "default"'s speed, this x its compile time
COMPILED = (("compile", "default"),)


@dataclass(frozen=True)
class Point:
    samples_per_s: float
    first_step_s: float  # the first training step after the build (the compile too, when compiled)
    peak_memory_bytes: int
    loss_rel_diff: float = 0.0  # vs fp32 over the compared steps, from the same weights and batches
    nonfinite: bool = False  # the loss goes inf/nan whatever the loss scale (fp16 activations overflow)
    spread: float | None = None  # this point's own round-to-round noise (log std), when it was measured


@dataclass(frozen=True)
class Landscape:
    name: str
    family: str  # measured, parametric or adversarial
    device: str  # a profile key of profiles.py: "cpu-avx2", "cpu-avx512-bf16", "cpu-amx", "V100", "H100"...
    points: dict[tuple[Dtype, int], Point]
    memory_total_bytes: int
    build_s: float = 0.5  # building the model in a fresh process
    max_grad: float = 1.0  # fp32's largest gradient
    noise: Noise = field(default_factory=Noise)
    batch_sizes: tuple[int, ...] | None = None  # the run's --batch-sizes; None: the device's defaults
    # (dtype, batch, COMPILED) -> the compiled point: its rate, and first_step_s = the cold compile
    lever_points: dict[tuple[Dtype, int, tuple], Point] = field(default_factory=dict)
    train_steps: int = DEFAULT_TRAIN_STEPS  # the planned run (the tuner's default --train-steps)

    # ------------------------------------------------------------------------------ the truth
    @functools.cached_property
    def dtypes(self) -> tuple[Dtype, ...]:
        return tuple(dict.fromkeys(d for d, _ in self.points))

    def sizes(self, dtype: Dtype) -> list[int]:
        return sorted(b for d, b in self.points if d is dtype)

    def point(self, dtype: Dtype, batch: int) -> Point:
        """The point at any batch size: measured, interpolated between two, or extended past the
        ends (throughput flat, memory along the last two points)."""
        if (dtype, batch) in self.points:
            return self.points[(dtype, batch)]
        sizes = self.sizes(dtype)
        if not sizes:
            raise KeyError(f"{self.name}: no {dtype} points")
        i = bisect.bisect_left(sizes, batch)
        lo, hi = sizes[max(0, min(i - 1, len(sizes) - 2))], sizes[min(max(i, 1), len(sizes) - 1)]
        a, b = self.points[(dtype, lo)], self.points[(dtype, hi)]
        if lo == hi:
            return a
        t = (math.log(batch) - math.log(lo)) / (math.log(hi) - math.log(lo))
        if batch < sizes[0] or batch > sizes[-1]:
            t_rate = 0.0 if batch < sizes[0] else 1.0  # no extrapolated speed-up
        else:
            t_rate = t
        rate = math.exp(math.log(a.samples_per_s) + t_rate * (math.log(b.samples_per_s) - math.log(a.samples_per_s)))
        per_sample = (b.peak_memory_bytes - a.peak_memory_bytes) / (hi - lo)
        memory = int(a.peak_memory_bytes + per_sample * (batch - lo))
        first = a.first_step_s * batch / lo if batch < lo else a.first_step_s + t * (b.first_step_s - a.first_step_s)
        nearest = a if abs(batch - lo) <= abs(batch - hi) else b
        return Point(rate, max(first, 1e-3), max(memory, 1), nearest.loss_rel_diff,
                     a.nonfinite or b.nonfinite if lo < batch < hi else nearest.nonfinite, nearest.spread)

    def fits(self, dtype: Dtype, batch: int) -> bool:
        """Within the device's memory less the tuner's margin (the tuner rules out the rest)."""
        return self.point(dtype, batch).peak_memory_bytes <= self.memory_total_bytes * (1 - MEMORY_MARGIN)

    def runs(self, dtype: Dtype, batch: int) -> bool:
        """Runs at all: it does not run out of the device's memory."""
        return self.point(dtype, batch).peak_memory_bytes <= self.memory_total_bytes

    def numerics_pass(self, dtype: Dtype, batch: int, islands: bool = False) -> bool:
        if islands:
            return True  # the repair keeps the culprit in fp32
        p = self.point(dtype, batch)
        return not p.nonfinite and p.loss_rel_diff <= TOLERANCE

    def valid(self, dtype: Dtype, batch: int, islands: bool = False) -> bool:
        return self.fits(dtype, batch) and self.numerics_pass(dtype, batch, islands)

    def true_rate(self, dtype: Dtype, batch: int, islands: bool = False, levers: tuple = ()) -> float:
        """Samples/s once running (a one-time cost apart)."""
        gain, _ = self.lever_effect(dtype, batch, levers)
        return self.point(dtype, batch).samples_per_s * ((1 - ISLAND_COST) if islands else 1.0) * gain

    def lever_effect(self, dtype: Dtype, batch: int, levers: tuple) -> tuple[float, float]:
        """(speed-up over eager, one-time cost in seconds) of a configuration's levers."""
        mode = dict(levers).get("compile")
        if mode is None:
            return 1.0, 0.0
        measured = sorted(b for d, b, _ in self.lever_points if d is dtype)
        if measured:
            near = min(measured, key=lambda b: (abs(math.log(b / batch)), b))
            compiled = self.lever_points[(dtype, near, COMPILED)]
            gain, cost = compiled.samples_per_s / self.point(dtype, near).samples_per_s, compiled.first_step_s
        else:
            gain, cost = 1.0, NEUTRAL_COMPILE_S
        return gain, cost * (1.0 if mode == "default" else AUTOTUNE_FACTOR)

    def run_rate(self, dtype: Dtype, batch: int, islands: bool = False, levers: tuple = ()) -> float:
        """Samples/s over the planned run of train_steps optimizer steps, its one-time cost included."""
        rate = self.true_rate(dtype, batch, islands, levers)
        _, cost = self.lever_effect(dtype, batch, levers)
        run_s = self.train_steps * batch / rate + cost
        return self.train_steps * batch / run_s

    def best(self, dtypes: tuple[Dtype, ...], sizes: tuple[int, ...]) -> tuple[Dtype, int, tuple, float]:
        """The true best over the space's configurations, compiled or not, whose numerics pass and that fit."""
        pool = [(self.run_rate(d, b, levers=lv), d, b, lv) for d in dtypes for b in sizes
                if (d, b) in self.points or self.sizes(d) and self.sizes(d)[0] <= b <= self.sizes(d)[-1]
                if self.valid(d, b) for lv in ((), COMPILED)]
        if not pool:
            raise ValueError(f"{self.name}: no configuration of the space is valid")
        rate, d, b, lv = max(pool, key=lambda p: p[0])
        return d, b, lv, rate

    def with_noise(self, noise: Noise) -> Landscape:
        return replace(self, noise=noise)
