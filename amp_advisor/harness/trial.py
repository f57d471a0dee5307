"""TrialSpec (what to measure) and TrialResult (what happened): plain data, JSON both ways.

A failed trial is a result like any other: `status` says how it ended and `error` why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .. import levers as registry
from ..distributed.policy import COMMS, FULL_COMM, Parallel, backend_for, comm_rule, dtype_rule
from ..dtypes import DEFAULT_GROWTH_INTERVAL, DEFAULT_INIT_SCALE, TRAINING_DTYPE_NAMES, Dtype, uses_tf32
from ..errors import BadInputError
from ..jsonio import MaybeFinite, check_fields, nan_for_null
from ..levers.islands import islands_of, with_old_islands
from ..limits import MAX_INIT_SCALE, MAX_TRIAL_TIMEOUT_S, out_of_range
from ..numerics import GradStats

TRIAL_SCHEMA_VERSION = 1


class Status(str, Enum):
    """How a trial ended. A ``str`` enum: JSON holds its value."""

    OK = "ok"
    OOM = "oom"
    TIMEOUT = "timeout"
    CRASH = "crash"  # the worker died (a signal, often the kernel's OOM killer)
    NONFINITE = "nonfinite"  # a loss was inf/nan
    ERROR = "error"  # the user's code raised
    PRUNED = "pruned"  # stopped on purpose: its first step took longer than the caller allowed (tune)

    def __str__(self) -> str:
        return self.value

    @property
    def is_resource_failure(self) -> bool:
        """Failures that grow with the batch: out of memory, a crash (often the OOM killer), a hang."""
        return self in (Status.OOM, Status.CRASH, Status.TIMEOUT)


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


@dataclass(frozen=True)
class TrialSpec:
    workload: str  # absolute path of the model.py
    dtype: Dtype
    batch_size: int
    device: str = "cpu"
    steps: int = 20  # measured optimizer steps
    warmup_steps: int = 3  # untimed steps first: allocator, autotuning, lazy init
    init_scale: float = DEFAULT_INIT_SCALE  # GradScaler, fp16 only (torch's defaults)
    growth_interval: int = DEFAULT_GROWTH_INTERVAL
    grad_accum: int = 1  # micro-batches per optimizer step
    compare_fp32: bool = True  # also train in fp32 from the same weights and batches
    seed: int = 0
    timeout_s: float | None = None  # None: chosen from the measured step time
    # Loss agreement with fp32 over the first N steps (warm-up included); None = every step run.
    # tune compares a fixed number, so one fp32 reference per batch size serves every trial.
    compare_steps: int | None = None
    # The extra fp32 forward/backward for gradient statistics; off for re-measurements (confirmation
    # rounds), whose configuration's numerics were already measured. FLOPs are counted regardless.
    grad_stats: bool = True
    abandon_after_s: float | None = None  # prune if the first step takes longer than this (tune)
    first_step_timeout_s: float | None = None  # model build + first step; None: the worker's default
    # TF32 matmuls for the fp32 parts: None = as dtypes.uses_tf32 says for the device (the worker
    # resolves it and the result records what ran); tf32 always has it on, fp32 never.
    tf32: bool | None = None
    # Under torchrun (distributed/): the model wrapped in DDP or FSDP2 on every rank, its gradients
    # reduced in `comm` (distributed/policy.py); batch_size is per rank. None: one process.
    parallel: str | None = None
    comm: str = ""
    # the levers' values (levers/), defaults left out; installed in stage order on the model
    # (a {name: value} object in JSON; made sorted pairs here)
    levers: tuple[tuple[str, str], ...] | Mapping[str, str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.levers, (Mapping, tuple, list)):
            raise BadInputError(f"spec levers: expected lever names and values, got {type(self.levers).__name__}")
        object.__setattr__(self, "levers", registry.canonical(self.levers))
        problems = registry.problems(dict(self.levers), self.dtype, self.device.split(":")[0])
        if self.parallel is not None:
            try:
                parallel = Parallel(self.parallel)
            except ValueError:
                problems.append(f"parallel {self.parallel!r}: expected one of {', '.join(p.value for p in Parallel)}")
            else:
                allowed = ", ".join(COMMS[parallel])
                if self.comm not in COMMS[parallel]:
                    problems.append(f"comm {self.comm!r}: expected one of {allowed} under {parallel}")
                elif self.device != "auto" and (why := comm_rule(parallel, self.comm, backend_for(self.device))):
                    problems.append(f"--comm {self.comm}: {why}; use fp32 or fp16 here")
                ruled_out = dtype_rule(parallel, self.dtype)
                if ruled_out:
                    problems.append(ruled_out)
        elif self.comm:
            problems.append(f"comm {self.comm!r} needs a parallel strategy (ddp or fsdp2)")
        if not self.dtype.is_training:
            problems.append(f"dtype {self.dtype} is not benchmarked "
                            f"(expected one of {', '.join(TRAINING_DTYPE_NAMES)})")
        if self.dtype is Dtype.FP32 and self.tf32:
            problems.append("fp32 means fp32 matmuls: use dtype tf32 for TF32")
        for name in ("batch_size", "steps", "grad_accum", "growth_interval"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            problems.append(f"warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.compare_steps is not None and self.compare_steps < 1:
            problems.append(f"compare-steps must be >= 1, got {self.compare_steps}")
        for name, high in (("init_scale", MAX_INIT_SCALE), ("timeout_s", MAX_TRIAL_TIMEOUT_S),
                           ("first_step_timeout_s", MAX_TRIAL_TIMEOUT_S), ("abandon_after_s", MAX_TRIAL_TIMEOUT_S)):
            value = getattr(self, name)
            if value is not None and (why := out_of_range(value, 0, high)):
                problems.append(f"{name.removesuffix('_s').replace('_', '-')}: {why}")
        if problems:
            raise BadInputError("; ".join(problems))

    def tf32_on(self, tf32_fast: bool) -> bool:
        """Whether the trial runs with TF32 matmuls: always for tf32, else as asked, else as
        dtypes.uses_tf32 says for a device where TF32 is (or is not) fast."""
        if self.dtype is Dtype.TF32:
            return True
        return self.tf32 if self.tf32 is not None else uses_tf32(self.dtype, tf32_fast)

    @property
    def fp32_modules(self) -> tuple[str, ...]:
        """The fp32 islands the trial runs with (the islands lever)."""
        return islands_of(self.levers)

    @property
    def is_reference(self) -> bool:
        """fp32 everywhere (gradients reduced in fp32 too, under --parallel): its own fp32 reference."""
        return self.dtype is Dtype.FP32 and self.comm in ("", FULL_COMM) and not self.levers

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dtype": self.dtype.value, "levers": dict(self.levers)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        data = dict(data)
        # a resumed run's records from before the islands were a lever hold them in fp32_modules
        levers = with_old_islands(data.get("levers") or {}, data.pop("fp32_modules", None))
        return cls(**{**data, "dtype": Dtype(data["dtype"]), "levers": levers})


@dataclass(frozen=True)
class StepTimes:
    median: float
    iqr: float
    min: float
    max: float
    samples: tuple[float, ...]  # every measured step, seconds


@dataclass(frozen=True)
class RankReport:
    """One rank's side of a distributed trial (distributed/merge.py combines them)."""

    rank: int
    status: Status
    error: str | None = None
    comm_failure: bool = False  # it failed in a collective, waiting for a rank that had stopped
    step_median_s: float | None = None
    step_iqr_s: float | None = None
    peak_memory_bytes: int | None = None
    wall_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))


@dataclass(frozen=True)
class TrialResult:
    spec: TrialSpec
    status: Status
    error: str | None = None
    bad_input: bool = False  # the workload or the request broke the contract: fix the input, not a result
    step_time_s: StepTimes | None = None
    samples_per_s: float | None = None
    loop_overhead_fraction: float | None = None  # timed-loop time outside the steps / step time
    peak_memory_bytes: int | None = None
    memory_method: str | None = None
    flops_per_step: float | None = None  # forward + backward of one optimizer step (all micro-batches), one rank
    tflops: float | None = None
    mfu: float | None = None
    peak_tflops: float | None = None
    skipped_steps: int | None = None  # fp16: optimizer steps GradScaler skipped (inf/nan grads)
    final_loss_scale: float | None = None
    losses: tuple[MaybeFinite, ...] = ()  # per measured step (inf/nan when it diverged)
    warmup_losses: tuple[MaybeFinite, ...] = ()  # per warm-up step (the loss agreement starts at step 0)
    fp32_losses: tuple[MaybeFinite, ...] = ()  # the fp32 reference from step 0, over the steps compared
    loss_rel_diff_vs_fp32: float | None = None
    grad_stats: GradStats | None = None
    warnings: tuple[str, ...] = ()
    wall_s: float | None = None  # the whole trial as seen by the caller
    tf32: bool | None = None  # whether TF32 matmuls were on for the fp32 parts
    worker_pid: int | None = None
    architecture: str | None = None  # the model: its class, or the workload's own description (hf)
    parameters: int | None = None  # the model's parameter count
    # distributed trials (TrialSpec.parallel): this worker's failure came from the process group
    # (another rank stopped); in the merged result, every rank's side and the rank that failed
    comm_failure: bool = False
    ranks: tuple[RankReport, ...] = ()
    failed_rank: int | None = None
    # the one-time cost of the trial's levers (a compile), apart from the step time: the first
    # step less a measured step, cold (a fresh compile cache) and warm (compiled again from it)
    one_time_s: float | None = None
    one_time_warm_s: float | None = None
    lever_stats: Mapping[str, float] = dataclasses.field(default_factory=dict)  # "compile.graph_breaks": 1 ...
    schema_version: int = TRIAL_SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # accept the plain string too

    @property
    def flops_per_sample(self) -> float | None:
        """Training FLOPs (forward + backward) per sample, from the counted step (every rank's
        step and samples in a distributed result)."""
        samples = self.spec.samples_per_step * (len(self.ranks) or 1)
        return self.flops_per_step / samples if self.flops_per_step else None

    @property
    def all_losses(self) -> tuple[float, ...]:
        """Every step's loss from step 0 (warm-up included): what fp32_losses is compared with."""
        return self.warmup_losses + self.losses

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["spec"] = self.spec.to_dict()
        if self.grad_stats is not None:
            out["grad_stats"]["log2_histogram"] = {str(k): v for k, v in self.grad_stats.log2_histogram.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialResult:
        if data.get("schema_version") != TRIAL_SCHEMA_VERSION:
            raise BadInputError(
                f"trial result has schema_version {data.get('schema_version')!r}; expected {TRIAL_SCHEMA_VERSION}"
            )
        check_fields(cls, data, "result")
        fields = dict(data)
        fields["spec"] = TrialSpec.from_dict(data["spec"])
        fields["status"] = Status(data["status"])
        if data.get("step_time_s") is not None:
            st = data["step_time_s"]
            fields["step_time_s"] = StepTimes(**{**st, "samples": tuple(st["samples"])})
        if data.get("grad_stats") is not None:
            gs = dict(data["grad_stats"])
            gs["log2_histogram"] = {int(k): v for k, v in gs["log2_histogram"].items()}
            gs["max_abs"] = nan_for_null([gs["max_abs"]])[0]
            fields["grad_stats"] = GradStats(**gs)
        for name in ("losses", "warmup_losses", "fp32_losses"):
            fields[name] = nan_for_null(data.get(name, ()))
        fields["warnings"] = tuple(data.get("warnings", ()))
        fields["ranks"] = tuple(RankReport(**r) for r in data.get("ranks", ()))  # checked above
        fields["lever_stats"] = {str(k): float(v) for k, v in dict(data.get("lever_stats") or {}).items()}
        return cls(**fields)

    def with_updates(self, **changes: Any) -> TrialResult:
        return dataclasses.replace(self, **changes)


def failed(spec: TrialSpec, status: Status, error: str, **extra: Any) -> TrialResult:
    return TrialResult(spec=spec, status=status, error=error, **extra)


def pruned_reason(first_step_s: float | None, allowed_s: float) -> str:
    took = f"took {first_step_s:.2f} s" if first_step_s is not None else "had not finished"
    return f"stopped early: the first step {took}, over the {allowed_s:.2f} s allowed"
