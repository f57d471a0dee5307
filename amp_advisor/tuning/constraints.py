"""What the evidence rules out: a pure function of the trials and the space, recomputed whenever
it is needed (never replayed, so the order trials were read in cannot change it).

Rules, and why:
- out of memory, a crash (often the kernel's OOM killer) or a hang at some batch: the same dtype
  at that batch and above is not worth a trial;
- a trial stopped early (pruned: its first step took PRUNE_FACTOR x longer than the best rate so
  far needs for its batch, at least MIN_ABANDON_S) rules out its configuration, unless that
  dtype and batch also ran cleanly (then the stall was the machine's, not the configuration's).
  It rules out the whole dtype (with the Bayesian strategy) only when the dtype never ran
  cleanly, and, for a dtype the probe calls fast, only after a second pruned trial: one
  stalled first step on a busy machine is no verdict on a fast dtype;
- a configuration with a one-time cost (levers.one_time: a compile) that does not beat the same
  configuration without its levers by LEVER_MARGIN over the planned run (train_steps optimizer
  steps, the cost included), or whose counterpart was not measured, is ruled out: below its
  break-even the plain configuration trains the run faster;
- measured peak memory past the device's memory less the margin, or a linear model of the measured
  peaks that predicts it, rules a batch out.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import levers as registry
from ..dtypes import Dtype
from ..harness.trial import Status
from .evidence import Evidence
from .space import Candidate, SearchSpace

GIB = 2**30
PRUNE_FACTOR = 4.0  # a first step this many times slower than the best rate needs is stopped
# The first step carries one-time costs (allocator, lazy init) and a shared machine stalls for
# seconds at a time: below this, a healthy first step was seen to be stopped.
MIN_ABANDON_S = 2.0
LEVER_MARGIN = 0.02  # a one-time cost must buy more than this over the planned run
PRUNE_RULE = f"the limit is {PRUNE_FACTOR:g}x the step time the best rate so far implies, at least {MIN_ABANDON_S:g} s"


@dataclass(frozen=True)
class Constraints:
    ruled_out: Mapping[Candidate, str] = field(default_factory=dict)  # canonical candidate -> why
    dtypes_out: Mapping[Dtype, str] = field(default_factory=dict)  # whole dtypes -> why
    # the planned run (--train-steps) a one-time cost is weighed against, where one was given:
    # configurations are ranked by their speed over it (ConfigEvidence.over_run)
    train_steps: int | None = None

    def reason(self, candidate: Candidate) -> str | None:
        return self.dtypes_out.get(candidate.dtype) or self.ruled_out.get(candidate.canonical())

    def allows(self, candidate: Candidate) -> bool:
        return self.reason(candidate) is None


def predicted_peak(evidence: Evidence, candidate: Candidate) -> float | None:
    """Least squares through the measured peaks of the same dtype (needs two batch sizes)."""
    points = [(r.candidate.batch_size, r.result.peak_memory_bytes) for r in evidence.of_dtype(candidate.dtype)
              if r.result.status is Status.OK and r.result.peak_memory_bytes]
    if len({b for b, _ in points}) < 2:
        return None
    mean_b = statistics.fmean(b for b, _ in points)
    mean_p = statistics.fmean(p for _, p in points)
    slope = sum((b - mean_b) * (p - mean_p) for b, p in points) / sum((b - mean_b) ** 2 for b, _ in points)
    return mean_p + slope * (candidate.batch_size - mean_b)


def derive(evidence: Evidence, space: SearchSpace | None, *, memory_limit: int | None = None,
           memory_margin: float = 0.10, whole_dtype_pruning: bool = True,
           fast: Mapping[Dtype, bool] | None = None, train_steps: int | None = None) -> Constraints:
    # the space's points and whatever else was measured (the edge phase bisects between them)
    seen = [c.canonical() for c in evidence.configs]
    candidates = list(dict.fromkeys((space.candidates() if space is not None else []) + seen))
    fast = fast or {}
    ruled: dict[Candidate, str] = {}
    dtypes_out: dict[Dtype, str] = {}

    def rule(c: Candidate, why: str) -> None:
        ruled.setdefault(c.canonical(), why)

    clean = {(r.candidate.dtype, r.candidate.batch_size) for r in evidence.records
             if r.feasible and r.role.measures_speed}

    def clean_at(dtype: Dtype, batch: int) -> bool:
        return (dtype, batch) in clean

    for r in evidence.records:
        c, status = r.candidate, r.result.status
        if status.is_resource_failure:
            for other in candidates:  # a lever's failure (a compile that hangs) is that lever's alone
                if other.dtype is c.dtype and other.batch_size >= c.batch_size and (
                        not c.canonical().levers or other.canonical().levers == c.canonical().levers):
                    rule(other, f"{c.dtype} failed with {status} at batch {c.batch_size} (trial {r.number})")
        elif status is Status.PRUNED and not clean_at(c.dtype, c.batch_size):
            for other in candidates:  # the scaler settings do not change the speed
                if other.dtype is c.dtype and other.batch_size == c.batch_size:
                    rule(other, f"{r.result.error} (trial {r.number}; {PRUNE_RULE})")

    for dtype in dict.fromkeys(r.candidate.dtype for r in evidence.records):
        pruned = [r for r in evidence.of_dtype(dtype) if r.result.status is Status.PRUNED]
        if not pruned or not whole_dtype_pruning or evidence.ran_cleanly(dtype):
            continue
        if fast.get(dtype, False) and len(pruned) < 2:
            continue  # the probe says it is fast: one stalled first step is not enough
        first = pruned[0]
        dtypes_out[dtype] = (f"{dtype} was stopped early at batch {first.candidate.batch_size} (trial {first.number}): "
                             f"{(first.result.error or '').removeprefix('stopped early: ')} ({PRUNE_RULE})"
                             + (f"; {len(pruned)} of its trials were stopped" if len(pruned) > 1 else ""))

    if train_steps is not None:
        for c in candidates:
            if registry.one_time(c.levers) and (why := _not_worth_it(evidence, c, train_steps)):
                rule(c, why)

    if memory_limit:
        for c in candidates:
            config = evidence.config(c)
            measured = config.peak_memory_bytes if config is not None else None
            if measured and measured > memory_limit:
                rule(c, f"measured peak memory {measured / GIB:.1f} GiB leaves less than the "
                        f"{memory_margin:.0%} safety margin")
                continue
            predicted = predicted_peak(evidence, c)
            if predicted and predicted > memory_limit and not measured:
                rule(c, f"predicted peak memory {predicted / GIB:.1f} GiB exceeds {memory_limit / GIB:.1f} GiB "
                        f"(device memory less a {memory_margin:.0%} margin)")
    return Constraints(ruled, dtypes_out, train_steps)


def _not_worth_it(evidence: Evidence, c: Candidate, train_steps: int) -> str | None:
    """Why a configuration with a one-time cost does not pay over the planned run, or None: it
    must beat by LEVER_MARGIN, over the run, itself without its levers and every measured sibling
    (the same configuration with other lever values) whose one-time cost is smaller."""
    config = evidence.config(c)
    if config is None:
        return None  # not measured yet: nothing known against it
    costs = evidence.break_even(c)
    if costs is None:
        return f"its one-time cost cannot be weighed: {c.plain.label} has no clean measurement"
    cost, saved, steps = costs
    plain = evidence.config(c.plain)
    assert plain is not None and config.score and plain.score
    run_rate = config.over_run(config.score, train_steps)
    gain = run_rate / plain.score - 1
    if gain <= LEVER_MARGIN:
        paid = f"pays for itself after {steps:,.0f} steps" if steps else "never pays for itself (no faster per step)"
        return (f"{registry.label(registry.one_time(c.levers))} costs {cost:.1f} s once and {paid}: over the planned "
                f"{train_steps:,} steps (--train-steps) it trains {gain:+.1%} against {c.plain.label}")
    for other in evidence.configs.values():
        if (other.candidate == c or other.candidate.plain != c.plain or not other.score
                or other.one_time_s is None or other.one_time_s >= cost):
            continue
        gain = run_rate / other.over_run(other.score, train_steps) - 1
        if gain <= LEVER_MARGIN:
            return (f"it costs {cost - other.one_time_s:.1f} s more once than {other.candidate.label}, and over the "
                    f"planned {train_steps:,} steps (--train-steps) trains {gain:+.1%} against it")
    return None
