"""The noise a real machine makes, as the simulated one makes it.

A measurement is the true samples/s times a per-trial spread, divided by whatever slows the
machine down at that moment:
- spread: multiplicative, log-normal (`sigma`; a measured point brings its own round-to-round spread);
- slow patches: another job takes the cores for several trials (`patch_rate` per trial, lasting
  `patch_trials`, `patch_slowdown` slower);
- a fresh worker's first trial is slow (`fresh_slowdown`): its allocator, caches and kernels are cold;
- drift: the machine's speed wanders slowly over the run's (simulated) seconds (`drift`, `drift_period_s`);
- a rare outlier (`outlier_rate` per trial) runs 3x slower.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    sigma: float = 0.03
    patch_rate: float = 0.04
    patch_trials: tuple[int, int] = (1, 4)
    patch_slowdown: tuple[float, float] = (1.1, 1.8)  # skewed toward the low end: most patches are mild
    fresh_slowdown: tuple[float, float] = (1.1, 1.45)
    drift: float = 0.06
    drift_period_s: float = 240.0
    outlier_rate: float = 0.015
    outlier_slowdown: float = 3.0

    def scaled(self, factor: float) -> Noise:
        """The same machine, `factor` times as noisy (spread and drift)."""
        return Noise(self.sigma * factor, self.patch_rate, self.patch_trials, self.patch_slowdown,
                     self.fresh_slowdown, self.drift * factor, self.drift_period_s, self.outlier_rate,
                     self.outlier_slowdown)


class NoiseState:
    """One run's noise: a seeded stream of slowdowns, advanced one trial at a time."""

    def __init__(self, noise: Noise, seed: int) -> None:
        self.noise = noise
        self.rng = random.Random(seed)
        self.phase = self.rng.uniform(0, 2 * math.pi)
        self.patch_left = 0
        self.patch_factor = 1.0

    def next_trial(self) -> None:
        """A new trial starts: a slow patch goes on, ends, or begins."""
        n = self.noise
        if self.patch_left > 0:
            self.patch_left -= 1
        if self.patch_left == 0 and self.rng.random() < n.patch_rate:
            self.patch_left = self.rng.randint(*n.patch_trials)
            low, high = n.patch_slowdown
            self.patch_factor = low + (high - low) * self.rng.random() ** 2

    def factor(self, now_s: float, fresh: bool, sigma: float | None = None) -> float:
        """What the true samples/s is multiplied by in this trial (< 1: slower)."""
        n = self.noise
        spread = math.exp(self.rng.gauss(0.0, n.sigma if sigma is None else max(sigma, n.sigma)))
        slow = self.patch_factor if self.patch_left > 0 else 1.0
        if fresh:
            slow *= self.rng.uniform(*n.fresh_slowdown)
        if self.rng.random() < n.outlier_rate:
            slow *= n.outlier_slowdown
        drift = 1.0 + n.drift * math.sin(2 * math.pi * now_s / n.drift_period_s + self.phase)
        return spread * drift / slow
