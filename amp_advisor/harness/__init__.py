"""Measure one training configuration truthfully, isolated in a worker process.

    TrialSpec -> Worker (subprocess) -> TrialRunner.run (measure.py) -> TrialResult
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..diagnosis import DEFAULT_STEPS, DiagnoseSpec, Diagnosis
from ..distributed.policy import DEFAULT_COLLECTIVE_TIMEOUT_S, FULL_COMM
from ..dtypes import DEFAULT_GROWTH_INTERVAL, DEFAULT_INIT_SCALE, TRAINING_DTYPE_NAMES, Dtype
from ..errors import BadInputError
from ..hf import HfSpec
from ..workload_source import WorkloadSource
from .trial import TrialResult, TrialSpec
from .worker import Worker

__all__ = ["bench", "diagnose", "resolve_workload", "TrialSpec", "TrialResult", "Worker"]


def resolve_workload(model: str | os.PathLike | WorkloadSource | None, example: str | None = None,
                     hf: HfSpec | None = None) -> WorkloadSource:
    """A model.py path, a module:attr import string, a built-in example name or a Hugging Face
    spec -> where the workload comes from, checked without running any of it."""
    return WorkloadSource.given(model, example, hf)


def _training_dtype(dtype: str | Dtype) -> Dtype:
    dtype = Dtype.parse(dtype) if isinstance(dtype, str) else dtype
    if not dtype.is_training:
        raise BadInputError(f"dtype {dtype} cannot be trained: expected one of {', '.join(TRAINING_DTYPE_NAMES)}")
    return dtype


def diagnose(
    model: str | os.PathLike | WorkloadSource | None = None,
    *,
    example: str | None = None,
    hf: HfSpec | None = None,
    dtype: str | Dtype = "fp16",
    batch_size: int = 8,
    device: str = "auto",
    steps: int = DEFAULT_STEPS,
    init_scale: float = DEFAULT_INIT_SCALE,
    growth_interval: int = DEFAULT_GROWTH_INTERVAL,
    fp32_modules: tuple[str, ...] | list[str] = (),
    seed: int = 0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    worker: Worker | None = None,
) -> Diagnosis:
    """The numerics X-ray: train `steps` steps of `model` at `dtype` with hooks on every module,
    beside an fp32 run of the same weights and batches, and rank the modules that break it
    (`Diagnosis.culprits()`, each with its advice). `fp32_modules`: islands to run with, to check
    that the advice fixes it. A workload that breaks the contract, or an island naming no module,
    raises BadInputError; a model that raises or hangs, DiagnoseError."""
    source = resolve_workload(model, example, hf)
    dtype = _training_dtype(dtype)
    if not dtype.autocasts:
        raise BadInputError(f"diagnose compares a reduced precision with fp32: --dtype fp16 or bf16, not {dtype}")
    own = worker is None
    worker = worker or Worker(on_event=on_event)
    try:
        worker.spawn()
        if device == "auto":
            device = worker.wait_ready()["default_device"]
        spec = DiagnoseSpec(source.ref, dtype, batch_size, device, steps, init_scale, growth_interval, seed,
                            tuple(fp32_modules))
        return worker.diagnose(spec)
    finally:
        if own:
            worker.close()


def bench(
    model: str | os.PathLike | WorkloadSource | None = None,
    *,
    example: str | None = None,
    hf: HfSpec | None = None,
    dtype: str | Dtype = "fp32",
    batch_size: int,
    device: str = "auto",
    steps: int = 20,
    warmup_steps: int = 3,
    init_scale: float = DEFAULT_INIT_SCALE,
    growth_interval: int = DEFAULT_GROWTH_INTERVAL,
    grad_accum: int = 1,
    timeout: float | None = None,
    compare_fp32: bool = True,
    seed: int = 0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    worker: Worker | None = None,
    parallel: str | None = None,
    comm: str = "",
    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S,
) -> TrialResult | None:
    """Train `model` (a model.py path or a module:attr import string; or `example=`, or `hf=` a
    Hugging Face architecture) for `steps` measured steps and report.

    Failures of the model (oom, timeout, crash, nonfinite, error) come back as the result's
    `status`; a workload that breaks the contract, or a dtype the device cannot run, raises
    BadInputError. Pass a `worker` to reuse one process across calls.

    Under torchrun with `parallel=` ("ddp"/"fsdp2", gradients reduced in `comm`): every rank
    trains the trial; rank 0 returns the merged result, the other ranks None.
    """
    from ..distributed.env import rank_env

    rank = rank_env(parallel, "bench")
    source = resolve_workload(model, example, hf)
    dtype = _training_dtype(dtype)
    own = worker is None
    runner: Any = worker  # a Worker, or every rank's (RankWorkers) under torchrun
    if rank is not None and runner is None:
        from ..distributed.ranks import coordinate

        runner = coordinate(rank, device, str(parallel), collective_timeout_s, on_event=on_event)
        if runner is None:
            return None  # a rank other than 0: it measured; rank 0 returns the result
    runner = runner or Worker(on_event=on_event)
    try:
        runner.spawn()  # the worker imports torch while the spec is checked
        if device == "auto":
            device = runner.wait_ready()["default_device"]
        spec = TrialSpec(
            workload=source.ref, dtype=dtype, batch_size=batch_size, device=device, steps=steps,
            warmup_steps=warmup_steps, init_scale=init_scale, growth_interval=growth_interval,
            grad_accum=grad_accum, compare_fp32=compare_fp32, seed=seed, timeout_s=timeout,
            parallel=parallel, comm=comm or (FULL_COMM if parallel else ""),
        )
        result = runner.run(spec)
    finally:
        if own:
            runner.close()
    if result.bad_input:
        raise BadInputError(result.error or "the workload broke the contract")
    return result
