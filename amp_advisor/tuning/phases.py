"""The tuning run's phases, each a short loop: ask a pure planning function (plan.py, refine.py,
decision.py) what to measure next from the evidence, run it (runner.py), ask again. The order
and the reasons for each phase are the tuner's docstring (tuner.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..diagnosis import DEFAULT_STEPS as DIAGNOSE_STEPS
from ..diagnosis import DiagnoseSpec
from ..dtypes import Dtype
from ..errors import BadInputError
from ..harness.trial import Status
from ..harness.worker import DiagnoseError
from ..levers.islands import ISLANDS
from ..recommendation import GradScalerConfig
from . import plan, refine
from .decision import CONFIRM_ROUNDS, close_group, needed_twins, paired, twin_wanted
from .record import Role, TrialRecord
from .runner import TrialRunner
from .search import SearchStrategy, make_strategy
from .space import Candidate, seeded_init_scale

MAX_LEVER_TRIALS = 8  # the levers phase: its trials at most (each may compile for seconds to minutes)
MAX_REPEATED_ASKS = 10  # the strategy keeps proposing measured points: it has converged
FINISH_TRIALS = 2  # the leader's climb toward larger batches, past the search budget
EDGE_TRIALS = 2  # bisections between the largest batch that ran and the smallest that failed
MAX_CONFIRM_ROUNDS = 6  # ... and as many as this for a close call (decision.close_group), of it alone
# Rounds of the leader beside a twin it did not meet in the main rounds (its batch size was open,
# or the leader changed): two, as the main rounds, so that one slow round (a 3x outlier) cannot
# make the leader look slower than fp32, and an fp32 twin that is faster is seen to be.
TWIN_ROUNDS = 2
# bayes: search trials as a share of the points that change speed (dtype x batch x reduction),
# at least MIN_SEARCH_TRIALS: 6 of a CPU's 12, 14 of an H100's 28
SEARCH_SHARE = 0.5
MIN_SEARCH_TRIALS = 6


def baseline(trials: TrialRunner) -> TrialRecord | None:
    """fp32 at the middle batch size (smaller ones if that fails); a resumed run's, if it has one."""
    for record in trials.records:
        if record.role is Role.SEARCH and record.candidate.dtype is Dtype.FP32 and record.result.status is Status.OK:
            return record
    trials.phase("baseline", 1)
    for bs in [b for b in reversed(trials.space.batch_sizes) if b <= trials.space.baseline_batch]:
        if trials.out_of_time():
            return None
        record = trials.run(trials.space.point(Dtype.FP32, bs), Role.SEARCH)
        if record.result.status is Status.OK:
            return record
    return None


def seed_init_scale(trials: TrialRunner, baseline: TrialRecord | None) -> None:
    """fp16's init_scale choices, around the seed the baseline's largest gradient gives."""
    stats = baseline.result.grad_stats if baseline else None
    max_abs = stats.max_abs if stats else None
    seed = seeded_init_scale(max_abs)
    if max_abs:
        trials.notes.append(f"fp16 init_scale seeded at 2^{math.log2(seed):g}: the largest fp32 gradient is "
                            f"{max_abs:.3g}, times the scale kept 8x under fp16's maximum")
    trials.space = trials.space.with_init_scale_seed(seed)
    trials.store.record_context(space=trials.space.to_dict(), init_scale_seed=seed)


def search_limit(trials: TrialRunner) -> int:
    """Search trials (the baseline, scouts, climbs and the strategy's): --max-trials, or with the
    Bayesian strategy SEARCH_SHARE of the points that change speed (at least MIN_SEARCH_TRIALS),
    or every one of them (grid)."""
    n, settings = len(trials.space.candidates()), trials.settings
    if settings.max_trials:
        return settings.max_trials
    if settings.strategy == "grid":
        return n
    return min(n, max(MIN_SEARCH_TRIALS, math.ceil(SEARCH_SHARE * n)))


def _searched(trials: TrialRunner) -> int:
    evidence = trials.evidence
    return len(evidence.of_role(Role.SEARCH)) + len(evidence.of_role(Role.REFINE))


def search(trials: TrialRunner) -> str:
    """The plan (plan.py: scouts like with like, each contending dtype climbed toward its best
    batch), then the strategy for what budget is left; with --strategy grid, every point. Returns
    why it stopped."""
    limit, profile, space, settings = search_limit(trials), trials.profile, trials.space, trials.settings
    trials.phase("search", max(0, limit - _searched(trials)))
    fast = {d: v.fast for d, v in profile.dtypes.items()}
    order = plan.scout_order(space, fast, {d: profile.peak_tflops(d) for d in space.dtypes})
    strategy: SearchStrategy | None = None
    repeated = 0
    while True:
        evidence, constraints = trials.evidence, trials.constraints
        if _searched(trials) >= limit:
            return f"reached {limit} search trials"
        if trials.out_of_time():
            return f"time budget of {settings.time_budget_s:g} s used"
        if all(evidence.measured(c) or not constraints.allows(c) for c in space.candidates()):
            return "every candidate was measured or ruled out"
        step = None if settings.strategy == "grid" else plan.next_step(
            evidence, constraints, space, order, fast, gpu=profile.kind in ("cuda", "rocm"),
            memory_limit=trials.memory_limit)
        if step is not None:
            trials.run(step.candidate, step.role, abandon=step.role is not Role.RECHECK)
            continue
        strategy = strategy or _strategy(trials)
        candidate = strategy.ask()
        if candidate is None:
            return "every candidate was tried"
        config = evidence.config(candidate)
        if config is not None or not constraints.allows(candidate):
            strategy.tell(candidate, config.explore_score if config else None)
            repeated += 1
            if repeated > MAX_REPEATED_ASKS:
                return "the search kept proposing measured or ruled-out configurations: converged"
            continue
        repeated = 0
        strategy.tell(candidate, trials.run(candidate, Role.SEARCH).score)


def _strategy(trials: TrialRunner) -> SearchStrategy:
    """The strategy, told every point explored so far (the plan's included)."""
    strategy = make_strategy(trials.settings.strategy, trials.space, trials.settings.seed)
    points = set(trials.space.candidates())
    for config in trials.evidence.configs.values():
        if config.explore_records and config.candidate in points:
            strategy.tell(config.candidate, config.explore_score)
    return strategy


def follow(trials: TrialRunner, next_of: Callable[..., Candidate | None], phase: str, most: int,
           role: Role) -> None:
    """Up to `most` trials of what `next_of(evidence, constraints, space)` (refine.py) asks for."""
    for _ in range(most):
        step = next_of(trials.evidence, trials.constraints, trials.space)
        if step is None or trials.out_of_time():
            return
        trials.phase(phase, 1)
        trials.run(step, role)


def finish(trials: TrialRunner) -> None:
    follow(trials, refine.finish, "finish", FINISH_TRIALS, Role.REFINE)


def edge(trials: TrialRunner) -> None:
    follow(trials, refine.edge, "edge", EDGE_TRIALS, Role.BISECT)


def recheck(trials: TrialRunner) -> None:
    """What still does not fit its neighbours (plan.inconsistent), measured again in full."""
    suspects = plan.inconsistent(trials.evidence)
    if suspects:
        trials.phase("recheck", len(suspects))
    for candidate in suspects:
        if trials.out_of_time():
            return
        trials.run(candidate, Role.RECHECK, abandon=False)


def lever_trials(trials: TrialRunner) -> None:
    """The levers explored on the leaders (plan.lever_trials), until none is left to try."""
    for _ in range(MAX_LEVER_TRIALS):
        todo = plan.lever_trials(trials.evidence, trials.constraints, trials.space)
        if not todo or trials.out_of_time():
            return
        trials.phase("levers", len(todo))
        trials.run(todo[0].candidate, todo[0].role, abandon=False)


def _rounds(trials: TrialRunner, pool: list[Candidate], first_round: int, count: int) -> None:
    todo = refine.rounds(trials.records, pool, first_round, count)
    if todo:
        trials.phase("confirm", len(todo))
    for candidate, k in todo:
        if trials.out_of_time():
            trials.notes.append("the time budget ended the confirmation rounds early")
            return
        # numerics were judged when the configuration was explored; a round measures speed
        trials.run(candidate, Role.CONFIRM, round=k, abandon=False, remeasure=True)


def confirm(trials: TrialRunner) -> None:
    """The main rounds of the contenders; a close call (decision.close_group: configurations the
    rounds have not separated from the leader) gets more rounds of that group alone, with the
    leader's fp32 twin, up to MAX_CONFIRM_ROUNDS: a batch size 7% better is lost in two rounds of
    a machine whose trials spread by 8%, and found in more; the contenders far behind spend no
    more trials. Then the twins the decision needs, now that the leader is known: those not yet
    measured in a round beside it get rounds of their own, with the leader."""
    pool = refine.confirmation_pool(trials.evidence, trials.constraints)
    if len(pool) < 2:
        return  # one configuration in contention: nothing to compare it with
    _rounds(trials, pool, 1, CONFIRM_ROUNDS)
    while (refine.last_round(trials.records) < MAX_CONFIRM_ROUNDS and not trials.out_of_time()
           and len(group := close_group(trials.evidence, trials.constraints)) > 1):
        if twin_wanted(trials.evidence, trials.constraints, group[0]):
            group = list(dict.fromkeys([*group, group[0].fp32_twin]))
        _rounds(trials, group, refine.last_round(trials.records) + 1, 1)
    evidence = trials.evidence
    wanted = needed_twins(evidence, trials.constraints)
    missing = [c for c in wanted[1:] if paired(evidence, wanted[0], c) is None]
    if missing:
        _rounds(trials, [wanted[0], *missing], refine.last_round(trials.records) + 1, TWIN_ROUNDS)


def repair(trials: TrialRunner) -> None:
    """X-ray the first failed configuration of each dtype refine.repairs names (diagnosis.py), once,
    save the diagnosis for the report, and measure that configuration again with the fp32 islands
    the X-ray advises, like any other configuration."""
    settings = trials.settings
    saved = {d.dtype: d for d in trials.store.diagnoses()}  # a resumed run diagnosed some already
    for first in refine.repairs(trials.evidence, trials.space):
        if ISLANDS in settings.skip_levers:
            trials.notes.append(f"{first.candidate.dtype} failed on numerics (trial {first.number}: "
                                f"{first.why_not}); not repaired with fp32 islands (--skip-lever {ISLANDS})")
            continue
        dtype = first.candidate.dtype
        if trials.out_of_time():
            trials.notes.append("the time budget left no time to diagnose the numerics failures")
            return
        trials.phase("repair", 1)
        diagnosis = saved.get(dtype)
        if diagnosis is None:
            trials.emit({"event": "diagnose_start", "dtype": dtype.value, "trial": first.number})
            spec = DiagnoseSpec(settings.workload, dtype, first.candidate.batch_size, settings.device,
                                steps=DIAGNOSE_STEPS, seed=settings.seed, init_scale=first.result.spec.init_scale,
                                growth_interval=first.result.spec.growth_interval)
            try:
                diagnosis = trials.worker.diagnose(spec)
            except (DiagnoseError, BadInputError) as exc:
                trials.notes.append(f"{dtype} failed on numerics (trial {first.number}); its diagnosis did not "
                                    f"finish: {exc}")
                continue
            trials.store.write_diagnosis(diagnosis)
        failed = f"{dtype} failed on numerics (trial {first.number}: {first.why_not}); the X-ray"
        if not (islands := diagnosis.advised_islands()):
            trials.notes.append(f"{failed} found no module to keep in fp32")
            continue
        repaired = first.candidate.with_islands(islands)
        trials.notes.append(f"{failed} advises keeping {', '.join(islands)} in fp32 "
                            f"({diagnosis.culprits()[0].evidence}); measured as {repaired.label}")
        trials.run(repaired, Role.REPAIR)


def stability(trials: TrialRunner, candidate: Candidate) -> tuple[GradScalerConfig, str]:
    """A longer fp16 run at the chosen scaler settings; the scale lowered once if it skips too often."""
    settings, scale = trials.settings, candidate.init_scale
    for _attempt in range(2):
        c, record = refine.stability_run(trials.records, candidate, scale)
        trials.phase("stability", 0 if record else 1)
        record = record or trials.run(c, Role.STABILITY, steps=settings.stability_steps, abandon=False)
        res = record.result
        skipped = res.skipped_steps or 0
        underflow = res.grad_stats.underflow_fraction if res.grad_stats else 0.0
        if res.status is Status.OK and skipped / max(len(res.losses), 1) <= settings.max_skip_rate:
            return (GradScalerConfig(True, scale, growth_interval=candidate.growth_interval),
                    f"fp16 stability run (trial {record.number}): {skipped} of {len(res.losses)} steps skipped, "
                    f"{underflow:.3%} of gradient elements underflow at scale {res.final_loss_scale:g}")
        scale /= 8
    return (GradScalerConfig(True, scale, growth_interval=candidate.growth_interval),
            "fp16 stability run still skipped many steps: watch the scaler's skipped-step count")
