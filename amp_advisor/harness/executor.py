"""What runs trials, as the tuner and the run lifecycle see it: a Protocol, so that one worker
process (worker.Worker), every rank's workers under torchrun (distributed.ranks.RankWorkers) and
a simulated machine (tests/simulator) are interchangeable, and mypy checks that they are."""

from __future__ import annotations

from typing import Any, Protocol

from ..diagnosis import DiagnoseSpec, Diagnosis
from .trial import TrialResult, TrialSpec


class TrialExecutor(Protocol):
    """The tuner's side: start, run one trial (every way it ends is a TrialResult), X-ray one
    configuration, stop."""

    @property
    def world_size(self) -> int:
        """The ranks a trial runs on (1: one process)."""
        ...

    def spawn(self) -> None:
        """Start the executor if it is not running; need not wait for it to be ready."""

    def run(self, spec: TrialSpec) -> TrialResult: ...

    def diagnose(self, spec: DiagnoseSpec) -> Diagnosis:
        """The numerics X-ray; raises worker.DiagnoseError when it cannot finish."""
        ...

    def close(self) -> None: ...


class WorkloadExecutor(TrialExecutor, Protocol):
    """The run lifecycle's side as well: wait for the executor, check the workload's contract in
    it, and time the model build plus one fp32 step (what bounds the trials' first steps)."""

    def wait_ready(self) -> dict[str, Any]: ...

    def check(self, workload: str, timeout_s: float | None = None) -> str | None: ...

    def calibrate(self, workload: str, batch_size: int, device: str) -> float | None: ...
