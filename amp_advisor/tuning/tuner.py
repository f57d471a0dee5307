"""The tuning loop, in phases: baseline -> search -> finish -> recheck -> edge -> repair -> confirm ->
stability -> choose. The tuner runs trials and records them; what they mean is decided elsewhere,
by pure functions of the records: Evidence (evidence.py), Constraints (constraints.py), the plan
(plan.py) and the decision rules (decision.py). Nothing is replayed: each question is answered
from the records as they are.

Phases, and why:
- baseline: fp32 at the middle batch size first: the reference speed, and the fp32 gradients that
  seed GradScaler's init_scale (the largest power of two keeping the largest gradient 8x under
  fp16's maximum). A fresh worker warms up on a short trial first (Role.WARMUP): its first trial
  runs slow;
- search: the plan (scouts at the leader's batch, climbs of every contending dtype toward its best
  batch, rechecks of what does not fit), then the strategy (skopt ask/tell, or the grid) for the
  budget left; the constraints veto; a trial whose first step takes PRUNE_FACTOR x longer than
  the dtype's best rate needs is stopped early;
- finish: when the budget ends with the leader at the largest batch it ran, still rising, its
  climb goes on past the budget (FINISH_TRIALS at most);
- recheck: what still does not fit its neighbours is measured again;
- edge: between the largest batch that ran and the smallest that failed, as the space allows;
- repair: a reduced precision that failed on numerics everywhere, X-rayed and measured with islands;
- confirm: the contenders (decision.contenders) in interleaved rounds, a close call
  (decision.close_group) in rounds of its own with the leader's fp32 twin, and the twins the
  leader did not meet in rounds of their own;
- stability: a chosen fp16 configuration runs longer, judged on skipped steps.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import levers
from ..diagnosis import DEFAULT_STEPS as DIAGNOSE_STEPS
from ..diagnosis import DiagnoseSpec
from ..distributed.policy import Parallel, backend_for
from ..dtypes import Dtype, uses_tf32
from ..errors import BadInputError
from ..harness.executor import TrialExecutor
from ..harness.memory import memory_available_bytes
from ..harness.trial import Status, TrialSpec
from ..harness.worker import DiagnoseError, Worker
from ..recommendation import Distributed, GradScalerConfig, Measured, Recommendation, fingerprint_of
from . import plan
from .constraints import MIN_ABANDON_S, PRUNE_FACTOR, Constraints, derive
from .decision import (
    CONFIRM_ROUNDS,
    Decision,
    Figure,
    close_group,
    contenders,
    decide,
    explain,
    machine_busy,
    needed_twins,
    paired,
    twin_wanted,
)
from .evidence import Evidence
from .record import Role, TrialRecord, judge
from .search import SearchStrategy, make_strategy
from .settings import TuneSettings
from .space import Candidate, SearchSpace, build_space, seeded_init_scale
from .store import RunStore

MAX_LEVER_TRIALS = 8  # the levers phase: its trials at most (each may compile for seconds to minutes)
MAX_REPEATED_ASKS = 10  # the strategy keeps proposing measured points: it has converged
TRIAL_MEASURE_S = 2.5  # aim for this much measured time per trial: enough steps, not more
CONFIRM_MEASURE_S = 0.75  # ... per confirmation round: more, shorter rounds average the machine's drift better
MIN_STEPS = 3
FINISH_TRIALS = 2  # the leader's climb toward larger batches, past the search budget
COMPARE_STEPS = 6  # loss agreement with fp32 over the first steps: one fp32 curve per batch size serves all
MAX_CONFIRM_ROUNDS = 6  # ... and as many as this for a close call (decision.close_group), of it alone
# Rounds of the leader beside a twin it did not meet in the main rounds (its batch size was open,
# or the leader changed): two, as the main rounds, so that one slow round (a 3x outlier) cannot
# make the leader look slower than fp32, and an fp32 twin that is faster is seen to be.
TWIN_ROUNDS = 2
# The first step of a trial (model build included) may take this many times what the calibration
# step or a finished trial took, scaled by the samples per step, and at least the floor: a hang is
# noticed in seconds-to-minutes, not after the worker's 10-minute default.
FIRST_STEP_FACTOR = 10.0
FIRST_STEP_FLOOR_S = 30.0
# bayes: search trials as a share of the points that change speed (dtype x batch x reduction),
# at least MIN_SEARCH_TRIALS: 6 of a CPU's 12, 14 of an H100's 28
SEARCH_SHARE = 0.5
MIN_SEARCH_TRIALS = 6

EventFn = Callable[[dict[str, Any]], None]

@dataclass
class TuneResult:
    out_dir: Path
    recommendation: Recommendation | None
    records: list[TrialRecord]
    space: SearchSpace | None
    notes: list[str] = field(default_factory=list)
    stopped_because: str = ""
    wall_s: float = 0.0
    decision: Decision | None = None
    report: Any = None  # report.ReportFiles once written
    report_error: str | None = None  # why the report could not be written (the run itself is complete)

    @property
    def trials_run(self) -> int:
        return len(self.records)


class Tuner:
    def __init__(self, settings: TuneSettings, store: RunStore, *, on_event: EventFn | None = None,
                 worker: TrialExecutor | None = None, device_profile=None,
                 calibration: tuple[int, float] | None = None, clock: Callable[[], float] = time.monotonic,
                 memory_total_bytes: int | None = None) -> None:
        """`calibration`: (samples, seconds) of building the model and one fp32 step, measured
        before the run (tune() does it at the smallest batch size). `worker`: one process, or
        every rank's under --parallel (distributed.ranks.RankWorkers), or a simulated machine.
        `clock`: what the time budget is counted on (a simulated machine keeps its own).
        `memory_total_bytes`: the device's memory when the caller knows it (else read from the
        probe, or /proc/meminfo on a CPU)."""
        self.calibration = calibration
        self.settings = settings
        self.store = store
        self.emit = on_event or (lambda event: None)
        self._own_worker = worker is None
        self.worker: TrialExecutor = worker or Worker()
        self.clock = clock
        self._memory_total = memory_total_bytes
        self.profile = device_profile
        self.records: list[TrialRecord] = []
        self.notes: list[str] = []
        self.space: SearchSpace  # built by run(); provisional until the baseline seeds fp16's init_scale
        self.memory_limit: int | None = None  # device memory less the margin, read once per run
        self._started = 0.0

    # ------------------------------------------------------------------- the evidence, derived
    @property
    def evidence(self) -> Evidence:
        return Evidence(self.records)

    @property
    def constraints(self) -> Constraints:
        return derive(self.evidence, self.space, memory_limit=self.memory_limit,
                      memory_margin=self.settings.memory_margin,
                      whole_dtype_pruning=self.settings.strategy != "grid",
                      fast={d: v.fast for d, v in self.profile.dtypes.items()}, train_steps=self.settings.train_steps)

    def _elapsed(self) -> float:
        return self.clock() - self._started

    def _out_of_time(self) -> bool:
        return self.settings.time_budget_s is not None and self._elapsed() >= self.settings.time_budget_s

    # ------------------------------------------------------------------------------- one trial
    def _spec(self, candidate: Candidate, *, steps: int | None = None, abandon: bool = True,
              remeasure: bool = False) -> TrialSpec:
        """`remeasure`: a configuration measured before in this run (a confirmation round): one
        warm-up step (its kernels are known to this worker), no numerics (already judged)."""
        evidence = self.evidence
        accum = self.space.grad_accum(candidate.batch_size)
        samples = candidate.batch_size * accum
        warmup = self.settings.warmup_steps
        same_dtype = [r.result.samples_per_s for r in evidence.of_dtype(candidate.dtype)
                      if r.result.status is Status.OK and r.result.samples_per_s]
        if steps is None and same_dtype:
            expected = samples / max(same_dtype)
            # a big batch on a slow device: fewer (long) steps measure as well as many short ones
            aim = CONFIRM_MEASURE_S if remeasure else TRIAL_MEASURE_S
            steps = max(MIN_STEPS, min(self.settings.steps, round(aim / expected)))
            warmup = 1 if expected > 1.0 else warmup
        steps = steps or self.settings.steps
        if remeasure:
            warmup = min(warmup, 1)
        if candidate.dtype is Dtype.FP32 and not remeasure:
            steps = max(steps, COMPARE_STEPS - warmup)  # long enough to be its batch size's fp32 reference
        # Stopped early when the first step takes PRUNE_FACTOR x the step the dtype's own best rate
        # implies (the best rate of any dtype, for a dtype's first trials): a slow dtype is found
        # out by its scout, and a big batch of a fast one is not mistaken for it.
        abandon_after = None
        allows = self.constraints.allows
        best = evidence.best(dtype=candidate.dtype, allowed=allows) or evidence.best(allowed=allows)
        one_time = bool(levers.one_time(candidate.levers))  # its first step holds a compile: never pruned
        if abandon and not one_time and best is not None and (best_score := best.explore_score):
            abandon_after = max(PRUNE_FACTOR * samples / best_score, MIN_ABANDON_S)
        tf32_fast = self.profile.dtypes[Dtype.TF32].fast
        allowance = self.first_step_allowance(samples)
        return TrialSpec(
            first_step_timeout_s=allowance and allowance + levers.first_step_allowance_s(candidate.levers),
            workload=self.settings.workload, dtype=candidate.dtype, batch_size=candidate.batch_size,
            device=self.settings.device, steps=steps, warmup_steps=warmup,
            init_scale=candidate.init_scale or self.space.init_scales[len(self.space.init_scales) // 2],
            growth_interval=candidate.growth_interval or self.space.growth_intervals[-1],
            grad_accum=accum,
            compare_fp32=not remeasure and (candidate.dtype is not Dtype.FP32 or bool(candidate.levers)),
            compare_steps=COMPARE_STEPS, seed=self.settings.seed, timeout_s=self.settings.trial_timeout_s,
            abandon_after_s=abandon_after, tf32=uses_tf32(candidate.dtype, tf32_fast), grad_stats=not remeasure,
            fp32_modules=candidate.fp32_modules, parallel=self.settings.parallel, comm=candidate.comm,
            levers=candidate.levers,
        )

    def first_step_allowance(self, samples: int) -> float | None:
        """How long the model build and first step of a trial at `samples` per step may take,
        from what is known: the calibration and the trials that finished (their whole wall
        time, a generous bound on a first step), scaled to `samples`. None: nothing known yet."""
        known = [(r.result.spec.samples_per_step, r.result.wall_s) for r in self.records
                 if r.result.status is Status.OK and r.result.wall_s]
        if self.calibration is not None:
            known.append(self.calibration)
        if not known:
            return None
        bound = max(seconds * max(1.0, samples / n) for n, seconds in known)
        return max(FIRST_STEP_FLOOR_S, FIRST_STEP_FACTOR * bound)

    def _run(self, candidate: Candidate, role: Role, *, round: int | None = None, **spec_kw: Any) -> TrialRecord:
        """One trial, durable before anything else happens. A fresh worker's first trial runs slow
        (its allocator, caches and kernels are cold: 20-40% here), so a worker that is about to
        start warms up on a short run of the configuration first (Role.WARMUP), and a trial that
        turns out to be the first of a worker nobody expected (it was replaced in between) is
        recorded as its warm-up and measured again: no figure rests on a cold worker. A trial
        stopped early although its dtype ran cleanly before is measured again in full."""
        spec = self._spec(candidate, **spec_kw)
        if role.measures_speed and self._fresh_worker():
            # a short run first (no numerics): the worker warms up on what it is about to measure
            warm = dataclasses.replace(spec, steps=MIN_STEPS, warmup_steps=1, compare_fp32=False, grad_stats=False)
            first = self._trial(candidate, role, warm, round, warmup=True)
            if first.role is not Role.WARMUP:
                return first  # it failed (out of memory, pruned...): that is the configuration's result
        record = self._trial(candidate, role, spec, round)
        if record.role is Role.WARMUP:  # a worker replaced unexpectedly (it crashed in between)
            record = self._trial(candidate, role, spec, round)
        if record.result.status is Status.PRUNED and any(r.feasible and r.role.measures_speed
                                                         for r in self.evidence.of_dtype(candidate.dtype)):
            # the dtype runs cleanly elsewhere: a first step this slow was the machine stalling
            # (or a big batch's one-time costs), not a hopeless configuration; measured in full
            record = self._run(candidate, role, round=round, **{**spec_kw, "abandon": False})
        return record

    def _fresh_worker(self) -> bool:
        """Whether the next trial starts a worker process: the run's first, or the one after a
        trial that killed its worker (stopped early, hung, crashed)."""
        last = self.records[-1] if self.records else None
        return last is None or last.result.status in (Status.PRUNED, Status.TIMEOUT, Status.CRASH)

    def _trial(self, candidate: Candidate, role: Role, spec: TrialSpec, round: int | None,
               warmup: bool = False) -> TrialRecord:
        number = len(self.records) + 1
        shown = Role.WARMUP if warmup else role
        self.emit({"event": "trial_start", "number": number, "label": candidate.label, "role": shown.value})
        load = _load_average()
        result = self.worker.run(spec)
        if result.bad_input and role is not Role.REPAIR:
            raise BadInputError(result.error or "the workload broke the contract")
        # a repair built from the X-ray's advice that cannot be applied (an island no module
        # matches) is that repair's failure, recorded; fp32 and the other dtypes still stand
        feasible, why_not = judge(result, self.settings.tolerance, self.settings.max_skip_rate)
        pids = {r.result.worker_pid for r in self.records}
        fresh = result.worker_pid is not None and result.worker_pid not in pids
        if feasible and role.measures_speed and (warmup or fresh):
            role = Role.WARMUP
        record = TrialRecord(number, role, candidate, result, feasible, why_not, round, load)
        self.store.append(record)  # durable before anything else happens
        self.records.append(record)
        best = self.evidence.best(confirmed=True) or self.evidence.best()
        self.emit({"event": "trial_end", "number": number, "label": candidate.label, "role": role.value,
                   "status": result.status.value, "samples_per_s": result.samples_per_s, "feasible": feasible,
                   "why_not": why_not, "best": (best.candidate.label, best.score) if best else None,
                   "peak_memory_bytes": result.peak_memory_bytes, "wall_s": result.wall_s})
        return record

    def _phase(self, name: str, planned: int) -> None:
        self.emit({"event": "tune_phase", "phase": name, "planned": planned, "budget_s": self.settings.time_budget_s})

    # --------------------------------------------------------------------------------- the run
    def run(self) -> TuneResult:
        from ..hardware import probe

        self._started = self.clock()
        self.worker.spawn()  # boots (imports torch) while the probe runs here
        try:
            if self.profile is None:
                self.profile = probe(self.settings.device).devices[0]
            self.memory_limit = self._read_memory_limit()
            self.store.write_device(self.profile)
            self.store.record_context(memory_limit_bytes=self.memory_limit, memory_margin=self.settings.memory_margin)
            self.records = list(self.store.records())
            self.space, space_notes = build_space(self.profile, **space_options(self.settings, self.worker.world_size))
            self.notes += space_notes
            self._seed_init_scale(self._baseline())
            stopped = self._search()
            self._finish_climb()
            self._recheck()
            self._edge()
            self._levers()
            self._repair()
            self._confirm()
            decision = decide(self.evidence, self.constraints, self.settings.margin)
            recommendation = self._choose(decision)
        finally:
            if self._own_worker:
                self.worker.close()
        return TuneResult(self.store.dir, recommendation, self.records, self.space, self.notes, stopped,
                          self._elapsed(), decision)

    def _read_memory_limit(self) -> int | None:
        total = self._memory_total or getattr(self.profile.identity, "memory_total_bytes", None)
        if self.profile.kind == "cpu" and self._memory_total is None:
            total = memory_available_bytes()
        return int(total * (1 - self.settings.memory_margin)) if total else None

    # ------------------------------------------------------------------------------- baseline
    def _baseline(self) -> TrialRecord | None:
        """fp32 at the middle batch size (smaller ones if that fails)."""
        for record in self.records:
            if (record.role is Role.SEARCH and record.candidate.dtype is Dtype.FP32
                    and record.result.status is Status.OK):
                return record
        self._phase("baseline", 1)
        for bs in [b for b in reversed(self.space.batch_sizes) if b <= self.space.baseline_batch]:
            if self._out_of_time():
                return None
            record = self._run(self.space.point(Dtype.FP32, bs), Role.SEARCH)
            if record.result.status is Status.OK:
                return record
        return None

    def _seed_init_scale(self, baseline: TrialRecord | None) -> None:
        stats = baseline.result.grad_stats if baseline else None
        max_abs = stats.max_abs if stats else None
        seed = seeded_init_scale(max_abs)
        if max_abs:
            self.notes.append(f"fp16 init_scale seeded at 2^{math.log2(seed):g}: the largest fp32 gradient is "
                              f"{max_abs:.3g}, times the scale kept 8x under fp16's maximum")
        self.space = self.space.with_init_scale_seed(seed)
        self.store.record_context(space=self.space.to_dict(), init_scale_seed=seed)

    # --------------------------------------------------------------------------------- search
    def search_limit(self) -> int:
        """Search trials (the baseline, scouts, climbs and the strategy's): --max-trials, or with
        the Bayesian strategy SEARCH_SHARE of the points that change speed (at least
        MIN_SEARCH_TRIALS), or every one of them (grid)."""
        n = len(self.space.candidates())
        if self.settings.max_trials:
            return self.settings.max_trials
        if self.settings.strategy == "grid":
            return n
        return min(n, max(MIN_SEARCH_TRIALS, math.ceil(SEARCH_SHARE * n)))

    def _searched(self) -> int:
        return len(self.evidence.of_role(Role.SEARCH)) + len(self.evidence.of_role(Role.REFINE))

    def _search(self) -> str:
        """The plan (plan.py: scouts like with like, each contending dtype climbed toward its best
        batch), then the strategy for what budget is left; with --strategy grid, every point."""
        limit = self.search_limit()
        self._phase("search", max(0, limit - self._searched()))
        fast = {d: v.fast for d, v in self.profile.dtypes.items()}
        order = plan.scout_order(self.space, fast, {d: self.profile.peak_tflops(d) for d in self.space.dtypes})
        strategy: SearchStrategy | None = None
        repeated = 0
        while True:
            evidence, constraints = self.evidence, self.constraints
            if self._searched() >= limit:
                return f"reached {limit} search trials"
            if self._out_of_time():
                return f"time budget of {self.settings.time_budget_s:g} s used"
            if all(evidence.measured(c) or not constraints.allows(c) for c in self.space.candidates()):
                return "every candidate was measured or ruled out"
            step = None if self.settings.strategy == "grid" else plan.next_step(
                evidence, constraints, self.space, order, fast, gpu=self.profile.kind in ("cuda", "rocm"),
                memory_limit=self.memory_limit)
            if step is not None:
                self._run(step.candidate, step.role, abandon=step.role is not Role.RECHECK)
                continue
            strategy = strategy or self._strategy()
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
            strategy.tell(candidate, self._run(candidate, Role.SEARCH).score)

    def _strategy(self) -> SearchStrategy:
        """The strategy, told every point explored so far (the plan's included)."""
        strategy = make_strategy(self.settings.strategy, self.space, self.settings.seed)
        points = set(self.space.candidates())
        for config in self.evidence.configs.values():
            if config.explore_records and config.candidate in points:
                strategy.tell(config.candidate, config.explore_score)
        return strategy

    # --------------------------------------------------------------------------------- finish
    def _finish_climb(self) -> None:
        """The leader's climb toward larger batches, finished past the search budget (at most
        FINISH_TRIALS): a recommendation at the top of what was measured, still rising, is where the
        budget ran out, not where the speed peaked."""
        for _ in range(FINISH_TRIALS):
            if self._out_of_time():
                return
            lead = self.evidence.best(allowed=self.constraints.allows)
            step = plan.climb(self.evidence, self.constraints, self.space, lead) if lead else None
            if lead is None or step is None or step.batch_size < lead.candidate.batch_size:
                return
            self._phase("finish", 1)
            self._run(step, Role.REFINE)

    # -------------------------------------------------------------------------------- recheck
    def _recheck(self) -> None:
        suspects = plan.inconsistent(self.evidence)
        if suspects:
            self._phase("recheck", len(suspects))
        for candidate in suspects:
            if self._out_of_time():
                return
            self._run(candidate, Role.RECHECK, abandon=False)

    # ----------------------------------------------------------------------------------- edge
    def _edge(self) -> None:
        """Between the largest batch that ran and the smallest that failed, for the leading dtype,
        when the leader sits at that edge (otherwise a bigger batch would not help)."""
        evidence = self.evidence
        best = evidence.best(allowed=self.constraints.allows)
        if best is None:
            return
        dtype = best.candidate.dtype
        ok = [r.candidate.batch_size for r in evidence.of_dtype(dtype) if r.result.status is Status.OK]
        failed = [r.candidate.batch_size for r in evidence.of_dtype(dtype) if r.result.status.is_resource_failure]
        if not ok or not failed or best.candidate.batch_size != max(ok):
            return
        low, high = max(ok), min(failed)
        for _ in range(2):
            middle = self.space.between(low, high)
            if middle is None or self._out_of_time():
                return
            edge = dataclasses.replace(best.candidate, batch_size=middle, fp32_modules=())
            measured = evidence.config(edge)
            if measured is not None:
                status = measured.records[0].result.status
            else:
                self._phase("edge", 1)
                status = self._run(edge, Role.BISECT).result.status
            if status is Status.OK:
                low = middle
            else:
                high = middle

    # -------------------------------------------------------------------------------- levers
    def _levers(self) -> None:
        """The levers explored on the leaders (plan.lever_trials), until none is left to try."""
        for _ in range(MAX_LEVER_TRIALS):
            todo = plan.lever_trials(self.evidence, self.constraints, self.space)
            if not todo or self._out_of_time():
                return
            self._phase("levers", len(todo))
            self._run(todo[0].candidate, todo[0].role, abandon=False)

    # -------------------------------------------------------------------------------- confirm
    def confirmation_pool(self) -> list[Candidate]:
        """The contenders (decision.contenders), and fp32 at the leader's batch size so far, so
        that the decision's comparisons (the leader vs the best fp32, and vs fp32 at its own
        batch) are usually made within the same rounds. When the leading dtype has a runner-up
        the leader is open, and the twin waits for it (rounds of its own, after)."""
        evidence, constraints = self.evidence, self.constraints
        pool = contenders(evidence, constraints)
        open_leader = len({c.dtype for c in pool}) < len(pool)
        if pool and not open_leader and pool[0].dtype is not Dtype.FP32 and constraints.allows(pool[0].fp32_twin):
            pool.append(pool[0].fp32_twin)
        if pool and pool[0].levers and evidence.measured(pool[0].plain):
            pool.append(pool[0].plain)  # a lever's gain is judged against its plain configuration, in the same rounds
        return list(dict.fromkeys(pool))

    def _rounds(self, pool: list[Candidate], first_round: int, rounds: int) -> None:
        """Interleaved rounds, alternating the order by the round's number (ABBA) so that a steady
        drift cancels."""
        done = {(r.candidate.canonical(), r.round) for r in self.records if r.role is Role.CONFIRM}
        todo = [(c, k) for k in range(first_round, first_round + rounds)
                for c in (pool if k % 2 == 1 else pool[::-1]) if (c.canonical(), k) not in done]
        if todo:
            self._phase("confirm", len(todo))
        for candidate, k in todo:
            if self._out_of_time():
                self.notes.append("the time budget ended the confirmation rounds early")
                return
            # numerics were judged when the configuration was explored; a round measures speed
            self._run(candidate, Role.CONFIRM, round=k, abandon=False, remeasure=True)

    def _last_round(self) -> int:
        return max((r.round for r in self.records if r.round is not None), default=0)

    def _confirm(self) -> None:
        pool = self.confirmation_pool()
        if len(pool) < 2:
            return  # one configuration in contention: nothing to compare it with
        self._rounds(pool, 1, CONFIRM_ROUNDS)
        # A close call (decision.close_group: configurations the rounds have not separated from the
        # leader) gets more rounds of that group alone, with the leader's fp32 twin, up to
        # MAX_CONFIRM_ROUNDS: a batch size 7% better is lost in two rounds of a machine whose trials
        # spread by 8%, and found in more; the contenders far behind spend no more trials.
        while (self._last_round() < MAX_CONFIRM_ROUNDS and not self._out_of_time()
               and len(group := close_group(self.evidence, self.constraints)) > 1):
            if twin_wanted(self.evidence, self.constraints, group[0]):
                group = list(dict.fromkeys([*group, group[0].fp32_twin]))
            self._rounds(group, self._last_round() + 1, 1)
        # The twins the decision needs, now that the leader is known: those not yet measured in a
        # round beside it get rounds of their own, with the leader.
        evidence = self.evidence
        wanted = needed_twins(evidence, self.constraints)
        missing = [c for c in wanted[1:] if paired(evidence, wanted[0], c) is None]
        if missing:
            self._rounds([wanted[0], *missing], self._last_round() + 1, TWIN_ROUNDS)

    # -------------------------------------------------------------------------------- repair
    def _repair(self) -> None:
        """A reduced precision none of whose trials kept fp32's numerics (inf/NaN, too many skipped
        steps, a loss outside the tolerance): X-ray its first failed configuration once
        (diagnosis.py), save the diagnosis for the report, and measure that configuration again
        with the fp32 islands the X-ray advises, like any other configuration. (When some of its
        configurations ran cleanly, the failures are the scaler settings' or the batch's, not a
        module's.)"""
        saved = {d.dtype: d for d in self.store.diagnoses()}  # a resumed run diagnosed some already
        for dtype in self.space.dtypes:
            records = self.evidence.of_dtype(dtype)
            failed = [r for r in records if r.role.explores and not r.feasible
                      and r.result.status in (Status.OK, Status.NONFINITE) and not r.candidate.fp32_modules]
            if not dtype.autocasts or not failed or any(r.feasible or r.candidate.fp32_modules for r in records):
                continue  # nothing to repair, a clean configuration, or repaired already (a resumed run)
            if self._out_of_time():
                self.notes.append("the time budget left no time to diagnose the numerics failures")
                return
            first = failed[0]
            self._phase("repair", 1)
            spec = DiagnoseSpec(self.settings.workload, dtype, first.candidate.batch_size, self.settings.device,
                                steps=DIAGNOSE_STEPS, seed=self.settings.seed,
                                init_scale=first.result.spec.init_scale,
                                growth_interval=first.result.spec.growth_interval)
            diagnosis = saved.get(dtype)
            if diagnosis is None:
                self.emit({"event": "diagnose_start", "dtype": dtype.value, "trial": first.number})
                try:
                    diagnosis = self.worker.diagnose(spec)
                except (DiagnoseError, BadInputError) as exc:
                    self.notes.append(f"{dtype} failed on numerics (trial {first.number}); its diagnosis did not "
                                      f"finish: {exc}")
                    continue
                self.store.write_diagnosis(diagnosis)
            islands = diagnosis.advised_islands()
            if not islands:
                self.notes.append(f"{dtype} failed on numerics (trial {first.number}: {first.why_not}); the "
                                  "X-ray found no module to keep in fp32")
                continue
            repaired = dataclasses.replace(first.candidate, fp32_modules=islands)
            self.notes.append(f"{dtype} failed on numerics (trial {first.number}: {first.why_not}); the X-ray "
                              f"advises keeping {', '.join(islands)} in fp32 ({diagnosis.culprits()[0].evidence}); "
                              f"measured as {repaired.label}")
            self._run(repaired, Role.REPAIR)

    def _islands_cost(self, chosen: Candidate) -> str:
        """What the chosen configuration's fp32 islands cost: against the same configuration
        without them, when that one ran long enough to be timed."""
        plain = dataclasses.replace(chosen, fp32_modules=())
        without = [r.result.samples_per_s for r in self.evidence.of_dtype(chosen.dtype)
                   if r.candidate.canonical() == plain.canonical() and r.result.samples_per_s]
        with_ = self.evidence.configs[chosen.canonical()].score
        text = f"{', '.join(chosen.fp32_modules)} kept in fp32 (the X-ray's advice: without them {chosen.dtype} " \
               "failed on numerics)"
        if without and with_:
            text += f"; the islands cost {1 - with_ / max(without):.1%} of the speed measured without them"
        return text

    # -------------------------------------------------------------------------------- choose
    def _choose(self, decision: Decision) -> Recommendation | None:
        self.notes += list(decision.notes)
        if decision.chosen is None:
            return None
        chosen = decision.chosen.candidate
        why = explain(decision, self.evidence, self.constraints, self.space.dtypes, self.profile.dtypes)
        scaler = GradScalerConfig(enabled=False)
        if chosen.dtype.needs_grad_scaler:
            scaler, stability_note = self._stability(chosen)
            why += "; " + stability_note
        if chosen.fp32_modules:
            why += "; " + self._islands_cost(chosen)
        why += self._levers_note(chosen)
        busy = machine_busy(self.evidence, os.cpu_count() if self.profile.kind == "cpu" else None)
        if busy:
            self.notes.append(busy)
        return self._recommendation(decision, decision.chosen, scaler, why, busy)

    def _levers_note(self, chosen: Candidate) -> str:
        """What the levers tried say: the chosen one's cost and break-even, or why none was chosen."""
        notes = []
        if (costs := self.evidence.break_even(chosen)) is not None:
            cost, saved, steps = costs
            notes.append(f"{levers.label(levers.one_time(chosen.levers))}: {cost:.1f} s once (cold cache), saves "
                         f"{saved * 1e3:.1f} ms a step: pays for itself after {steps or math.inf:,.0f} of the planned "
                         f"{self.settings.train_steps:,} steps")
        tried = [c for c in self.evidence.configs if c.levers and c.plain == chosen.plain and c != chosen.canonical()]
        notes += [f"{c.label}: {why}" for c in tried if (why := self.constraints.reason(c))]
        return "".join(f"; {note}" for note in notes)

    def _stability(self, candidate: Candidate) -> tuple[GradScalerConfig, str]:
        """A longer fp16 run at the chosen scaler settings; lower the scale once if it skips too often."""
        scale = candidate.init_scale
        for _attempt in range(2):
            c = dataclasses.replace(candidate, init_scale=scale, fp32_modules=())
            existing = [r for r in self.records if r.role is Role.STABILITY and r.candidate == c]
            self._phase("stability", 0 if existing else 1)
            record = existing[0] if existing else self._run(c, Role.STABILITY, steps=self.settings.stability_steps,
                                                            abandon=False)
            res = record.result
            skipped = res.skipped_steps or 0
            underflow = res.grad_stats.underflow_fraction if res.grad_stats else 0.0
            if res.status is Status.OK and skipped / max(len(res.losses), 1) <= self.settings.max_skip_rate:
                return (GradScalerConfig(True, scale, growth_interval=candidate.growth_interval),
                        f"fp16 stability run (trial {record.number}): {skipped} of {len(res.losses)} steps skipped, "
                        f"{underflow:.3%} of gradient elements underflow at scale {res.final_loss_scale:g}")
            scale /= 8
        return (GradScalerConfig(True, scale, growth_interval=candidate.growth_interval),
                "fp16 stability run still skipped many steps: watch the scaler's skipped-step count")

    def _recommendation(self, decision: Decision, chosen: Figure, scaler: GradScalerConfig, why: str,
                        busy: str | None) -> Recommendation:
        config = self.evidence.configs[chosen.candidate.canonical()]
        tf32 = any(r.result.tf32 for r in config.records)  # what was measured is what is recommended
        figures = {"recommended": chosen, "fp32_best": decision.fp32_best, "fp32_same_batch": decision.fp32_same_batch}
        costs = self.evidence.break_even(chosen.candidate)
        return Recommendation(
            dtype=chosen.candidate.dtype,
            batch_size=chosen.candidate.batch_size,
            grad_accumulation_steps=self.space.grad_accum(chosen.candidate.batch_size),
            scaler=scaler,
            tf32=tf32,
            device=self.settings.device,
            hardware={**fingerprint_of(self.profile), "torch": _torch_version()},
            measured=Measured(samples_per_s=chosen.samples_per_s, speedup_vs_fp32=decision.speedup_vs_fp32,
                              peak_memory_bytes=config.peak_memory_bytes,
                              speedup_vs_best_fp32=decision.speedup_vs_best_fp32,
                              one_time_s=config.one_time_s, one_time_warm_s=config.one_time_warm_s,
                              break_even_steps=math.ceil(costs[2]) if costs and costs[2] else None,
                              train_steps=self.settings.train_steps if costs else None),
            why=why,
            workload=self.settings.workload,
            created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            notes=tuple(self.notes),
            evidence={"confirmed": decision.confirmed,
                      **{k: (f.to_dict() if f is not None else None) for k, f in figures.items()}},
            machine_busy=busy,
            fp32_modules=chosen.candidate.fp32_modules,
            distributed=self._distributed(chosen.candidate),
            levers=dict(chosen.candidate.levers),
        )

    def _distributed(self, chosen: Candidate) -> Distributed | None:
        if not self.settings.parallel:
            return None
        return Distributed.of(self.settings.parallel, self.space.world_size, backend_for(self.settings.device),
                              chosen.comm, chosen.dtype, chosen.batch_size, self.space.grad_accum(chosen.batch_size))


def space_options(settings: TuneSettings, world_size: int = 1) -> dict[str, Any]:
    """build_space's options for a run's settings (on `world_size` ranks under --parallel)."""
    parallel = Parallel.parse(settings.parallel) if settings.parallel else None
    return {"batch_sizes": settings.batch_sizes, "global_batch": settings.global_batch, "parallel": parallel,
            "world_size": world_size if parallel else 1, "backend": backend_for(settings.device),
            "skip_levers": settings.skip_levers}


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return None


def _torch_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return None
