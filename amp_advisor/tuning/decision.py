"""The decision rules, as pure functions of the evidence (what "right" means).

- Contenders for confirmation: the best configuration of every dtype that ran cleanly (by its
  exploration score) and is still in contention (plan.in_contention: within half of the leader's
  dtype at its batch size), so a dtype whose trials happened to run in a slow moment still gets
  measured beside the others, while one that is 2x behind does not spend rounds; and the
  leading dtype's runner-up when it explored close to its best (or when no other dtype ran
  cleanly), so that the batch size is decided in the rounds too, not by
  one noisy exploration trial.
- More rounds when the main rounds leave the leader unseparated from others (close_group): of
  those configurations alone, and the leader's fp32 twin.
- Only confirmed configurations can win: the leader is the best over the main rounds (those in
  which every contender was measured), unless a configuration beat it over all the rounds the
  two shared (standings). Speeds are ranked over the planned run (--train-steps), a lever's
  one-time cost (a compile) paid once in it.
- A reduced precision (tf32, bf16, fp16) is recommended when it beats the best fp32 configuration
  of the space (any batch size) by more than the margin, both measured in the same interleaved
  rounds. Otherwise the best fp32 configuration is recommended.
- The speedup "at the same batch size" compares with fp32 at the recommended batch, again within
  the rounds that measured both. The twins are chosen after the leader is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..dtypes import Dtype
from .constraints import Constraints
from .evidence import ConfigEvidence, Evidence, Paired
from .plan import in_contention
from .space import Candidate

NOT_WORSE_MARGIN = 0.02  # reduced precision must beat the best fp32 by more than this
RUNNER_UP_WITHIN = 0.15  # the leading dtype's second-best joins the rounds when explored this close
NEIGHBOUR_WITHIN = 0.5  # the leader's batch neighbours join the rounds when explored this close
CLOSE_CALL = 0.08  # the two best within this of each other in the rounds: more rounds
# Interleaved re-measurements of the contenders (the main rounds): this machine drifts over
# seconds. A configuration is ranked against the leader over at least this many shared rounds:
# one round with a 3x outlier in it must not crown a configuration it measured beside.
CONFIRM_ROUNDS = 2


@dataclass(frozen=True)
class Figure:
    """A configuration's samples/s and the trials the figure rests on."""

    candidate: Candidate
    samples_per_s: float
    trials: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"config": self.candidate.label, "dtype": self.candidate.dtype.value,
                "batch_size": self.candidate.batch_size, "samples_per_s": self.samples_per_s,
                "trials": list(self.trials)}


@dataclass(frozen=True)
class Decision:
    chosen: Figure | None
    fp32_best: Figure | None = None  # the best fp32 configuration, in the rounds it shared with the chosen one
    fp32_same_batch: Figure | None = None  # fp32 at the chosen batch, in the rounds it shared with it
    speedup_vs_fp32: float | None = None  # vs fp32 at the same batch size
    speedup_vs_best_fp32: float | None = None
    confirmed: bool = True  # False: no confirmation rounds ran (time budget); exploration figures
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def candidate(self) -> Candidate | None:
        return self.chosen.candidate if self.chosen else None


def contenders(evidence: Evidence, constraints: Constraints) -> list[Candidate]:
    """The best of each dtype that ran cleanly, is still allowed and in contention, and the leading dtype's
    second-best configuration when it explored within RUNNER_UP_WITHIN of its best (one
    exploration trial each cannot tell two batch sizes that close apart on a noisy machine);
    fastest first."""
    best = sorted(evidence.best_per_dtype(allowed=constraints.allows).values(), key=_explored, reverse=True)
    best = [e for e in best if e is best[0] or in_contention(evidence, e, best[0])]
    pool = list(best)
    if best:
        top = best[0]
        pool += batch_neighbours(evidence, constraints, top)
        second = evidence.best(dtype=top.candidate.dtype,
                               allowed=lambda c: c != top.candidate and constraints.allows(c))
        # the runner-up joins when close, or when the leader would otherwise have no one to meet
        # in the rounds: a recommendation always rests on confirmation rounds
        if second is not None and (_explored(second) >= (1 - RUNNER_UP_WITHIN) * _explored(top) or len(pool) == 1):
            pool.append(second)
    return list(dict.fromkeys(e.candidate for e in sorted(pool, key=_explored, reverse=True)))


def batch_neighbours(evidence: Evidence, constraints: Constraints, top: ConfigEvidence) -> list[ConfigEvidence]:
    """The leader's dtype at the measured batch sizes next to the leader's (one smaller, one
    larger), when explored within NEIGHBOUR_WITHIN of it: one exploration trial in a slow patch
    can put the leader one size off its best, and the rounds tell."""
    c = top.candidate
    same = [e for e in evidence.configs.values()
            if e.candidate.dtype is c.dtype and e.candidate.comm == c.comm and not e.candidate.fp32_modules
            and e.explore_score and constraints.allows(e.candidate) and e.candidate != c]
    smaller = [e for e in same if e.candidate.batch_size < c.batch_size]
    larger = [e for e in same if e.candidate.batch_size > c.batch_size]
    out = []
    if smaller:
        out.append(max(smaller, key=lambda e: e.candidate.batch_size))
    if larger:
        out.append(min(larger, key=lambda e: e.candidate.batch_size))
    return [e for e in out if _explored(e) >= (1 - NEIGHBOUR_WITHIN) * _explored(top)]


def _explored(e: ConfigEvidence) -> float:
    """The exploration score of a configuration `Evidence.best` returned (so it has one)."""
    return e.explore_score or 0.0


def ranked_in_main_rounds(evidence: Evidence, constraints: Constraints,
                          dtype: Dtype | None = None) -> ConfigEvidence | None:
    """The best configuration (of a dtype) over the main confirmation rounds, those in which every
    contender was measured: rounds added later for the twins measure again but do not re-rank."""
    main = evidence.main_rounds()
    scored = [(e.over_run(score, constraints.train_steps), e) for e in evidence.configs.values()
              if constraints.allows(e.candidate) and (dtype is None or e.candidate.dtype is dtype)
              and (score := evidence.in_rounds(e.candidate, main)) is not None]
    return max(scored, key=lambda se: se[0])[1] if scored else None


def paired(evidence: Evidence, a: Candidate, b: Candidate) -> Paired | None:
    """a and b over the confirmation rounds they shared, when they shared CONFIRM_ROUNDS rounds
    or more (as many as the main rounds, if fewer ran), with a clean figure for each; else None."""
    pair = evidence.paired(a, b)
    if pair is None or not pair.a_score or not pair.b_score:
        return None
    return pair if len(pair.rounds) >= min(CONFIRM_ROUNDS, len(evidence.main_rounds())) else None


def standings(evidence: Evidence, constraints: Constraints) -> list[tuple[float, ConfigEvidence]]:
    """Every configuration that met the main rounds' best in CONFIRM_ROUNDS rounds or more, by
    its speed relative to it over the rounds the two shared (all of them: the main rounds, and
    the close call's rounds that measured them again) and over the planned run, one-time costs
    paid (Constraints.train_steps), fastest first."""
    top = ranked_in_main_rounds(evidence, constraints)
    if top is None:
        return []
    ranked = [(1.0, top)]
    for e in evidence.configs.values():
        pair = paired(evidence, top.candidate, e.candidate) if e is not top and constraints.allows(e.candidate) \
            else None
        if pair is not None and pair.a_score and pair.b_score:  # over the planned run: a compile's cost paid
            steps = constraints.train_steps
            ranked.append((e.over_run(pair.b_score, steps) / top.over_run(pair.a_score, steps), e))
    return sorted(ranked, key=lambda re: re[0], reverse=True)


def close_group(evidence: Evidence, constraints: Constraints) -> list[Candidate]:
    """The leader and the configurations its rounds have not separated it from, leader first:
    within CLOSE_CALL of it over the rounds they shared, or with overlapping rounds (the
    leader's slowest round below the other's fastest: rounds of a machine that spreads by
    8-30% settle nothing then). More rounds of this group alone decide between them; those far
    behind spend none."""
    ranked = standings(evidence, constraints)
    if not ranked:
        return []
    lead = ranked[0][1]
    group = [lead.candidate]
    for _, e in ranked[1:]:
        pair = paired(evidence, lead.candidate, e.candidate)
        if pair is None or pair.ratio is None:
            continue
        lead_rounds = [s for k in pair.rounds if (s := lead.rounds.get(k))]
        other_rounds = [s for k in pair.rounds if (s := e.rounds.get(k))]
        if pair.ratio >= 1 - CLOSE_CALL or min(lead_rounds) < max(other_rounds):
            group.append(e.candidate)
    return group


def leader(evidence: Evidence, constraints: Constraints) -> ConfigEvidence | None:
    """The best configuration of the confirmation rounds: the main rounds' best, unless a
    configuration beat it over the rounds the two shared (a close call's extra rounds)."""
    ranked = standings(evidence, constraints)
    return ranked[0][1] if ranked else None


def best_fp32(evidence: Evidence, constraints: Constraints) -> ConfigEvidence | None:
    """The best fp32 configuration: in the main rounds if fp32 took part, else as explored."""
    return ranked_in_main_rounds(evidence, constraints, Dtype.FP32) or \
        evidence.best(dtype=Dtype.FP32, allowed=constraints.allows)


def twin_wanted(evidence: Evidence, constraints: Constraints, candidate: Candidate) -> bool:
    """Whether fp32 at `candidate`'s batch belongs beside it in the rounds: a reduced precision's
    same-batch speedup, where fp32 may run at that batch (or already did)."""
    twin = candidate.fp32_twin
    return candidate.dtype is not Dtype.FP32 and (constraints.allows(twin) or evidence.measured(twin))


def needed_twins(evidence: Evidence, constraints: Constraints) -> list[Candidate]:
    """What the decision needs measured beside the leader, in the same rounds: the best fp32
    configuration and fp32 at the leader's batch size."""
    lead = leader(evidence, constraints)
    if lead is None or lead.candidate.dtype is Dtype.FP32:
        return []
    fp32 = best_fp32(evidence, constraints)
    wanted = [lead.candidate]
    if fp32 is not None:
        wanted.append(fp32.candidate)
    if twin_wanted(evidence, constraints, lead.candidate):
        wanted.append(lead.candidate.fp32_twin)
    return list(dict.fromkeys(wanted))


def _figure(e: ConfigEvidence) -> Figure:
    """A configuration at its own score (confirmed when it was), with the trials behind it."""
    if e.score is None:
        raise ValueError(f"{e.candidate.label} has no clean measurement to show")
    return Figure(e.candidate, e.score, e.score_trials)


def _versus(pair: Paired | None) -> tuple[float, Paired, Figure] | None:
    """(a's samples/s over b's, the pair, b's figure) in the rounds the pair shared; None where
    either has no clean figure there."""
    if pair is None or not pair.a_score or not pair.b_score:
        return None
    return pair.a_score / pair.b_score, pair, Figure(pair.b.candidate, pair.b_score, pair.trials[1])


def decide(evidence: Evidence, constraints: Constraints, margin: float = NOT_WORSE_MARGIN) -> Decision:
    notes: list[str] = []
    lead = leader(evidence, constraints)
    confirmed = lead is not None
    if lead is None:  # no confirmation ran (time budget, or a single configuration): the explored best
        lead = evidence.best(allowed=constraints.allows)
        if lead is None:
            return Decision(None, notes=("no configuration ran cleanly: nothing to recommend "
                                         "(see the trials for why)",))
        if len([e for e in evidence.configs.values() if e.explore_score is not None]) > 1:
            notes.append("no confirmation rounds ran: the figures are single exploration measurements")

    if lead.candidate.dtype is Dtype.FP32:
        chosen = _figure(lead)
        return Decision(chosen, chosen, chosen, 1.0, 1.0, confirmed, tuple(notes))

    # The best fp32 configuration, judged with the leader as the yardstick: every fp32 configuration
    # measured in rounds beside the leader (the main rounds, the twin rounds) is compared with it
    # within those rounds, and the one it beats by the least is the strongest fp32.
    versus = [v for e in evidence.configs.values()
              if e.candidate.dtype is Dtype.FP32 and constraints.allows(e.candidate)
              if (v := _versus(paired(evidence, lead.candidate, e.candidate))) is not None]
    lead_fig = _figure(lead)  # over all its confirmation rounds; the ratios use the rounds shared
    if versus:
        ratio, pair, fp32_fig = min(versus, key=lambda v: v[0])
        fp32 = pair.b
        where = f"in the same {len(pair.rounds)} interleaved rounds"
    else:
        explored = best_fp32(evidence, constraints)
        if explored is None:
            notes.append(f"no fp32 configuration ran cleanly: {lead.candidate.label} is recommended without an fp32 "
                         "comparison")
            return Decision(_figure(lead), confirmed=confirmed, notes=tuple(notes))
        fp32 = explored
        fp32_fig = _figure(fp32)
        ratio = lead_fig.samples_per_s / fp32_fig.samples_per_s
        where = "not measured in the same rounds"
        notes.append(f"{lead.candidate.label} and {fp32.candidate.label} were not measured in the same rounds: "
                     "their figures come from different minutes of the machine")

    if ratio <= 1 + margin:
        notes.append(f"{lead.candidate.label} ({lead_fig.samples_per_s:.1f} samples/s) does not beat the best fp32 "
                     f"configuration, {fp32.candidate.label} ({fp32_fig.samples_per_s:.1f}, {where}), by more than "
                     f"{margin:.0%}: fp32 recommended")
        chosen = _figure(fp32)
        return Decision(chosen, chosen, chosen, 1.0, 1.0, confirmed, tuple(notes))

    twin_fig: Figure | None = None
    speedup: float | None = None
    twin_versus = _versus(paired(evidence, lead.candidate, lead.candidate.fp32_twin))
    if twin_versus is not None:
        speedup, _, twin_fig = twin_versus
    else:
        twin = evidence.twin(lead.candidate)
        reason = constraints.reason(lead.candidate.fp32_twin)
        notes.append(f"fp32 at batch {lead.candidate.batch_size} was not measured beside {lead.candidate.label}"
                     + (f" ({reason})" if reason else "") + ": no same-batch speedup")
        if twin is not None and twin.score:
            twin_fig = _figure(twin)
    return Decision(lead_fig, fp32_fig, twin_fig, speedup, ratio, confirmed, tuple(notes))


def explain(decision: Decision, evidence: Evidence, constraints: Constraints, dtypes: tuple[Dtype, ...],
            verdicts: Mapping[Dtype, object]) -> str:
    """Why, in one paragraph: the chosen configuration, then each other dtype: what happened to it."""
    chosen = decision.chosen
    if chosen is None:
        return "no configuration ran cleanly"
    how = "in interleaved confirmation rounds" if decision.confirmed else "in a single exploration trial"
    parts = [f"{chosen.candidate.label} was the fastest configuration that kept fp32's numerics "
             f"({chosen.samples_per_s:.1f} samples/s {how})"]
    if decision.speedup_vs_best_fp32 and chosen.candidate.dtype is not Dtype.FP32 and decision.fp32_best:
        parts.append(f"{decision.speedup_vs_best_fp32:.2f}x the best fp32 configuration "
                     f"({decision.fp32_best.candidate.label})")
    for dtype in dtypes:
        if dtype is chosen.candidate.dtype:
            continue
        records = evidence.of_dtype(dtype)
        verdict = verdicts.get(dtype)
        best = evidence.best(dtype=dtype, confirmed=True) or evidence.best(dtype=dtype)
        if dtype is Dtype.FP32 and decision.fp32_best is not None:
            f = decision.fp32_best
            parts.append(f"fp32 reached {f.samples_per_s:.1f} samples/s at best ({f.candidate.label}, "
                         f"{'beside it in the same rounds' if decision.confirmed else 'explored'})")
        elif dtype in constraints.dtypes_out:
            parts.append(constraints.dtypes_out[dtype])
        elif best is not None:
            parts.append(f"{dtype} reached {best.score:.1f} samples/s at best ({best.candidate.label}"
                         f"{', confirmed' if best.confirmed else ''})")
        elif records:
            first = next((r for r in records if not r.feasible), records[0])
            parts.append(f"{dtype} did not run cleanly: {first.why_not} (trial {first.number})")
        elif verdict is not None and not getattr(verdict, "fast", True):
            parts.append(f"{dtype} not tried: {getattr(verdict, 'why', '')}")
        else:
            parts.append(f"{dtype} not tried within the trial budget")
    return "; ".join(parts)


DRIFT_LIMIT = 0.25  # one configuration's measurements further apart than this: the machine drifted


def machine_busy(evidence: Evidence, cores: int | None) -> str | None:
    """Whether the machine was busy while the run measured: a configuration measured more than once
    (the fp32 reference in search and every round, rechecks, the contenders) whose figures lie
    more than DRIFT_LIMIT apart, or a load average above the core count when trials started.
    None when neither was seen."""
    parts = []
    spreads = [(c.candidate, s) for c in evidence.configs.values() if (s := evidence.spread(c.candidate))]
    if spreads:
        candidate, (low, high, trials) = max(spreads, key=lambda cs: cs[1][1] / cs[1][0])
        if high > low * (1 + DRIFT_LIMIT):
            parts.append(f"{candidate.label} measured between {low:.1f} and {high:.1f} samples/s in trials "
                         f"{', '.join(map(str, trials))} ({high / low - 1:.0%} apart): the machine's speed drifted "
                         "during the run")
    busy = [load for r in evidence.records if cores and (load := r.load) is not None and load > cores]
    if busy:
        parts.append(f"the load average was above the {cores} cores when {len(busy)} of {len(evidence.records)} trials "
                     f"started (up to {max(busy):.1f}): other work competed for the machine")
    if not parts:
        return None
    return "; ".join(parts) + ". Figures within a few percent may swap places on a quieter machine: re-run to check."
