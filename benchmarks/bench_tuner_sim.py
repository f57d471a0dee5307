"""The tuner's decision on many machines: the real Tuner against simulated landscapes; prints tables.

The machine simulator (tests/simulator/) answers each trial from a landscape (true speed, memory,
first step, numerics, and the noise a real machine makes), so the real Tuner runs unchanged, in
milliseconds per trial. Families: measured sweeps (../shared/landscapes/: an AMX Xeon and an
AVX2-only EPYC; tests/simulator/measured/: lent GPUs), parametric machines (AVX2, AVX512-BF16 and
AMX CPUs; V100, T4, A100, H100, H200) and adversarial cases.

quality = the true samples/s of the recommendation / the true best over the configurations whose
numerics pass (and that fit in memory). An invalid recommendation rests on a failed, unconfirmed
or numerics-failing configuration.

Targets: at default settings, in every family, median >= 0.99 and p5 >= 0.95; with --max-trials 6,
p5 >= 0.90; invalid recommendations: 0 everywhere.

Usage: python benchmarks/bench_tuner_sim.py [--per-family 170] [--jobs 2] [--seed 0] [--worst 3]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_tune import cpu_name  # noqa: E402  (the machine line every benchmark prints)

from tests.simulator import simulate, suite  # noqa: E402

SETTINGS = {"default": {}, "max-trials 6": {"max_trials": 6}, "max-trials 8": {"max_trials": 8}}
TARGETS = {"default": (0.99, 0.95), "max-trials 6": (None, 0.90), "max-trials 8": (None, None)}


@functools.cache
def _suite(per_family: int, seed: int):
    return suite(per_family, seed)


def _one(job):
    index, per_family, seed, name = job
    landscape, noise_seed = _suite(per_family, seed)[index]
    return simulate(landscape, noise_seed, settings_name=name, **SETTINGS[name])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-family", type=int, default=170, help="landscape/seed pairs per family (3 families)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which settings to run, comma-separated")
    parser.add_argument("--worst", type=int, default=3, help="print the trial log of the N worst runs per setting")
    args = parser.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    pairs = suite(args.per_family, args.seed)
    print(f"machine: {cpu_name()}, Python {platform.python_version()} (simulated quality does not depend on "
          f"it); {len(pairs)} (landscape, seed) pairs x {len(names)} settings, {args.jobs} jobs\n")
    jobs = [(i, args.per_family, args.seed, name) for name in names for i in range(len(pairs))]
    start = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        outcomes = pool.map(_one, jobs, chunksize=8)
    took = time.perf_counter() - start
    met = True
    print(f"{'settings':13s} {'family':12s} {'runs':>5s} {'median':>7s} {'p5':>6s} {'min':>6s} {'>=0.95':>7s} "
          f"{'trials':>6s} {'sim s':>6s} {'invalid':>7s}  verdict")
    for name in names:
        want_median, want_p5 = TARGETS[name]
        rows = [o for o in outcomes if o.settings == name]
        for family in ("measured", "parametric", "adversarial", "all"):
            fam = [o for o in rows if family in ("all", o.family)]
            if not fam:
                continue
            q = [o.quality for o in fam]
            median, p5 = statistics.median(q), percentile(q, 0.05)
            invalid = sum(1 for o in fam if o.invalid)
            ok = invalid == 0 and (want_median is None or median >= want_median) and (want_p5 is None or p5 >= want_p5)
            met &= ok or family == "all"
            target = " ".join(t for t in (f"median >= {want_median}" if want_median else "",
                                          f"p5 >= {want_p5}" if want_p5 else "") if t)
            print(f"{name:13s} {family:12s} {len(fam):5d} {median:7.3f} {p5:6.3f} {min(q):6.3f} "
                  f"{sum(v >= 0.95 for v in q) / len(q):7.0%} {statistics.median(o.trials for o in fam):6.0f} "
                  f"{statistics.median(o.sim_wall_s for o in fam):6.0f} {invalid:7d}  "
                  + ("" if family == "all" else ("meets" if ok else "MISSES")
                     + f" ({target or 'reported'}, 0 invalid)"))
    print(f"\n{len(outcomes)} simulated tunes in {took:.0f} s; targets {'met' if met else 'NOT met'}")
    for name in names:
        rows = sorted((o for o in outcomes if o.settings == name), key=lambda o: (o.invalid is None, o.quality))
        for o in rows[: args.worst]:
            print(f"\n[{name}] {o.landscape} on {o.device} (seed {o.seed}): recommended {o.recommended}, true best "
                  f"{o.best}, quality {o.quality:.3f}" + (f", INVALID: {o.invalid}" if o.invalid else ""))
            print("\n".join("    " + line for line in o.log))


if __name__ == "__main__":
    main()
