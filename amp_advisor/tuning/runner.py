"""One trial at a time: its spec from what is known, a warm worker, and a record that is durable
before anything else happens. The tuner (tuner.py) says what to measure; this says how.

- steps: enough for TRIAL_MEASURE_S of measured time at the dtype's best rate so far
  (CONFIRM_MEASURE_S in a confirmation round), at least MIN_STEPS; an fp32 trial runs long enough
  to be its batch size's loss reference (COMPARE_STEPS);
- pruning: a trial whose first step takes PRUNE_FACTOR x the step its dtype's best rate implies is
  stopped early (constraints.py), except where the first step holds a lever's one-time cost;
- the first-step limit: FIRST_STEP_FACTOR x what the calibration or a finished trial took, scaled
  by the samples per step, at least FIRST_STEP_FLOOR_S, plus each lever's allowance: a hang is
  noticed in seconds-to-minutes, not after the worker's 10-minute default;
- a fresh worker's first trial runs slow (allocator, caches and kernels cold: 20-40% here), so a
  worker about to start warms up on a short run of the configuration first (Role.WARMUP).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from .. import levers
from ..dtypes import Dtype, uses_tf32
from ..errors import BadInputError
from ..harness.executor import TrialExecutor
from ..harness.trial import Status, TrialSpec
from .constraints import MIN_ABANDON_S, PRUNE_FACTOR, Constraints, derive
from .evidence import Evidence
from .record import Role, TrialRecord, judge
from .settings import TuneSettings
from .space import Candidate, SearchSpace
from .store import RunStore

TRIAL_MEASURE_S = 2.5  # aim for this much measured time per trial: enough steps, not more
CONFIRM_MEASURE_S = 0.75  # ... per confirmation round: more, shorter rounds average the machine's drift better
MIN_STEPS = 3
COMPARE_STEPS = 6  # loss agreement with fp32 over the first steps: one fp32 curve per batch size serves all
FIRST_STEP_FACTOR = 10.0
FIRST_STEP_FLOOR_S = 30.0

EventFn = Callable[[dict[str, Any]], None]


class TrialRunner:
    """The run's trials so far (`records`), its notes, its clock, and the means to run the next
    trial. `space`, `profile` and `memory_limit` are set by the tuner once the device is probed."""

    def __init__(self, settings: TuneSettings, store: RunStore, worker: TrialExecutor, emit: EventFn,
                 calibration: tuple[int, float] | None, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self.emit = emit
        self.calibration = calibration
        self.clock = clock
        self.started = clock()
        self.records: list[TrialRecord] = []
        self.notes: list[str] = []
        self.space: SearchSpace
        self.profile: Any = None
        self.memory_limit: int | None = None

    @property
    def evidence(self) -> Evidence:
        return Evidence(self.records)

    @property
    def constraints(self) -> Constraints:
        return derive(self.evidence, self.space, memory_limit=self.memory_limit,
                      memory_margin=self.settings.memory_margin,
                      whole_dtype_pruning=self.settings.strategy != "grid",
                      fast={d: v.fast for d, v in self.profile.dtypes.items()}, train_steps=self.settings.train_steps)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def out_of_time(self) -> bool:
        budget = self.settings.time_budget_s
        return budget is not None and self.elapsed() >= budget

    def phase(self, name: str, planned: int) -> None:
        self.emit({"event": "tune_phase", "phase": name, "planned": planned, "budget_s": self.settings.time_budget_s})

    def spec(self, candidate: Candidate, *, steps: int | None = None, abandon: bool = True,
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
        allowance = self.first_step_allowance(samples)
        return TrialSpec(
            first_step_timeout_s=allowance and allowance + levers.first_step_allowance_s(candidate.levers),
            workload=self.settings.workload, dtype=candidate.dtype, batch_size=candidate.batch_size,
            device=self.settings.device, steps=steps, warmup_steps=warmup,
            init_scale=candidate.init_scale or self.space.fp16_scale,
            growth_interval=candidate.growth_interval or self.space.growth_intervals[-1],
            grad_accum=accum,
            compare_fp32=not remeasure and (candidate.dtype is not Dtype.FP32 or bool(candidate.levers)),
            compare_steps=COMPARE_STEPS, seed=self.settings.seed, timeout_s=self.settings.trial_timeout_s,
            abandon_after_s=self._abandon_after(candidate, samples) if abandon else None,
            tf32=uses_tf32(candidate.dtype, self.profile.dtypes[Dtype.TF32].fast), grad_stats=not remeasure,
            parallel=self.settings.parallel, comm=candidate.comm, levers=candidate.levers,
        )

    def _abandon_after(self, candidate: Candidate, samples: int) -> float | None:
        """Stopped early when the first step takes PRUNE_FACTOR x the step the dtype's own best rate
        implies (the best rate of any dtype, for a dtype's first trials): a slow dtype is found out
        by its scout, and a big batch of a fast one is not mistaken for it. Never where the first
        step holds a lever's one-time cost (a compile)."""
        if levers.one_time(candidate.levers):
            return None
        evidence, allows = self.evidence, self.constraints.allows
        best = evidence.best(dtype=candidate.dtype, allowed=allows) or evidence.best(allowed=allows)
        if best is None or not (best_score := best.explore_score):
            return None
        return max(PRUNE_FACTOR * samples / best_score, MIN_ABANDON_S)

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

    def run(self, candidate: Candidate, role: Role, *, round: int | None = None, **spec_kw: Any) -> TrialRecord:
        """One trial, warmed up where its worker is fresh. A trial that turns out to be the first of
        a worker nobody expected (it was replaced in between) is recorded as its warm-up and
        measured again: no figure rests on a cold worker. A trial stopped early although its dtype
        ran cleanly before is measured again in full."""
        spec = self.spec(candidate, **spec_kw)
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
            record = self.run(candidate, role, round=round, **{**spec_kw, "abandon": False})
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


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return None
