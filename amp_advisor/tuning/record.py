"""One tune trial as the run records it: why it ran (Role), what it measured (TrialResult), and
whether it kept fp32's numerics (judge). Plain data, JSON both ways."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..harness.trial import Status, TrialResult
from ..jsonio import check_fields
from .space import Candidate


class Role(str, Enum):
    """Why a trial ran. A ``str`` enum: JSON holds its value."""

    SEARCH = "search"  # the fp32 baseline, a dtype's scout, or proposed by the strategy
    REFINE = "refine"  # a climb: the next batch size toward a contending dtype's best (plan.py)
    RECHECK = "recheck"  # re-measured: its throughput did not fit its neighbours' (a slow moment?)
    BISECT = "bisect"  # between the largest batch that ran and the smallest that failed
    CONFIRM = "confirm"  # an interleaved confirmation round: the figures the decision rests on
    STABILITY = "stability"  # the chosen fp16 configuration, run longer, judged on numerics only
    REPAIR = "repair"  # a dtype that failed on numerics, again with the fp32 islands its diagnosis advised
    WARMUP = "warmup"  # the first trial of a fresh worker process: it runs cold, and is measured again

    def __str__(self) -> str:
        return self.value

    @property
    def explores(self) -> bool:
        """Measurements that rank configurations before confirmation."""
        return self in (Role.SEARCH, Role.REFINE, Role.RECHECK, Role.BISECT, Role.REPAIR)

    @property
    def measures_speed(self) -> bool:
        return self not in (Role.STABILITY, Role.WARMUP)


@dataclass(frozen=True)
class TrialRecord:
    number: int  # 1-based, in the order trials ran
    role: Role
    candidate: Candidate
    result: TrialResult
    feasible: bool
    why_not: str | None  # for an infeasible trial: what ruled it out
    round: int | None = None  # the confirmation round (Role.CONFIRM only): compare within a round set
    load: float | None = None  # the machine's 1-minute load average when the trial started

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))

    @property
    def score(self) -> float | None:
        return self.result.samples_per_s if self.feasible else None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "role": self.role.value, "candidate": self.candidate.to_dict(),
                "feasible": self.feasible, "why_not": self.why_not, "round": self.round, "load": self.load,
                "result": self.result.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        check_fields(cls, data, "trial")
        return cls(data["number"], Role(data["role"]), Candidate.from_dict(data["candidate"]),
                   TrialResult.from_dict(data["result"]), data["feasible"], data.get("why_not"),
                   data.get("round"), data.get("load"))


def judge(result: TrialResult, tolerance: float, max_skip_rate: float) -> tuple[bool, str | None]:
    """Feasible = it ran cleanly and kept fp32's numerics."""
    if result.status is not Status.OK:
        return False, f"{result.status}: {result.error}"
    diff = result.loss_rel_diff_vs_fp32
    if diff is not None and diff > tolerance:
        return False, (f"loss differs from fp32 by {diff:.1%} over the first {len(result.fp32_losses)} steps "
                       f"(tolerance {tolerance:.1%})")
    steps = max(len(result.losses), 1)
    if result.skipped_steps is not None and result.skipped_steps / steps > max_skip_rate:
        return False, f"GradScaler skipped {result.skipped_steps} of {len(result.losses)} steps"
    return True, None
