"""A simulated machine with the worker's interface (amp_advisor.harness.executor.TrialExecutor):
the real Tuner runs on it unchanged, milliseconds per trial, and each TrialSpec is answered from
a landscape, as a worker process on that machine would answer it.

What it does as the real worker does:
- one worker process is reused between trials; a pruned, hung or crashed trial kills it, and the
  next trial starts a fresh one (slow first trial: noise.py), paying the start-up again;
- the first step (after the model build) is stopped at `abandon_after_s` (pruned), or times out
  at `first_step_timeout_s`;
- more memory than the device has is out of memory (a CPU process is killed instead: a crash);
- fp16: the GradScaler skips a step per halving that init_scale x the largest gradient needs to
  fit fp16's range; activations that overflow (Point.nonfinite) make the loss inf whatever the scale;
- the fp32 reference curve of a batch size is computed once per worker process, as the real
  worker caches it;
- the clock: each trial advances it by the wall time the trial would take.
"""

from __future__ import annotations

import math

from amp_advisor.diagnosis import DiagnoseSpec, Diagnosis
from amp_advisor.dtypes import FP16_MAX, Dtype
from amp_advisor.harness.trial import Status, StepTimes, TrialResult, TrialSpec, failed, pruned_reason
from amp_advisor.harness.worker import DiagnoseError
from amp_advisor.numerics import GradStats

from .landscape import Landscape
from .noise import NoiseState

STARTUP_S = 2.0  # a fresh worker imports torch
GPU_STARTUP_S = 4.0  # ... and initialises CUDA


class SimClock:
    """The simulated machine's clock: the tuner's time budget is counted on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SimulatedMachine:
    """Answers TrialSpecs from a landscape (see the module docstring)."""

    world_size = 1

    def __init__(self, landscape: Landscape, seed: int, clock: SimClock | None = None) -> None:
        self.landscape = landscape
        self.noise = NoiseState(landscape.noise, seed)
        self.clock = clock or SimClock()
        self.gpu = not landscape.device.startswith("cpu")
        self.pid = 1000
        self.fresh = True  # the next trial is the first of its worker process
        self.fp32_cached: set[int] = set()  # batch sizes whose fp32 reference this process has
        self.specs: list[TrialSpec] = []

    # ------------------------------------------------------------------------ the interface
    def spawn(self) -> None:
        pass

    def close(self) -> None:
        pass

    def diagnose(self, spec: DiagnoseSpec) -> Diagnosis:
        raise DiagnoseError("the simulated machine has no per-module numerics to X-ray")

    def run(self, spec: TrialSpec) -> TrialResult:
        self.specs.append(spec)
        self.noise.next_trial()
        fresh, pid = self.fresh, self.pid
        self.fresh = False
        wall = (GPU_STARTUP_S if self.gpu else STARTUP_S) if fresh else 0.0
        result = self._trial(spec, fresh)
        wall += result.wall_s or 0.0
        self.clock.now += wall
        if result.status in (Status.PRUNED, Status.TIMEOUT, Status.CRASH):
            self._replace_worker()
        return result.with_updates(wall_s=wall, worker_pid=pid)

    # ---------------------------------------------------------------------------- inside
    def _replace_worker(self) -> None:
        self.pid += 1
        self.fresh = True
        self.fp32_cached = set()

    def _trial(self, spec: TrialSpec, fresh: bool) -> TrialResult:
        land = self.landscape
        dtype, batch = spec.dtype, spec.batch_size
        if dtype not in land.dtypes:
            return failed(spec, Status.ERROR, f"the landscape has no {dtype}", wall_s=land.build_s)
        point = land.point(dtype, batch)
        samples = spec.samples_per_step
        islands = bool(spec.fp32_modules)
        true_rate = land.true_rate(dtype, batch, islands, tuple(spec.levers))
        _, one_time = land.lever_effect(dtype, batch, tuple(spec.levers))
        rate = true_rate * self.noise.factor(self.clock.now, fresh, point.spread)
        step_s = samples / rate
        first_s = point.first_step_s * spec.grad_accum * (true_rate / rate) + one_time
        build = land.build_s
        if not land.runs(dtype, batch):
            if self.gpu:
                return failed(spec, Status.OOM, "CUDA out of memory. Tried to allocate 2.00 GiB",
                              wall_s=build + first_s / 2, peak_memory_bytes=land.memory_total_bytes)
            return failed(spec, Status.CRASH, "the worker died with SIGKILL (killed from outside: often the "
                          "kernel's out-of-memory killer)", wall_s=build + first_s / 2)
        if spec.abandon_after_s is not None and first_s > spec.abandon_after_s:
            return failed(spec, Status.PRUNED, pruned_reason(None, spec.abandon_after_s),
                          wall_s=build + spec.abandon_after_s)
        if spec.first_step_timeout_s is not None and build + first_s > spec.first_step_timeout_s:
            return failed(spec, Status.TIMEOUT, "stopped: the model build and first training step did not finish "
                          f"within the {spec.first_step_timeout_s:.0f} s allowed", wall_s=spec.first_step_timeout_s)
        steps, warmup = spec.steps, spec.warmup_steps
        wall = build + first_s + max(0, warmup - 1) * step_s + steps * step_s
        if spec.compare_fp32 and batch not in self.fp32_cached:
            fp32_step = samples / land.true_rate(Dtype.FP32, batch) if Dtype.FP32 in land.dtypes else step_s
            wall += (spec.compare_steps or steps + warmup) * fp32_step
            self.fp32_cached.add(batch)
        if spec.grad_stats:
            wall += samples / land.true_rate(Dtype.FP32, batch) if Dtype.FP32 in land.dtypes else step_s
        total = warmup + steps
        curve = tuple(2.0 * (0.97 ** i) for i in range(total))
        losses, skipped, final_scale = self._numerics(spec, point, islands, curve, total)
        compared = min(spec.compare_steps or total, total)
        reference = curve[:compared] if spec.compare_fp32 and dtype is not Dtype.FP32 else ()
        diverged = any(not math.isfinite(v) for v in losses)
        diff = None
        if reference:
            diff = math.inf if diverged else (0.0 if islands else point.loss_rel_diff)
        status = Status.NONFINITE if diverged else Status.OK
        samples_step = tuple(step_s * (1 + 0.01 * ((i % 3) - 1)) for i in range(steps))
        return TrialResult(
            spec=spec, status=status, error="the loss became inf/nan" if diverged else None,
            step_time_s=StepTimes(step_s, 0.02 * step_s, min(samples_step), max(samples_step), samples_step),
            samples_per_s=samples / step_s, peak_memory_bytes=point.peak_memory_bytes,
            memory_method="simulated", skipped_steps=skipped, final_loss_scale=final_scale,
            warmup_losses=losses[:warmup], losses=losses[warmup:], fp32_losses=reference,
            loss_rel_diff_vs_fp32=diff,
            grad_stats=(GradStats(spec.init_scale if dtype is Dtype.FP16 else 1.0, 1000, 0.0, 0.0, 0.0,
                                  self.landscape.max_grad, {0: 1000}) if spec.grad_stats else None),
            wall_s=wall, tf32=spec.tf32_on(self.landscape.device not in ("V100", "T4") and self.gpu),
            one_time_s=one_time if spec.levers and one_time else None,
            one_time_warm_s=one_time / 20 if spec.levers and one_time else None,
        )

    def _numerics(self, spec: TrialSpec, point, islands: bool, curve: tuple[float, ...], total: int):
        """The losses, GradScaler's skipped steps and final scale (fp16)."""
        if point.nonfinite and not islands:
            return tuple(math.nan for _ in curve), (total if spec.dtype is Dtype.FP16 else None), None
        if spec.dtype is not Dtype.FP16:
            return curve, None, None
        scale = spec.init_scale
        skipped = 0
        # each overflowing step is skipped and halves the scale (torch's default backoff)
        while skipped < total and scale * self.landscape.max_grad > FP16_MAX:
            skipped += 1
            scale /= 2
        losses = tuple(curve[0] if i < skipped else curve[i - skipped] for i in range(total))
        return losses, max(0, skipped - spec.warmup_steps), scale  # skips in the warm-up are not the loop's
