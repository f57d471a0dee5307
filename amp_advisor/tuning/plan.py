"""What the search measures next: pure functions of the evidence, the constraints and the space.

The search is a plan, not a guess: the points that change speed are dtype x batch size (x the
gradient reduction under --parallel), and throughput along the batch axis rises, peaks and falls.
So, after the fp32 baseline at the middle batch size:

- scout: each reduced precision's first trial is at the leader's batch size (at first the
  baseline's), so that the first comparison is like with like. A dtype whose lead grows with the
  batch (bf16 on AMX, every dtype on tensor cores) would lose a comparison at a smaller batch;
- climb: the leader is followed toward its best batch size: the unmeasured neighbours of its
  plateau (the sizes it explored within PLATEAU of its best), larger first. A plateau, not one
  point, so that one noisy dip does not stop the climb;
- contention: every other dtype whose best is within CONTENTION of the leader's dtype at the same
  batch size is followed to its own best batch size too: its lead may lie at a batch the
  leader's climb never reached (fp32 behind a reduced precision smaller first: that lead grows
  with the batch);
- the dtypes the probe calls fast are scouted before the leader's rivals are followed; those it
  calls slow (emulated) last, as one scout each settles them;
- top: on a GPU, once the fast reduced precisions are scouted, the best of them is measured at the
  largest batch that its scout's memory says fits, before any climb. A GPU's throughput, and a
  reduced precision's lead over fp32, grow with the batch until memory runs out (tensor cores
  fill up): a lead that only shows at the top of the space is found in one trial instead of a
  climb of one doubling at a time, which a small budget never finishes.

Levers explored on the leaders (levers/: torch.compile, the CPU's bf16 matmuls) are too costly
to try everywhere: once the search has found the leaders, lever_trials puts each lever's first
value on the best plain configuration of every dtype within LEVER_REACH of the best, and each
further value only where the one before it beat the plain configuration.

Before any of these, a configuration whose throughput does not fit its neighbours' is measured
again (recheck). next_step returns None when the plan is done; the search strategy (search.py) fills what budget
is left. GradScaler's settings do not change the speed: fp16 is measured at one setting
(space.point) and its scaler is judged on numerics (the tuner's stability run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ..dtypes import Dtype
from .constraints import Constraints
from .evidence import ConfigEvidence, Evidence
from .record import Role
from .space import Candidate, SearchSpace

PLATEAU = 0.05  # sizes explored within this share of a dtype's best are its plateau
CONTENTION = 0.5  # a dtype whose best explored is at least this share of the leader's is followed
# A batch this much slower per sample than the next smaller one (or a smaller one whose step takes
# this much longer than a bigger one's) is measured again: a CPU loses 10-30% per doubling past its
# peak, and one 3x outlier must not stop a climb
RECHECK_FACTOR = 1.5
# a dtype whose best plain configuration is this close to the best gets the levers tried on it:
# the largest gain a lever was measured to give (torch.compile of the conv net on an AMX Xeon: 1.51x)
LEVER_REACH = 1.6
# where a lever paid at a dtype's leading batch, it is tried at that dtype's other batch sizes this
# close to the leading one too: a compile's gain varies with the batch (the conv net: 1.09-1.15x), and
# one lucky reading of the leader (12% high) can put a neighbour 21% behind it (a simulated AMX landscape)
LEVER_NEIGHBOURS = 0.8


@dataclass(frozen=True)
class Step:
    candidate: Candidate
    role: Role  # SEARCH (a scout), REFINE (a climb) or RECHECK (measured again)


def scout_order(space: SearchSpace, fast: Mapping[Dtype, bool], peaks: Mapping[Dtype, float | None]) -> list[Dtype]:
    """The reduced precisions, the ones the probe calls fast first, by their peak (vendor figures,
    when known), then in the space's order."""
    reduced = [d for d in space.dtypes if d is not Dtype.FP32]
    return sorted(reduced, key=lambda d: (not fast.get(d, False), -(peaks.get(d) or 0.0), space.dtypes.index(d)))


def climb(evidence: Evidence, constraints: Constraints, space: SearchSpace, best: ConfigEvidence,
          larger_first: bool = True) -> Candidate | None:
    """The next batch size for `best`'s dtype (and comm): an unmeasured, allowed neighbour of its
    plateau in the space, the larger one first (or the smaller); None when both are measured or
    ruled out (it has converged)."""
    c = best.candidate
    same = [e for e in evidence.configs.values()
            if e.candidate.dtype is c.dtype and e.candidate.comm == c.comm and not e.candidate.fp32_modules]
    top = best.explore_score or 0.0
    plateau = [e.candidate.batch_size for e in same if (e.explore_score or 0.0) >= (1 - PLATEAU) * top]
    if not plateau:  # `best` runs with fp32 islands: its dtype has no plain batch axis of its own
        return None
    measured = {e.candidate.batch_size for e in same}
    sizes = space.batch_sizes
    above = [b for b in sizes if b > max(plateau)]
    below = [b for b in sizes if b < min(plateau)]
    neighbours = ([above[0]] if above else []) + ([below[-1]] if below else [])
    for b in neighbours if larger_first else neighbours[::-1]:
        near = space.point(c.dtype, b, c.comm)
        if b not in measured and constraints.allows(near):
            return near
    return None


def in_contention(evidence: Evidence, rival: ConfigEvidence, lead: ConfigEvidence) -> bool:
    """Whether `rival` (a dtype's best) may still beat the leader's dtype: within CONTENTION of it
    at the same batch size (like with like: the leader's dtype may have climbed to a batch the
    rival never ran at), or of the leader itself when that batch was not measured."""
    same = dataclasses.replace(lead.candidate, batch_size=rival.candidate.batch_size).with_islands()
    there = evidence.config(same)
    yardstick = (there.explore_score if there is not None else None) or lead.explore_score or 0.0
    return (rival.explore_score or 0.0) >= CONTENTION * yardstick


def scout(space: SearchSpace, constraints: Constraints, dtype: Dtype, at: int) -> Candidate | None:
    """`dtype`'s first trial at batch `at`, or the allowed size nearest to it."""
    for b in sorted(space.batch_sizes, key=lambda b: (abs(b - at), -b)):
        candidate = space.point(dtype, b)
        if constraints.allows(candidate):
            return candidate
    return None


def top(evidence: Evidence, constraints: Constraints, space: SearchSpace, fast: Mapping[Dtype, bool],
        memory_limit: int | None) -> Candidate | None:
    """The best fast reduced precision at the largest batch its scout's memory says fits (peak
    memory scaled in proportion to the batch: an over-estimate, as part of it is fixed), while
    no reduced precision ran above the batch it was scouted at; None when there is nothing to do."""
    reduced = {d: e for d, e in evidence.best_per_dtype(allowed=constraints.allows).items()
               if d is not Dtype.FP32 and fast.get(d, False)}
    if not reduced:
        return None
    scouted = min(e.candidate.batch_size for e in reduced.values())
    if any(r.candidate.batch_size > scouted for d in reduced for r in evidence.of_dtype(d)):
        return None  # a reduced precision climbed (or was measured at the top) already
    best = max(reduced.values(), key=lambda e: e.explore_score or 0.0)
    dtype, at, peak = best.candidate.dtype, best.candidate.batch_size, best.peak_memory_bytes
    fits = [b for b in space.batch_sizes if b > at and constraints.allows(space.point(dtype, b, best.candidate.comm))
            and (memory_limit is None or peak is None or peak * b / at <= memory_limit)]
    return space.point(dtype, max(fits), best.candidate.comm) if fits else None


def inconsistent(evidence: Evidence) -> list[Candidate]:
    """Configurations whose throughput does not fit the next batch size of the same dtype: a
    smaller batch whose step took RECHECK_FACTOR x longer than a bigger one's, or a bigger batch
    RECHECK_FACTOR x slower per sample. Each is measured again once: probably a slow moment of
    the machine, and a climb must not stop on it."""
    out = []
    groups: dict[tuple[Dtype, str, tuple], list[ConfigEvidence]] = {}  # by dtype, comm and levers
    for config in evidence.configs.values():
        if config.explore_score and not any(r.role is Role.RECHECK for r in config.records):
            c = config.candidate
            groups.setdefault((c.dtype, c.comm, c.levers), []).append(config)
    for configs in groups.values():
        configs.sort(key=lambda c: c.candidate.batch_size)
        for small, big in zip(configs, configs[1:], strict=False):  # each with the next
            small_step = small.candidate.batch_size / (small.explore_score or 1.0)
            big_step = big.candidate.batch_size / (big.explore_score or 1.0)
            if small_step > RECHECK_FACTOR * big_step:
                out.append(small.candidate)
            elif (big.explore_score or 0.0) * RECHECK_FACTOR < (small.explore_score or 0.0):
                out.append(big.candidate)
    return list(dict.fromkeys(out))


def next_step(evidence: Evidence, constraints: Constraints, space: SearchSpace, order: list[Dtype],
              fast: Mapping[Dtype, bool], *, gpu: bool = False, memory_limit: int | None = None) -> Step | None:
    """What the plan measures next (see the module docstring), or None when it is done. `gpu`:
    the device fills up with the batch (the top step applies)."""
    for suspect in inconsistent(evidence):
        if constraints.allows(suspect):
            return Step(suspect, Role.RECHECK)
    lead = evidence.best(allowed=constraints.allows)
    if lead is None:
        return None
    at = lead.candidate.batch_size
    untried = [d for d in order if not evidence.of_dtype(d) and d not in constraints.dtypes_out]
    fast_untried = [d for d in untried if fast.get(d, False)]
    if gpu and not fast_untried and (jump := top(evidence, constraints, space, fast, memory_limit)) is not None:
        return Step(jump, Role.SEARCH)
    # the first fast reduced precision is scouted before fp32 climbs: a small budget must not
    # be spent on the yardstick alone
    if lead.candidate.dtype is not Dtype.FP32 or not fast_untried:
        step = climb(evidence, constraints, space, lead)
        if step is not None:
            return Step(step, Role.REFINE)
    for dtype in fast_untried:
        if (candidate := scout(space, constraints, dtype, at)) is not None:
            return Step(candidate, Role.SEARCH)
    rivals = sorted((e for d, e in evidence.best_per_dtype(allowed=constraints.allows).items()
                     if d is not lead.candidate.dtype), key=lambda e: e.explore_score or 0.0, reverse=True)
    for rival in rivals:
        # fp32 behind a reduced precision: that lead grows with the batch, so fp32's best chance
        # lies at smaller batches (cheaper to measure, too)
        downward = rival.candidate.dtype is Dtype.FP32 and lead.candidate.dtype is not Dtype.FP32
        if in_contention(evidence, rival, lead) and \
                (step := climb(evidence, constraints, space, rival, larger_first=not downward)) is not None:
            return Step(step, Role.REFINE)
    for dtype in untried:
        if (candidate := scout(space, constraints, dtype, at)) is not None:
            return Step(candidate, Role.SEARCH)
    return None


def lever_trials(evidence: Evidence, constraints: Constraints, space: SearchSpace) -> list[Step]:
    """The configurations with a lever to measure next (the module docstring says which): a
    REFINE for one not measured yet, a RECHECK for one that measured no faster than its plain
    configuration once (one slow moment of a noisy machine must not dismiss a lever)."""
    plain = [e for e in evidence.configs.values()
             if not e.candidate.levers and not e.candidate.fp32_modules and e.explore_score
             and constraints.allows(e.candidate)]
    if not plain:
        return []
    best = max(e.explore_score or 0.0 for e in plain)
    leaders: dict[Dtype, ConfigEvidence] = {}
    for e in sorted(plain, key=lambda e: -(e.explore_score or 0.0)):
        if (e.explore_score or 0.0) * LEVER_REACH >= best:
            leaders.setdefault(e.candidate.dtype, e)
    out = []
    for name, values in space.lever_values("leaders").items():
        for lead in _lever_leads(evidence, plain, leaders, name):
            for value in values[1:]:
                candidate = dataclasses.replace(lead.candidate, levers=((name, value),)).canonical()
                if not candidate.levers:
                    break  # the lever does not apply to this dtype
                measured = evidence.config(candidate)
                if measured is None:
                    if constraints.allows(candidate):
                        out.append(Step(candidate, Role.REFINE))
                    break
                if not measured.explore_score or measured.explore_score <= (lead.explore_score or 0.0):
                    if measured.explore_score and not any(r.role is Role.RECHECK for r in measured.records):
                        out.append(Step(candidate, Role.RECHECK))
                    break  # no gain at this value: the costlier ones are not tried
    return out


def _lever_leads(evidence: Evidence, plain: list[ConfigEvidence], leaders: dict[Dtype, ConfigEvidence],
                 name: str) -> list[ConfigEvidence]:
    """The leaders, and where lever `name` measured faster than a leader without it, that dtype's
    other plain configurations within LEVER_NEIGHBOURS of it (best first)."""
    out = list(leaders.values())
    for dtype, lead in leaders.items():
        lead_score = lead.explore_score or 0.0
        if any(e.candidate.plain == lead.candidate and name in dict(e.candidate.levers)
               and (e.explore_score or 0.0) > lead_score for e in evidence.configs.values()):
            out += [e for e in sorted(plain, key=lambda e: -(e.explore_score or 0.0))
                    if e.candidate.dtype is dtype and e is not lead
                    and (e.explore_score or 0.0) >= LEVER_NEIGHBOURS * lead_score]
    return out
