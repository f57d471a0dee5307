"""The tuning loop, in phases: baseline -> search -> finish -> recheck -> edge -> levers -> repair ->
confirm -> stability -> choose. Each phase (phases.py) asks a pure function of the records what to
measure next: the search's plan (plan.py), the later phases' (refine.py), the decision rules
(decision.py), over the Evidence (evidence.py) and the Constraints (constraints.py); the runner
(runner.py) runs each trial and records it; conclude.py turns the decision into the
recommendation. Nothing is replayed: each question is answered from the records as they are.

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
- levers: the levers too costly to search everywhere (a compile), tried on the leaders;
- repair: a reduced precision that failed on numerics everywhere, X-rayed and measured with islands;
- confirm: the contenders (decision.contenders) in interleaved rounds, a close call
  (decision.close_group) in rounds of its own with the leader's fp32 twin, and the twins the
  leader did not meet in rounds of their own;
- stability: a chosen fp16 configuration runs longer, judged on skipped steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..distributed.policy import Parallel, backend_for
from ..harness.executor import TrialExecutor
from ..harness.memory import memory_available_bytes
from ..harness.worker import Worker
from ..recommendation import GradScalerConfig, Recommendation
from . import conclude, phases
from .conclude import TuneResult
from .decision import Decision, decide, machine_busy
from .record import TrialRecord
from .runner import EventFn, TrialRunner
from .settings import TuneSettings
from .space import build_space
from .store import RunStore

__all__ = ["Tuner", "TuneResult", "TuneSettings", "space_options"]


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
        self.settings = settings
        self.store = store
        self._own_worker = worker is None
        self.worker: TrialExecutor = worker or Worker()
        self.trials = TrialRunner(settings, store, self.worker, on_event or (lambda event: None), calibration,
                                  clock)
        self.trials.profile = device_profile
        self._memory_total = memory_total_bytes

    @property
    def records(self) -> list[TrialRecord]:
        return self.trials.records

    @property
    def notes(self) -> list[str]:
        return self.trials.notes

    def run(self) -> TuneResult:
        """Every phase in order (the module docstring), then the decision and the recommendation."""
        from ..hardware import probe  # heavy (torch, NVML): only when the caller brought no profile

        trials = self.trials
        trials.started = trials.clock()
        self.worker.spawn()  # boots (imports torch) while the probe runs here
        try:
            trials.profile = trials.profile or probe(self.settings.device).devices[0]
            trials.memory_limit = self._read_memory_limit()
            self.store.write_device(trials.profile)
            self.store.record_context(memory_limit_bytes=trials.memory_limit,
                                      memory_margin=self.settings.memory_margin)
            trials.records = list(self.store.records())
            trials.space, space_notes = build_space(trials.profile,
                                                    **space_options(self.settings, self.worker.world_size))
            trials.notes += space_notes
            phases.seed_init_scale(trials, phases.baseline(trials))
            stopped = phases.search(trials)
            for phase in (phases.finish, phases.recheck, phases.edge, phases.lever_trials, phases.repair,
                          phases.confirm):
                phase(trials)
            decision = decide(trials.evidence, trials.constraints, self.settings.margin)
            recommendation = self._choose(decision)
        finally:
            if self._own_worker:
                self.worker.close()
        return TuneResult(self.store.dir, recommendation, self.records, trials.space, self.notes, stopped,
                          trials.elapsed(), decision)

    def _read_memory_limit(self) -> int | None:
        profile = self.trials.profile
        total = self._memory_total or getattr(profile.identity, "memory_total_bytes", None)
        if profile.kind == "cpu" and self._memory_total is None:
            total = memory_available_bytes()
        return int(total * (1 - self.settings.memory_margin)) if total else None

    def _choose(self, decision: Decision) -> Recommendation | None:
        """The decision's configuration, its fp16 stability run where it has a scaler, and why."""
        trials = self.trials
        trials.notes += list(decision.notes)
        if decision.chosen is None:
            return None
        chosen = decision.chosen.candidate
        scaler, stability_note = GradScalerConfig(enabled=False), None
        if chosen.dtype.needs_grad_scaler:
            scaler, stability_note = phases.stability(trials, chosen)
        why = conclude.why(decision, trials.evidence, trials.constraints, trials.space, trials.profile,
                           self.settings.train_steps, stability_note)
        busy = machine_busy(trials.evidence, os.cpu_count() if trials.profile.kind == "cpu" else None)
        if busy:
            trials.notes.append(busy)
        return conclude.recommendation(decision, trials.evidence, trials.space, self.settings, trials.profile,
                                       scaler, why, busy, trials.notes)


def space_options(settings: TuneSettings, world_size: int = 1) -> dict[str, Any]:
    """build_space's options for a run's settings (on `world_size` ranks under --parallel)."""
    parallel = Parallel.parse(settings.parallel) if settings.parallel else None
    return {"batch_sizes": settings.batch_sizes, "global_batch": settings.global_batch, "parallel": parallel,
            "world_size": world_size if parallel else 1, "backend": backend_for(settings.device),
            "skip_levers": settings.skip_levers}
