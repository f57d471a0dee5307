"""A tune's settings: what the user asked for, checked on the way in (finite, in range, whole
numbers where counts), and as saved in run.json (checked against these fields on reading)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .. import levers
from ..distributed.policy import DEFAULT_COLLECTIVE_TIMEOUT_S, Parallel
from ..errors import BadInputError
from ..jsonio import check_fields
from ..limits import MAX_STEPS, MAX_TIME_BUDGET_S, MAX_TRIAL_TIMEOUT_S, MAX_TRIALS, out_of_range
from .decision import NOT_WORSE_MARGIN

# The command-line flag of each setting (for messages), and the settings a --resume may change.
FLAGS = {"workload": "MODEL", "device": "--device", "strategy": "--strategy", "seed": "--seed",
         "max_trials": "--max-trials", "time_budget_s": "--time-budget", "trial_timeout_s": "--timeout",
         "tolerance": "--tolerance", "steps": "--steps", "batch_sizes": "--batch-sizes",
         "global_batch": "--global-batch", "parallel": "--parallel", "collective_timeout_s": "--collective-timeout",
         "train_steps": "--train-steps", "skip_levers": "--skip-lever"}
RESUMABLE = ("time_budget_s", "max_trials", "trial_timeout_s")
# The planned run a one-time cost (a compile) is weighed against: optimizer steps. A short
# fine-tune; a longer run pays a compile off sooner, and --train-steps says so.
DEFAULT_TRAIN_STEPS = 5000
MAX_TRAIN_STEPS = 10**9
# Sane ranges: a typo (1e9 seconds, a million steps) must not lock the machine for days.
LIMITS = {"max_trials": (0, MAX_TRIALS), "time_budget_s": (0, MAX_TIME_BUDGET_S),
          "trial_timeout_s": (0, MAX_TRIAL_TIMEOUT_S), "steps": (0, MAX_STEPS), "tolerance": (0, 10.0),
          "max_skip_rate": (0, 1.0), "memory_margin": (0, 0.9), "margin": (0, 1.0), "warmup_steps": (0, MAX_STEPS),
          "stability_steps": (0, MAX_STEPS), "train_steps": (0, MAX_TRAIN_STEPS)}
CLOSED_BELOW = ("memory_margin", "margin", "warmup_steps", "max_skip_rate")  # 0 is a valid setting of these
INTEGERS = ("max_trials", "steps", "warmup_steps", "stability_steps", "train_steps")

LIMIT_WHY = {"time_budget_s": "at most a week", "trial_timeout_s": "at most a day per trial"}


@dataclass(frozen=True)
class TuneSettings:
    workload: str
    device: str
    strategy: str = "bayes"
    seed: int = 0
    max_trials: int | None = None  # search trials; None: grid = all candidates, bayes = SEARCH_SHARE of them
    time_budget_s: float | None = 900.0
    trial_timeout_s: float | None = None
    tolerance: float = 0.05  # relative loss difference vs fp32 over the compared steps
    max_skip_rate: float = 0.2  # fp16: skipped optimizer steps / steps
    steps: int = 8  # measured steps per trial at most (fewer for long steps)
    warmup_steps: int = 2
    batch_sizes: tuple[int, ...] | None = None
    global_batch: int | None = None
    memory_margin: float = 0.10
    margin: float = NOT_WORSE_MARGIN  # reduced precision must beat the best fp32 by more than this
    stability_steps: int = 40
    parallel: str | None = None  # under torchrun: ddp or fsdp2 (distributed/)
    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    train_steps: int = DEFAULT_TRAIN_STEPS  # the planned run: what a lever's one-time cost is weighed against
    skip_levers: tuple[str, ...] = ()  # levers (amp_advisor.levers) not to try: --skip-lever compile

    def __post_init__(self) -> None:
        if self.strategy not in ("bayes", "grid"):
            raise BadInputError(f"--strategy {self.strategy!r}: expected bayes or grid")
        if self.parallel is not None:
            Parallel.parse(self.parallel)
        for name in self.skip_levers:
            levers.get(name)  # a BadInputError naming the known levers
        if not 0 < self.collective_timeout_s <= MAX_TRIAL_TIMEOUT_S:
            raise BadInputError(f"--collective-timeout {self.collective_timeout_s!r}: expected seconds > 0 and "
                                f"<= {MAX_TRIAL_TIMEOUT_S:g}")
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            why = out_of_range(value, low, high, low_open=name not in CLOSED_BELOW)
            if why or (name in INTEGERS and not isinstance(value, int)):
                raise BadInputError(f"{FLAGS.get(name, name)} {value!r}: {why or 'expected a whole number'}"
                                    + (f" ({LIMIT_WHY[name]})" if name in LIMIT_WHY else ""))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["batch_sizes"] = list(self.batch_sizes) if self.batch_sizes else None
        out["skip_levers"] = list(self.skip_levers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneSettings:
        data = {k: v for k, v in data.items() if k != "confirm_top"}  # runs written before the rounds rebuild
        try:
            check_fields(cls, data, "settings")
            if data.get("batch_sizes"):
                data["batch_sizes"] = tuple(data["batch_sizes"])
            data["skip_levers"] = tuple(data.get("skip_levers") or ())
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"run.json: not a run's settings ({exc})") from None
