"""One trial, in this process: real training steps, timed honestly. The worker calls `run_trial`.

Order of work, and why:
1. batches are made once and reused, so the fp32 reference sees exactly the same data;
2. the measured run goes first, so its memory peak is not inflated by the reference run;
3. warm-up steps run outside the clock; each timed step is bracketed by CUDA events on GPUs
   (no host sync added) or perf_counter on the CPU (where a step is synchronous anyway);
4. losses stay on the device until the loop ends, then are read at once;
5. FLOPs and gradient statistics come from one extra fp32 forward/backward, outside the clock
   (FLOPs counted once per batch size);
6. the fp32 reference rebuilds the model under the same seed and trains on the same batches, over
   the first `compare_steps` steps; the curve is remembered per batch size, and an fp32 trial is
   its own reference, so tune trains each fp32 curve about once.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import levers as registry
from .. import tf32
from ..distributed.group import agree, ensure_group, is_comm_failure, rank_device, wrap
from ..distributed.policy import FULL_COMM, Parallel
from ..dtypes import Dtype
from ..errors import BadInputError
from ..numerics import grad_stats, loss_rel_diff
from ..runtime import MixedPrecision
from ..timing import is_noisy, median_iqr, synchronize
from ..workload import Workload, WorkloadError, check_batch, check_loss, load
from .memory import memory_available_bytes, tracker_for
from .oom import is_oom
from .trial import Status, StepTimes, TrialResult, TrialSpec, failed, pruned_reason

HEARTBEAT_S = 1.0
MAX_DISTINCT_BATCHES = 4  # enough to vary the data; few enough to keep memory flat
RANK_SEED_STRIDE = 7919  # rank r's batches come from seed + r x this

Emit = Callable[[dict[str, Any]], None]


class TrainingStep:
    """One optimizer step of the user's training, run the way a recommendation runs it: through
    MixedPrecision (autocast, GradScaler for fp16, accumulation). Matmul precision (fp32 vs TF32)
    is the trial's to set, scoped by tf32.scoped, so the helper gets fp32 for TF32 rather than
    switching TF32 on process-wide."""

    def __init__(self, workload: Workload, model: torch.nn.Module, spec: TrialSpec, dtype: Dtype,
                 device: torch.device, batches: list[Any], comm: str | None = None, plain: bool = False) -> None:
        """Under spec.parallel the model is wrapped (DDP/FSDP2) with its gradients reduced in
        `comm` (default: the spec's; the fp32 reference passes fp32). `plain`: without the spec's
        levers (the fp32 reference is eager fp32)."""
        self.workload, self.spec, self.device, self.batches = workload, spec, device, batches
        self.amp = MixedPrecision(
            dtype if dtype.autocasts else Dtype.FP32, device.type,
            grad_accumulation_steps=spec.grad_accum, init_scale=spec.init_scale,
            growth_interval=spec.growth_interval, levers=() if plain else spec.levers,
        )
        if spec.parallel:
            model = wrap(model, Parallel(spec.parallel), dtype, comm or spec.comm, device)
        # the levers in their stage order (levers.Stage), the islands first (a BadInputError
        # names a module that is not there); a DDP/FSDP2 model reduces its gradients on the last
        # micro-batch of an accumulation only
        self.model = self.amp.prepare(model)
        self.optimizer = workload.build_optimizer(model.parameters())
        self._next_batch = 0
        self._checked = False

    def _batch(self) -> Any:
        batch = self.batches[self._next_batch % len(self.batches)]
        self._next_batch += 1
        return batch

    def __call__(self) -> torch.Tensor:
        for _ in range(self.spec.grad_accum):
            with self.amp.autocast():
                loss = self.workload.loss_fn(self.model, self._batch())
            if not self._checked:
                check_loss(self.workload.label, loss)
                self._checked = True
            self.amp.backward(loss)
            self.amp.step(self.optimizer)  # steps on the last micro-batch
        return loss.detach()


@dataclass
class _Loop:
    times: list[float]
    losses: list[torch.Tensor]
    overhead_fraction: float


def timed_loop(step: TrainingStep, steps: int, after_step: Callable[[int], None] | None = None) -> _Loop:
    """`after_step(i)` runs outside the step's clock (a heartbeat for the parent's watchdog)."""
    device = step.device
    # As timeit (and so torch.utils.benchmark) does: collect now, then keep the cyclic garbage
    # collector out of the timed steps; a model that builds many Python objects per step (the
    # transformer example) otherwise pays for collections at random steps.
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    synchronize(device)
    loop_start = time.perf_counter()
    try:
        times, losses = _run_steps(step, steps, after_step)
    finally:
        if gc_was_enabled:
            gc.enable()
    synchronize(device)
    loop_wall = time.perf_counter() - loop_start
    stepped = sum(times)
    return _Loop(times, losses, max(0.0, loop_wall - stepped) / stepped if stepped > 0 else 0.0)


def _run_steps(step: TrainingStep, steps: int, after_step: Callable[[int], None] | None,
               ) -> tuple[list[float], list[torch.Tensor]]:
    times: list[float] = []
    losses: list[torch.Tensor] = []
    use_events = step.device.type == "cuda"
    if use_events:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for i in range(steps):
        if use_events:
            events[i][0].record()
            losses.append(step())
            events[i][1].record()
        else:
            start = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - start)
        if after_step is not None:
            after_step(i)
    if use_events:
        synchronize(step.device)
        times = [start.elapsed_time(end) / 1e3 for start, end in events]
    return times, losses


def slow_step_notice(spec: TrialSpec, first_step_s: float) -> str:
    """What the first step of a dtype without a fast path says about the trial's time."""
    left = max(spec.warmup_steps - 1, 0) + spec.steps
    text = (f"{spec.dtype}: the first step took {first_step_s:.1f} s; the {left} steps left take about "
            f"{left * first_step_s:.0f} s")
    if spec.compare_fp32 and spec.dtype is not Dtype.FP32:
        text += ", then the fp32 reference of the same steps"
    return text


def make_batches(workload: Workload, spec: TrialSpec, device: torch.device, rank: int = 0) -> list[Any]:
    """The trial's data, made once under the trial's seed and reused by every run of it; each
    rank of a distributed trial gets its own (as a sampler would give it)."""
    torch.manual_seed(spec.seed + RANK_SEED_STRIDE * rank)
    n_batches = min(MAX_DISTINCT_BATCHES, spec.grad_accum * (spec.warmup_steps + spec.steps))
    batches = [workload.make_batch(spec.batch_size, device) for _ in range(n_batches)]
    check_batch(workload.label, batches[0], device)
    return batches


_FITTED: set[tuple[str, str]] = set()  # (workload, device) whose estimate fitted, in this worker


def check_fits(workload: Workload, device: torch.device) -> None:
    """Refuse, before building it, a model whose weights, gradients and optimizer state alone
    exceed what `device` has free (where the workload can say so without building: --hf). A
    19 B-parameter config is otherwise built layer by layer until the kernel's OOM killer strikes."""
    key = (workload.label, str(device))
    if workload.training_bytes is None or key in _FITTED:
        return  # once per workload and device in a worker: the meta build costs as much as a real one's layers
    need = workload.training_bytes()
    if device.type == "cuda":
        free: int | None = torch.cuda.mem_get_info(device)[0]
    else:
        free = memory_available_bytes()
    if free is not None and need > free:
        raise WorkloadError(f"{workload.label}: its weights, gradients and AdamW state need about "
                            f"{need / 2**30:.1f} GiB in fp32 before any activation (estimated from the config "
                            f"on the meta device), and {device} has {free / 2**30:.1f} GiB free; choose a "
                            "smaller size (--hf-layers, --hf-hidden)")
    _FITTED.add(key)


def seeded_model(workload: Workload, spec: TrialSpec, device: torch.device) -> torch.nn.Module:
    """The same initial weights every time for the same seed (if build_model uses torch's RNG)."""
    check_fits(workload, device)
    torch.manual_seed(spec.seed + 1)
    model = workload.build_model()
    if not isinstance(model, torch.nn.Module):
        raise WorkloadError(f"{workload.label}: build_model() returned {type(model).__name__}, not a "
                            "torch.nn.Module; it must return the model to train")
    return model.to(device).train()


def _step_times(samples: list[float]) -> StepTimes:
    median, iqr = median_iqr(samples)
    return StepTimes(median, iqr, min(samples), max(samples), tuple(samples))


def _checksum(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def _local(grad: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's part of a gradient: FSDP2's are sharded (DTensor), the statistics take the shard."""
    return grad.to_local() if grad is not None and hasattr(grad, "to_local") else grad


def _where_in_workload(exc: BaseException, path: Path | None) -> str:
    if path is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" (at {path.name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""


@dataclass
class _Built:
    """What a trial's build made, handed from stage to stage of TrialRunner._run."""

    workload: Workload
    device: torch.device
    batches: list[Any]
    checksum: float  # of the initial weights: the fp32 reference must start from the same
    info: dict[str, Any]  # architecture, parameters: into the result, failed or not
    warnings: list[str]
    slow: bool  # the dtype has no fast path on this device
    tf32_on: bool
    tracker: Any  # harness.memory's tracker for the device
    first_step_s: float | None = None
    one_time_s: float | None = None  # the levers' one-time cost (a compile), cold and warm
    one_time_warm_s: float | None = None
    lever_stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Numerics:
    warmup_losses: list[float]
    losses: list[float]
    skipped: int | None
    final_scale: float | None
    flops: float | None
    stats: Any  # numerics.GradStats, or None when not asked for
    reference: list[float]
    diff: float | None


class TrialRunner:
    """Runs trials in this process; keeps what can be reused between trials (device verdicts)."""

    def __init__(self, emit: Emit | None = None) -> None:
        self.emit = emit or (lambda event: None)
        self._devices: dict[str, Any] = {}
        # Kept between trials in this worker: the fp32 loss curve per batch size (checksum of the
        # initial weights, losses from step 0) and the FLOPs per micro-batch.
        self._references: dict[_ReferenceKey, tuple[float, list[float]]] = {}
        self._flops: dict[tuple, float | None] = {}
        self._last_heartbeat = 0.0
        self._workload_path: Path | None = None  # the last trial's workload file: a traceback's line in it

    def _heartbeat(self, index: int) -> None:
        """Tell the parent the timed loop is moving, at most once a second: each message wakes
        the parent, which competes with the training step for the CPU."""
        now = time.perf_counter()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self.emit({"event": "step", "phase": "measured", "index": index})

    def _device_profile(self, device: str):
        if device not in self._devices:
            from ..hardware import probe

            self._devices[device] = probe(device).devices[0]
        return self._devices[device]

    def run(self, spec: TrialSpec) -> TrialResult:
        start = time.perf_counter()
        self._workload_path = None
        try:
            result = self._run(spec)
        except BadInputError as exc:  # the workload broke the contract, or an island names no module
            result = failed(spec, Status.ERROR, str(exc), bad_input=True)
        except Exception as exc:  # anything the user's code raises is a recorded result
            where = _where_in_workload(exc, self._workload_path)
            kind = Status.OOM if is_oom(exc) else Status.ERROR
            comm = bool(spec.parallel) and is_comm_failure(exc)  # another rank stopped: not this one's fault
            result = failed(spec, kind, f"{type(exc).__name__}: {exc}{where}".strip(), comm_failure=comm)
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return result.with_updates(wall_s=time.perf_counter() - start)

    def _check_device(self, spec: TrialSpec):
        try:
            profile = self._device_profile(spec.device)
        except BadInputError as exc:
            raise WorkloadError(str(exc)) from None
        verdict = profile.dtypes[spec.dtype]
        if not verdict.supported:
            raise WorkloadError(f"{spec.dtype} cannot run on {spec.device}: {verdict.why}")
        return profile

    def _run(self, spec: TrialSpec) -> TrialResult:
        """build -> warm-up -> measure -> numerics -> assemble."""
        profile = self._check_device(spec)
        built, model = self._build(spec, profile)
        with tf32.scoped(built.tf32_on), registry.scope(spec.levers):
            step = TrainingStep(built.workload, model, spec, spec.dtype, built.device, built.batches)
            self.emit({"event": "phase", "phase": "built"})  # the parent starts abandon_after_s here
            warmup_losses, stopped = self._warm_up(spec, built, step)
            if stopped is not None:
                built.tracker.stop()
                return stopped
            before = step.amp.stats()  # outside the clock: skips during warm-up are not the loop's
            loop = timed_loop(step, spec.steps, self._heartbeat)
            self._one_time(spec, built, step, loop)
        peak = built.tracker.stop()
        self.emit({"event": "phase", "phase": "numerics"})

        losses = [float(loss) for loss in loop.losses]
        after = step.amp.stats()
        skipped = after["skipped_steps"] - before["skipped_steps"] if after["grad_scaler"] else None
        key = _ReferenceKey.of(spec, len(built.batches))
        if spec.is_reference:  # this run is the fp32 reference of its batch size
            self._remember_reference(key, built.checksum, warmup_losses + losses)
        # (a DDP model's own module: no all-reduce; an FSDP2 model gathers its shards on every rank)
        flops, stats = self._fp32_pass(built.workload, model, built.batches[0], after["scale"] or 1.0, key,
                                       spec.grad_stats)
        del step, model  # freed before the fp32 reference trains a model of its own
        gc.collect()
        reference, diff = self._agreement(spec, built, key, warmup_losses + losses)
        numerics = _Numerics(warmup_losses, losses, skipped, after["scale"], flops, stats, reference, diff)
        return self._assemble(spec, profile, built, loop, peak, numerics)

    def _build(self, spec: TrialSpec, profile) -> tuple[_Built, torch.nn.Module]:
        """The trial's device (its rank's under --parallel), workload, batches and seeded model;
        the memory tracker starts before the model is built, so its weights count."""
        device = torch.device(spec.device)
        rank = 0
        if spec.parallel:
            group = ensure_group()
            rank, device = group.rank, torch.device(rank_device(spec.device, group))
        workload = load(spec.workload)
        self._workload_path = workload.path
        warnings = []
        slow = not profile.dtypes[spec.dtype].fast
        if slow:
            warnings.append(f"{spec.dtype} has no fast path on {spec.device}: {profile.dtypes[spec.dtype].why}")
            # said before the first step, not only in the result: an emulated step can take seconds
            self.emit({"event": "notice", "text": f"{warnings[-1]}; its time follows the first step"})
        batches = make_batches(workload, spec, device, rank)
        tracker = tracker_for(device)
        tracker.start()
        model = seeded_model(workload, spec, device)
        info: dict[str, Any] = {"architecture": workload.architecture or type(model).__name__,
                                "parameters": sum(p.numel() for p in model.parameters())}
        return _Built(workload, device, batches, _checksum(model), info, warnings, slow,
                      spec.tf32_on(profile.dtypes[Dtype.TF32].fast), tracker), model

    def _warm_up(self, spec: TrialSpec, built: _Built, step: TrainingStep) -> tuple[list[float], TrialResult | None]:
        """The warm-up steps' losses, or the trial stopped early (pruned) when its first step took
        longer than abandon_after_s (a first step runs even without warm-up steps then)."""
        losses: list[float] = []
        # a first step outside the clock when it is judged (abandon_after_s) or holds a one-time cost
        first_apart = bool(spec.abandon_after_s or registry.one_time(spec.levers))
        for i in range(max(spec.warmup_steps, 1 if first_apart else 0)):
            t0 = time.perf_counter()
            losses.append(float(step()))  # float() waits for the device
            seconds = time.perf_counter() - t0
            if i == 0:
                built.first_step_s = seconds
            self.emit({"event": "step", "phase": "warmup", "index": i, "seconds": seconds})
            if i == 0 and built.slow:
                self.emit({"event": "notice", "text": slow_step_notice(spec, seconds)})
            if i == 0 and spec.abandon_after_s and seconds > spec.abandon_after_s:
                return losses, failed(spec, Status.PRUNED, pruned_reason(seconds, spec.abandon_after_s),
                                      warnings=tuple(built.warnings), tf32=built.tf32_on, **built.info)
        return losses, None

    def _one_time(self, spec: TrialSpec, built: _Built, step: TrainingStep, loop: _Loop) -> None:
        """What the levers record (graph breaks...), and their one-time cost: the first step less a
        measured one, cold (each lever's scope gives the trial fresh caches), then warm: the levers
        reset (compiled graphs forgotten) and one more step, which builds them again from the
        caches the cold step filled. That step is outside the clock and the compared losses."""
        built.lever_stats = registry.observe(spec.levers)
        if not registry.one_time(spec.levers) or built.first_step_s is None or not loop.times:
            return
        median = median_iqr(loop.times)[0]
        built.one_time_s = max(0.0, built.first_step_s - median)
        registry.reset()
        t0 = time.perf_counter()
        float(step())
        built.one_time_warm_s = max(0.0, time.perf_counter() - t0 - median)

    def _agreement(self, spec: TrialSpec, built: _Built, key: _ReferenceKey,
                   curve: list[float]) -> tuple[list[float], float | None]:
        """The fp32 losses over the first compare_steps of `curve` (the warm-up's and the measured
        steps' losses), and the relative distance of the curve from them; an fp32 trial is its
        own reference (distance 0)."""
        if spec.is_reference:
            return [], 0.0
        if not spec.compare_fp32:
            return [], None
        wanted = min(len(curve), spec.compare_steps) if spec.compare_steps else len(curve)
        reference, note = self._fp32_reference(built.workload, spec, built.device, built.batches, built.checksum, key,
                                               wanted)
        if note:
            built.warnings.append(note)
        return reference, loss_rel_diff(curve[: len(reference)], reference)

    def _assemble(self, spec: TrialSpec, profile, built: _Built, loop: _Loop, peak: int | None,
                  numerics: _Numerics) -> TrialResult:
        """The result: step times (median, IQR), throughput, FLOP/s and MFU, memory, numerics."""
        times = _step_times(loop.times)
        warnings = built.warnings
        if is_noisy(times.median, times.iqr):
            warnings.append(f"noisy: step-time IQR is {times.iqr / times.median:.0%} of the median")
        flops_per_step = numerics.flops * spec.grad_accum if numerics.flops else None
        tflops = flops_per_step / times.median / 1e12 if flops_per_step and times.median > 0 else None
        peak_tflops = profile.peak_tflops(spec.dtype)
        losses = numerics.losses
        status, error = Status.OK, None
        bad = [i for i, value in enumerate(losses) if not math.isfinite(value)]
        if bad:
            status = Status.NONFINITE
            error = (f"loss is {losses[bad[0]]} at measured step {bad[0] + 1} of {len(losses)}"
                     + (": fp16 overflow in the forward pass?" if spec.dtype is Dtype.FP16 else ""))
        return TrialResult(
            spec=spec,
            status=status,
            error=error,
            step_time_s=times,
            samples_per_s=spec.samples_per_step / times.median if times.median > 0 else None,
            loop_overhead_fraction=loop.overhead_fraction,
            peak_memory_bytes=peak,
            memory_method=built.tracker.method,
            flops_per_step=flops_per_step,
            tflops=tflops,
            mfu=tflops / peak_tflops if tflops and peak_tflops else None,
            peak_tflops=peak_tflops,
            skipped_steps=numerics.skipped,
            final_loss_scale=numerics.final_scale,
            losses=tuple(losses),
            warmup_losses=tuple(numerics.warmup_losses),
            fp32_losses=tuple(numerics.reference),
            loss_rel_diff_vs_fp32=numerics.diff,
            grad_stats=numerics.stats,
            warnings=tuple(warnings),
            tf32=built.tf32_on,
            one_time_s=built.one_time_s,
            one_time_warm_s=built.one_time_warm_s,
            lever_stats=built.lever_stats,
            **built.info,
        )

    def _remember_reference(self, key: _ReferenceKey, checksum: float, losses: list[float]) -> None:
        known = self._references.get(key)
        if all(math.isfinite(x) for x in losses) and (known is None or len(known[1]) < len(losses)):
            self._references[key] = (checksum, list(losses))

    def _fp32_pass(self, workload: Workload, model: torch.nn.Module, batch: Any, scale: float, key: _ReferenceKey,
                   want_stats: bool = True):
        """fp32 gradient statistics, and the FLOPs of one forward+backward (dtype-independent:
        counted once per batch size, the counting pass is slower than a step)."""
        from torch.utils.flop_counter import FlopCounterMode

        known = self._flops.get(key.per_batch)
        if known is not None and not want_stats:
            return known, None  # nothing to compute
        model.zero_grad(set_to_none=True)
        counter = FlopCounterMode(display=False) if known is None else None
        with tf32.scoped(False), counter or contextlib.nullcontext():
            workload.loss_fn(model, batch).backward()
        stats = grad_stats((_local(p.grad) for p in model.parameters()), scale) if want_stats else None
        model.zero_grad(set_to_none=True)
        if counter is not None:
            known = self._flops[key.per_batch] = counter.get_total_flops() or None
        return known, stats

    def _fp32_reference(self, workload: Workload, spec: TrialSpec, device: torch.device, batches: list[Any],
                        initial_checksum: float, key: _ReferenceKey, wanted: int) -> tuple[list[float], str | None]:
        """fp32 losses of the first `wanted` steps from the same weights and batches: from an
        earlier fp32 trial or reference of this batch size in this worker when one covers them
        (fp32 on the same seed and batches repeats itself), else trained here and remembered."""
        known = self._references.get(key)
        usable = known is not None and known[0] == initial_checksum and len(known[1]) >= wanted
        if spec.parallel:  # training a reference is collective: every rank trains it, or none
            usable = agree(usable)
        if usable and known is not None:
            return known[1][:wanted], None
        model = seeded_model(workload, spec, device)
        if _checksum(model) != initial_checksum:
            return [], "fp32 agreement not computed: build_model() gives different weights under the same torch seed"
        with tf32.scoped(False):
            step = TrainingStep(workload, model, spec, Dtype.FP32, device, batches, comm=FULL_COMM, plain=True)
            losses = []
            for i in range(wanted):
                t0 = time.perf_counter()
                losses.append(float(step()))
                self.emit({"event": "step", "phase": "fp32 reference", "index": i, "seconds": time.perf_counter() - t0})
        self._remember_reference(key, initial_checksum, losses)
        return losses, None


@dataclass(frozen=True)
class _ReferenceKey:
    """What fixes an fp32 loss curve: the workload file as it is now, the device, the seed, the
    batch size, accumulation and how many distinct batches rotate."""

    workload: str
    mtime_ns: int
    device: str
    seed: int
    batch_size: int
    grad_accum: int
    n_batches: int

    @classmethod
    def of(cls, spec: TrialSpec, n_batches: int) -> _ReferenceKey:
        try:
            mtime = Path(spec.workload).stat().st_mtime_ns
        except OSError:
            mtime = 0
        return cls(spec.workload, mtime, spec.device, spec.seed, spec.batch_size, spec.grad_accum, n_batches)

    @property
    def per_batch(self) -> tuple:
        """FLOPs depend on the workload and the micro-batch only."""
        return self.workload, self.mtime_ns, self.device, self.batch_size
