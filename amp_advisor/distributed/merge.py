"""Every rank's result of one distributed trial -> the trial's one result (what rank 0 records).

- All ranks ran: a step is the slowest rank's (per step index: collectives keep the ranks in step),
  samples/s count every rank's micro-batches, memory is the highest rank's peak, the numerics are
  rank 0's (its losses beside its fp32 reference).
- A rank failed: the trial failed with *that* rank's status and reason, named once. A rank whose
  own work failed (out of memory, an error, a crash, its watchdog) outranks the ranks that failed
  only in a collective waiting for it; when only the latter failed, the ranks that were still
  running when the trial was stopped are the ones that hung.
- A rank stopped its trial early (pruned: the first step was too slow): that is the trial's speed,
  not a fault of that rank. A distributed step lasts as long as its slowest rank, so every rank's
  first step is slow together, and the one whose allowance ran out first is a race, not a cause.
  The trial is pruned and names no rank, unless another rank's own work failed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..harness.trial import RankReport, Status, StepTimes, TrialResult, TrialSpec, failed
from ..timing import median_iqr

RAN = (Status.OK, Status.NONFINITE)  # the trial ran to its end on that rank


@dataclass(frozen=True)
class RankOutcome:
    """What one rank's launcher reported: its worker's result, and whether the trial was stopped
    on that rank while it was still running (another rank had failed)."""

    rank: int
    result: TrialResult
    aborted: bool = False

    @property
    def report(self) -> RankReport:
        r = self.result
        times = r.step_time_s
        return RankReport(rank=self.rank, status=r.status, error=r.error, comm_failure=r.comm_failure,
                          step_median_s=times.median if times else None, step_iqr_s=times.iqr if times else None,
                          peak_memory_bytes=r.peak_memory_bytes, wall_s=r.wall_s)

    @property
    def own_failure(self) -> bool:
        """Failed of its own accord: not in a collective, not stopped by the coordinator, not
        stopped early for the trial's speed."""
        return self.result.status not in (*RAN, Status.PRUNED) and not self.result.comm_failure \
            and not self.aborted

    @property
    def pruned(self) -> bool:
        return self.result.status is Status.PRUNED and not self.aborted


def needs_new_group(outcomes: list[RankOutcome]) -> bool:
    """Whether the workers must be replaced before the next trial: a rank did not run to the end
    (its process group may be stuck mid-collective, or its worker is gone)."""
    return any(o.aborted or o.result.status not in RAN for o in outcomes)


def merge(spec: TrialSpec, outcomes: list[RankOutcome], collective_timeout_s: float) -> TrialResult:
    outcomes = sorted(outcomes, key=lambda o: o.rank)
    reports = tuple(o.report for o in outcomes)
    wall = max((o.result.wall_s or 0.0) for o in outcomes) or None
    if all(o.result.status in RAN and not o.aborted for o in outcomes):
        return _ran(spec, outcomes, reports, wall)
    own = [o for o in outcomes if o.own_failure]
    if own:
        first = min(own, key=lambda o: (o.result.wall_s or 0.0, o.rank))  # the first to fail caused the rest
        return failed(spec, first.result.status, f"rank {first.rank}: {first.result.error}", ranks=reports,
                      failed_rank=first.rank, wall_s=wall, warnings=first.result.warnings)
    pruned = [o for o in outcomes if o.pruned]
    if pruned:
        first = min(pruned, key=lambda o: (o.result.wall_s or 0.0, o.rank))
        return failed(spec, Status.PRUNED, f"{first.result.error} (on rank {first.rank}; a distributed step is as "
                      "slow as its slowest rank)", ranks=reports, failed_rank=None, wall_s=wall)
    waiting = [o.rank for o in outcomes if o.result.comm_failure]
    hung = [o for o in outcomes if o.aborted]
    if hung:
        names = ", ".join(str(o.rank) for o in hung)
        waited = ", ".join(map(str, waiting)) or "the others"
        why = (f"rank {names} stopped making progress: rank {waited} waited {collective_timeout_s:g} s for it in a "
               "collective (the process group's timeout) and gave up")
        return failed(spec, Status.TIMEOUT, why, ranks=reports, failed_rank=hung[0].rank, wall_s=wall)
    first = outcomes[0]
    return failed(spec, first.result.status, f"every rank failed in communication; rank 0: {first.result.error}",
                  ranks=reports, failed_rank=None, wall_s=wall)


def _ran(spec: TrialSpec, outcomes: list[RankOutcome], reports: tuple[RankReport, ...],
         wall: float | None) -> TrialResult:
    lead = outcomes[0].result  # rank 0: the numerics
    world = len(outcomes)
    series = [o.result.step_time_s.samples for o in outcomes if o.result.step_time_s]
    times = lead.step_time_s
    if series and len(series) == world:
        steps = [max(values) for values in zip(*series, strict=False)]  # the slowest rank's, step by step
        median, iqr = median_iqr(steps)
        times = StepTimes(median, iqr, min(steps), max(steps), tuple(steps))
    samples = spec.samples_per_step * world
    flops = lead.flops_per_step * world if lead.flops_per_step else None
    tflops = flops / times.median / 1e12 if flops and times and times.median > 0 else None
    peak_tflops = lead.peak_tflops * world if lead.peak_tflops else None
    peaks = [o.result.peak_memory_bytes for o in outcomes if o.result.peak_memory_bytes is not None]
    status, error, failed_rank = lead.status, lead.error, None
    nonfinite = [o for o in outcomes if o.result.status is Status.NONFINITE]
    if nonfinite:
        status, failed_rank = Status.NONFINITE, nonfinite[0].rank
        error = f"rank {nonfinite[0].rank}: {nonfinite[0].result.error}"
    warnings = list(lead.warnings)
    for o in outcomes[1:]:
        warnings += [f"rank {o.rank}: {w}" for w in o.result.warnings if w not in lead.warnings]
    return dataclasses.replace(
        lead, status=status, error=error, failed_rank=failed_rank, ranks=reports, step_time_s=times,
        samples_per_s=samples / times.median if times and times.median > 0 else None,
        peak_memory_bytes=max(peaks) if peaks else None, flops_per_step=flops, tflops=tflops,
        peak_tflops=peak_tflops, mfu=tflops / peak_tflops if tflops and peak_tflops else None,
        warnings=tuple(warnings), wall_s=wall, comm_failure=False,
    )
