"""What a run concludes: the recommendation from the decision and the evidence, with the reasons
it gives (the decision's, the stability run's, the islands' and the levers' costs), and the run's
result. Pure functions: the tuner has run every trial they read."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .. import levers
from ..distributed.policy import backend_for
from ..recommendation import Distributed, GradScalerConfig, Measured, Recommendation, fingerprint_of
from .constraints import Constraints
from .decision import Decision, explain
from .evidence import Evidence
from .record import TrialRecord
from .settings import TuneSettings
from .space import Candidate, SearchSpace


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


def why(decision: Decision, evidence: Evidence, constraints: Constraints, space: SearchSpace, profile: Any,
        train_steps: int, stability_note: str | None) -> str:
    """The recommendation's reasons, in one line: the decision's, then what its extras cost."""
    chosen = decision.candidate
    assert chosen is not None
    text = explain(decision, evidence, constraints, space.dtypes, profile.dtypes)
    if stability_note:
        text += "; " + stability_note
    if chosen.fp32_modules:
        text += "; " + islands_cost(evidence, chosen)
    return text + levers_note(evidence, constraints, chosen, train_steps)


def islands_cost(evidence: Evidence, chosen: Candidate) -> str:
    """What the chosen configuration's fp32 islands cost: against the same configuration
    without them, when that one ran long enough to be timed."""
    plain = chosen.with_islands()
    without = [r.result.samples_per_s for r in evidence.of_dtype(chosen.dtype)
               if r.candidate.canonical() == plain and r.result.samples_per_s]
    with_ = evidence.configs[chosen.canonical()].score
    text = f"{', '.join(chosen.fp32_modules)} kept in fp32 (the X-ray's advice: without them {chosen.dtype} " \
           "failed on numerics)"
    if without and with_:
        text += f"; the islands cost {1 - with_ / max(without):.1%} of the speed measured without them"
    return text


def levers_note(evidence: Evidence, constraints: Constraints, chosen: Candidate, train_steps: int) -> str:
    """What the levers tried say: the chosen one's cost and break-even, or why none was chosen."""
    notes = []
    if (costs := evidence.break_even(chosen)) is not None:
        cost, saved, steps = costs
        notes.append(f"{levers.label(levers.one_time(chosen.levers))}: {cost:.1f} s once (cold cache), saves "
                     f"{saved * 1e3:.1f} ms a step: pays for itself after {steps or math.inf:,.0f} of the planned "
                     f"{train_steps:,} steps")
    tried = [c for c in evidence.configs if c.levers and c.plain == chosen.plain and c != chosen.canonical()]
    notes += [f"{c.label}: {reason}" for c in tried if (reason := constraints.reason(c))]
    return "".join(f"; {note}" for note in notes)


def recommendation(decision: Decision, evidence: Evidence, space: SearchSpace, settings: TuneSettings,
                   profile: Any, scaler: GradScalerConfig, why: str, busy: str | None,
                   notes: list[str]) -> Recommendation:
    chosen = decision.chosen
    assert chosen is not None
    config = evidence.configs[chosen.candidate.canonical()]
    tf32 = any(r.result.tf32 for r in config.records)  # what was measured is what is recommended
    figures = {"recommended": chosen, "fp32_best": decision.fp32_best, "fp32_same_batch": decision.fp32_same_batch}
    costs = evidence.break_even(chosen.candidate)
    c = chosen.candidate
    return Recommendation(
        dtype=c.dtype,
        batch_size=c.batch_size,
        grad_accumulation_steps=space.grad_accum(c.batch_size),
        scaler=scaler,
        tf32=tf32,
        device=settings.device,
        hardware={**fingerprint_of(profile), "torch": _torch_version()},
        measured=Measured(samples_per_s=chosen.samples_per_s, speedup_vs_fp32=decision.speedup_vs_fp32,
                          peak_memory_bytes=config.peak_memory_bytes,
                          speedup_vs_best_fp32=decision.speedup_vs_best_fp32,
                          one_time_s=config.one_time_s, one_time_warm_s=config.one_time_warm_s,
                          break_even_steps=math.ceil(costs[2]) if costs and costs[2] else None,
                          train_steps=settings.train_steps if costs else None),
        why=why,
        workload=settings.workload,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        notes=tuple(notes),
        evidence={"confirmed": decision.confirmed,
                  **{k: (f.to_dict() if f is not None else None) for k, f in figures.items()}},
        machine_busy=busy,
        distributed=_distributed(settings, space, c),
        levers=dict(c.levers),
    )


def _distributed(settings: TuneSettings, space: SearchSpace, chosen: Candidate) -> Distributed | None:
    if not settings.parallel:
        return None
    return Distributed.of(settings.parallel, space.world_size, backend_for(settings.device),
                          chosen.comm, chosen.dtype, chosen.batch_size, space.grad_accum(chosen.batch_size))


def _torch_version() -> str | None:
    try:
        return version("torch")
    except PackageNotFoundError:
        return None
