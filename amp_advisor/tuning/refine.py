"""What the phases after the search measure: pure functions of the evidence, the constraints and
the space (plan.py is the search's own plan; decision.py says who contends).

- finish: the leader at the largest batch it ran, still rising, is where the budget ran out, not
  where the speed peaked: its climb goes on (plan.climb), toward larger batches only;
- edge: the leader at the largest batch of its dtype that ran, with a larger one that ran out of
  resources: the batch between them (space.between);
- repair: a reduced precision none of whose trials kept fp32's numerics, and its first failed
  configuration (to X-ray, then measure with the islands it advises);
- confirm: the pool of the main rounds and the trials of interleaved rounds (ABBA: the order
  alternates by round, so that a steady drift cancels);
- stability: the chosen fp16 configuration's longer run.
"""

from __future__ import annotations

import dataclasses

from ..dtypes import Dtype
from ..harness.trial import Status
from .constraints import Constraints
from .decision import contenders
from .evidence import Evidence
from .plan import climb
from .record import Role, TrialRecord
from .space import Candidate, SearchSpace


def finish(evidence: Evidence, constraints: Constraints, space: SearchSpace) -> Candidate | None:
    lead = evidence.best(allowed=constraints.allows)
    step = climb(evidence, constraints, space, lead) if lead else None
    if lead is None or step is None or step.batch_size < lead.candidate.batch_size:
        return None
    return step


def edge(evidence: Evidence, constraints: Constraints, space: SearchSpace) -> Candidate | None:
    best = evidence.best(allowed=constraints.allows)
    if best is None:
        return None
    records = evidence.of_dtype(best.candidate.dtype)
    ok = [r.candidate.batch_size for r in records if r.result.status is Status.OK]
    failed = [r.candidate.batch_size for r in records if r.result.status.is_resource_failure]
    if not ok or not failed or best.candidate.batch_size != max(ok):
        return None  # a bigger batch would not help, or nothing failed above it
    middle = space.between(max(ok), min(failed))
    return None if middle is None else dataclasses.replace(best.candidate, batch_size=middle).with_islands()


def repairs(evidence: Evidence, space: SearchSpace) -> list[TrialRecord]:
    """Per reduced precision that autocasts and failed on numerics in every trial it explored
    (inf/NaN, too many skipped steps, a loss outside the tolerance), its first failure. (When some
    of its configurations ran cleanly, the failures are the scaler settings' or the batch's, not a
    module's; one already measured with islands was repaired, in a resumed run.)"""
    out = []
    for dtype in space.dtypes:
        records = evidence.of_dtype(dtype)
        failed = [r for r in records if r.role.explores and not r.feasible
                  and r.result.status in (Status.OK, Status.NONFINITE) and not r.candidate.fp32_modules]
        if dtype.autocasts and failed and not any(r.feasible or r.candidate.fp32_modules for r in records):
            out.append(failed[0])
    return out


def confirmation_pool(evidence: Evidence, constraints: Constraints) -> list[Candidate]:
    """The contenders (decision.contenders), and fp32 at the leader's batch size so far, so that
    the decision's comparisons (the leader vs the best fp32, and vs fp32 at its own batch) are
    usually made within the same rounds. When the leading dtype has a runner-up the leader is
    open, and the twin waits for it (rounds of its own, after). A leader with a lever is
    measured beside its plain configuration: the lever's gain is judged in the same rounds."""
    pool = contenders(evidence, constraints)
    open_leader = len({c.dtype for c in pool}) < len(pool)
    if pool and not open_leader and pool[0].dtype is not Dtype.FP32 and constraints.allows(pool[0].fp32_twin):
        pool.append(pool[0].fp32_twin)
    if pool and pool[0].levers and evidence.measured(pool[0].plain):
        pool.append(pool[0].plain)
    return list(dict.fromkeys(pool))


def rounds(records: list[TrialRecord], pool: list[Candidate], first_round: int,
           count: int) -> list[tuple[Candidate, int]]:
    """The (configuration, round) trials of `count` interleaved rounds from `first_round` not yet run."""
    done = {(r.candidate.canonical(), r.round) for r in records if r.role is Role.CONFIRM}
    return [(c, k) for k in range(first_round, first_round + count)
            for c in (pool if k % 2 == 1 else pool[::-1]) if (c.canonical(), k) not in done]


def last_round(records: list[TrialRecord]) -> int:
    return max((r.round for r in records if r.round is not None), default=0)


def stability_run(records: list[TrialRecord], candidate: Candidate,
                  scale: float) -> tuple[Candidate, TrialRecord | None]:
    """The chosen fp16 configuration at `scale`, without islands, and its stability run when one ran."""
    c = dataclasses.replace(candidate, init_scale=scale).with_islands()
    return c, next((r for r in records if r.role is Role.STABILITY and r.candidate == c), None)
