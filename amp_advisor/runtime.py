"""MixedPrecision: the recommendation at training time, in one object.

    amp = Recommendation.load("reports/<run>").mixed_precision()   # or MixedPrecision("bf16", "cuda")
    for batch in loader:
        with amp.autocast():
            loss = loss_fn(model, batch)
        amp.backward(loss)          # / accumulation steps, scaled when fp16
        amp.step(optimizer)         # every grad_accumulation_steps-th call: (unscale, clip,) step, update, zero_grad

It owns autocast, the GradScaler (fp16 only: bf16 and fp32 do no scaler work at all), gradient
accumulation and optional gradient clipping (unscaled first, so the threshold means what it
says). Statistics cost no device sync per step: after each update the scale is copied on the
device, and the copies are read FLUSH_EVERY steps at a time (or when stats() asks).
`state_dict()` is plain numbers (JSON-safe) and restores the scaler and counters exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import levers as lever_registry
from . import tf32 as tf32_mode
from .dtypes import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_GROWTH_FACTOR,
    DEFAULT_GROWTH_INTERVAL,
    DEFAULT_INIT_SCALE,
    TRAINING_DTYPE_NAMES,
    TRAINING_DTYPES,
    Dtype,
    torch_dtype,
)
from .errors import AdvisorError, BadInputError
from .islands import installed, keep_in_fp32
from .jsonio import write_atomic
from .limits import MAX_GRAD_NORM, MAX_GROWTH_FACTOR, MAX_INIT_SCALE, out_of_range

FLUSH_EVERY = 256  # optimizer steps between reads of the recorded scales: one sync per 256 steps
STATE_VERSION = 1
INSTABILITY_STEPS = 25  # skipped steps (fp16) or non-finite losses (bf16) in a row that mean trouble
MIN_SCALE = 1.0  # a GradScaler scale below this has collapsed: the gradients overflow even unscaled
ON_INSTABILITY = ("raise", "fallback")


class FP16ParametersError(AdvisorError, TypeError):
    """The optimizer holds fp16 parameters, which GradScaler cannot unscale."""


class TrainingInstabilityError(AdvisorError, FloatingPointError):
    """Reduced-precision training went persistently non-finite (on_instability="raise")."""


def _checked(dtype: str | Dtype, grad_accumulation_steps: int, max_grad_norm: float | None, init_scale: float,
             growth_factor: float, backoff_factor: float, on_instability: str, instability_steps: int) -> Dtype:
    """MixedPrecision's arguments checked before anything is switched (TF32, a GradScaler): the
    training dtype they name, or BadInputError saying what was wrong."""
    parsed = Dtype.parse(dtype) if not isinstance(dtype, Dtype) else dtype
    if parsed not in TRAINING_DTYPES:
        raise BadInputError(f"dtype {parsed} is not a training dtype "
                            f"(expected one of {', '.join(TRAINING_DTYPE_NAMES)})")
    if grad_accumulation_steps < 1:
        raise BadInputError(f"grad_accumulation_steps must be >= 1, got {grad_accumulation_steps}")
    # GradScaler's own rules: growth above 1, backoff below 1
    numbers = {"init_scale": (init_scale, 0, MAX_INIT_SCALE, False),
               "growth_factor": (growth_factor, 1, MAX_GROWTH_FACTOR, False),
               "backoff_factor": (backoff_factor, 0, 1, True)}
    if max_grad_norm is not None:
        numbers["max_grad_norm"] = (max_grad_norm, 0, MAX_GRAD_NORM, False)
    for name, (value, low, high, high_open) in numbers.items():
        if why := out_of_range(value, low, high, high_open=high_open):
            unset = " (or None for no clipping)" if name == "max_grad_norm" else ""
            raise BadInputError(f"{name}: {why}{unset}")
    if on_instability not in ON_INSTABILITY:
        raise BadInputError(f"on_instability must be one of {', '.join(ON_INSTABILITY)}, got {on_instability!r}")
    if instability_steps < 1:
        raise BadInputError(f"instability_steps must be >= 1, got {instability_steps}")
    return parsed


class MixedPrecision:
    def __init__(
        self,
        dtype: str | Dtype = "fp32",
        device_type: str = "cuda",
        *,
        grad_accumulation_steps: int = 1,
        max_grad_norm: float | None = None,
        init_scale: float = DEFAULT_INIT_SCALE,
        growth_factor: float = DEFAULT_GROWTH_FACTOR,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        growth_interval: int = DEFAULT_GROWTH_INTERVAL,
        enabled: bool = True,
        tf32: bool = False,
        zero_grad: bool = True,
        fp32_modules: Sequence[Any] = (),
        levers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        on_instability: str = "raise",
        fallback_dtype: str | Dtype | None = None,
        instability_steps: int = INSTABILITY_STEPS,
    ) -> None:
        """`dtype`: fp32, tf32, bf16 or fp16; `enabled=False` trains in plain fp32 whatever the dtype.
        `tf32=True` (or dtype tf32) allows TF32 matmuls process-wide (tf32.enable), for the backward
        pass too, as the trials measured it.
        `zero_grad=False` leaves zeroing the gradients to you.
        `fp32_modules`: modules to keep in fp32 inside autocast (qualified names as in
        model.named_modules(), module classes or class names); `prepare(model)` installs them.
        `levers`: the levers' values ({"compile": "default", "islands": "encoder.attn,head"}), as a
        recommendation carries them; what they set process-wide is set here, and `prepare(model)`
        installs the rest, in their declared order (levers.Stage), after the `fp32_modules`.
        `on_instability`: what to do when fp16/bf16 training goes persistently wrong (the GradScaler
        skipping `instability_steps` steps in a row or its scale collapsing below 1, or as many
        non-finite bf16 losses in a row): "raise" (TrainingInstabilityError, pointing at
        `amp-advisor diagnose`) or "fallback" (switch to `fallback_dtype` from the next step, with a
        warning; default bf16 where this device computes it natively, else fp32). Checked when the
        helper reads its statistics anyway (every FLUSH_EVERY steps): no extra device sync."""
        import torch

        self.dtype = _checked(dtype, grad_accumulation_steps, max_grad_norm, init_scale, growth_factor, backoff_factor,
                              on_instability, instability_steps)
        self.device_type = device_type.split(":")[0]
        self.grad_accumulation_steps = grad_accumulation_steps
        self.max_grad_norm = max_grad_norm
        self.enabled = enabled
        self._autocast_dtype = torch_dtype(self.dtype) if enabled and self.dtype.autocasts else None
        self.scaler = torch.amp.GradScaler(
            self.device_type, init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
            growth_interval=growth_interval, enabled=enabled and self.dtype.needs_grad_scaler,
        )
        self._scaling = self.scaler.is_enabled()
        self._zero_grad = zero_grad
        self.tf32 = bool(tf32 or self.dtype is Dtype.TF32)
        if self.tf32:
            tf32_mode.enable()
        self._clip = torch.nn.utils.clip_grad_norm_
        self.fp32_modules = tuple(fp32_modules)
        self.levers = self._enabled_levers(levers)
        self.islands: list[str] = []  # the qualified names prepare() made fp32 islands
        self._synced_model: Any = None  # a DDP/FSDP2 model prepare() saw: its reduction follows accumulation
        self._watch(on_instability, fallback_dtype, instability_steps)
        self._start_statistics(init_scale)

    def _watch(self, on_instability: str, fallback_dtype: str | Dtype | None, instability_steps: int) -> None:
        """What is done when training goes persistently wrong (the constructor's `on_instability`)."""
        self.on_instability = on_instability
        self.instability_steps = instability_steps
        self._fallback_dtype = None if fallback_dtype is None else Dtype.parse(str(fallback_dtype))
        self.configured_dtype = self.dtype
        self._fallback: dict[str, Any] | None = None  # set when the helper fell back

    def _enabled_levers(self, levers: Mapping[str, str] | Sequence[tuple[str, str]]) -> lever_registry.Pairs:
        """The levers' values, checked for this dtype and device, and what they set process-wide set."""
        chosen = lever_registry.canonical(levers, self.dtype)
        lever_problems = lever_registry.problems(dict(chosen), self.dtype, self.device_type)
        if lever_problems:
            raise BadInputError("MixedPrecision: " + "; ".join(lever_problems))
        lever_registry.enable(chosen)
        return chosen

    def _start_statistics(self, init_scale: float) -> None:
        """The step counters and the statistics read from the device in batches (FLUSH_EVERY)."""
        self._pending_losses: list = []
        self._skip_streak = 0
        self._nonfinite_streak = 0
        self._nonfinite = 0
        self._micro_steps = 0  # backward() calls
        self._stepped_at = 0  # the micro step at which the last optimizer step ran
        self._steps = 0  # optimizer steps (including those GradScaler skipped)
        self._params_checked = False
        # resolved statistics, and what is still on the device
        self._pending_scales: list = []
        self._pending_found: list = []  # per optimizer step: whether GradScaler found inf/nan (and skipped it)
        self._pending_norms: list = []
        self._scale = float(init_scale) if self._scaling else None
        self._scale_history: list[list[float]] = [[0, float(init_scale)]] if self._scaling else []
        self._skipped = 0
        self._clipped = 0
        self._last_norm: float | None = None
        self._max_norm_seen: float | None = None

    @classmethod
    def from_recommendation(cls, rec, *, device_type: str | None = None, **overrides: Any) -> MixedPrecision:
        """The helper a Recommendation describes; keyword overrides (max_grad_norm=1.0, ...) win."""
        s = rec.scaler
        kwargs = dict(grad_accumulation_steps=rec.grad_accumulation_steps, init_scale=s.init_scale,
                      growth_factor=s.growth_factor, backoff_factor=s.backoff_factor,
                      growth_interval=s.growth_interval, tf32=rec.tf32, levers=rec.levers)
        kwargs.update(overrides)
        return cls(rec.dtype, device_type or rec.device, **kwargs)

    # ------------------------------------------------------------------------- the step API
    def prepare(self, model):
        """Install the fp32 islands (`fp32_modules`) and then the levers (`levers`: torch.compile...)
        on `model`, and return the model to train (a compiled one is a new object sharing the
        parameters: build the optimizer from either). A name that matches
        no module is a BadInputError naming the closest ones (names as in the module a DDP wrapper
        holds). A DDP or FSDP2 model is remembered: on the accumulation micro-steps that do not
        step the optimizer, autocast() turns its gradient reduction off (DDP's no_sync, FSDP2's
        set_requires_gradient_sync), so only the last micro-batch communicates."""
        own = model.module if _is_ddp(model) else model
        if self.fp32_modules:
            keep_in_fp32(own, self.fp32_modules)
        if _is_ddp(model) or hasattr(model, "set_requires_gradient_sync"):
            self._synced_model = model
        prepared = lever_registry.install(model, self.levers, self.device_type)  # the islands lever first
        self.islands = installed(own)
        return prepared

    def autocast(self):
        """The forward pass's context: autocast to bf16/fp16, nothing for fp32; on a prepared
        DDP/FSDP2 model, without gradient reduction unless this micro-batch ends an accumulation."""
        no_sync = None
        model = self._synced_model
        if model is not None and self.grad_accumulation_steps > 1:
            if not _is_ddp(model):
                model.set_requires_gradient_sync(self.sync_gradients)
            elif not self.sync_gradients:  # DDP decides in the forward whether the backward reduces
                no_sync = model.no_sync()
        if self._autocast_dtype is None:
            return no_sync or contextlib.nullcontext()
        import torch

        cast = torch.autocast(self.device_type, dtype=self._autocast_dtype)
        if no_sync is None:
            return cast
        stack = contextlib.ExitStack()
        stack.enter_context(no_sync)
        stack.enter_context(cast)
        return stack

    @property
    def sync_gradients(self) -> bool:
        """True when the next step() will step the optimizer (the last micro-batch of an accumulation);
        e.g. to skip DDP's all-reduce on the others with `model.no_sync()`."""
        return (self._micro_steps + 1) % self.grad_accumulation_steps == 0

    def backward(self, loss, **kwargs: Any) -> None:
        """loss / grad_accumulation_steps, scaled when fp16, then .backward(**kwargs)."""
        self._micro_steps += 1
        if self.grad_accumulation_steps > 1:
            loss = loss / self.grad_accumulation_steps
        if self._scaling:
            loss = self.scaler.scale(loss)
        elif self._autocast_dtype is not None:  # bf16: no scaler to watch, so the losses are
            self._pending_losses.append(loss.detach())  # judged at the next flush: no kernel, no sync
        loss.backward(**kwargs)

    def step(self, *optimizers) -> bool:
        """Call after every backward(). At the end of an accumulation: unscale and clip (if
        max_grad_norm), step each optimizer (GradScaler skips it on inf/nan gradients), update the
        scale, zero the gradients. Returns whether this call stepped."""
        if not optimizers:
            raise BadInputError("step() needs the optimizer(s) to step, e.g. amp.step(optimizer)")
        if self._micro_steps == self._stepped_at or self._micro_steps % self.grad_accumulation_steps:
            return False
        self._stepped_at = self._micro_steps
        if self._scaling and not self._params_checked:
            self._check_parameters(optimizers)
        if self.max_grad_norm is not None:
            if self._scaling:  # clip the true gradients, not the scaled ones
                for optimizer in optimizers:
                    self.scaler.unscale_(optimizer)
            self._pending_norms.append(self._clip(_parameters(optimizers), self.max_grad_norm))
        if self._scaling:
            for optimizer in optimizers:
                self.scaler.step(optimizer)
            self._pending_found.append(self._found_inf(optimizers))
            self.scaler.update()
            self._pending_scales.append(self._scale_on_device())
        else:
            for optimizer in optimizers:
                optimizer.step()
        if self._zero_grad:
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
        self._steps += 1
        if (len(self._pending_scales) >= FLUSH_EVERY or len(self._pending_norms) >= FLUSH_EVERY
                or len(self._pending_losses) >= FLUSH_EVERY):
            self._flush()
            trouble = self._trouble()
            if trouble:
                self._unstable(trouble)
        return True

    # ------------------------------------------------------------------------- the safety net
    def _trouble(self) -> str | None:
        """Why training is persistently broken, from the statistics already read; None if it is not."""
        if self._scaling and self._scale is not None and self._scale < MIN_SCALE:
            return f"the GradScaler's scale collapsed to {self._scale:g} (below {MIN_SCALE:g}) by step {self._steps}"
        if self._skip_streak >= self.instability_steps:
            return f"the GradScaler skipped {self._skip_streak} optimizer steps in a row (to step {self._steps})"
        if self._nonfinite_streak >= self.instability_steps:
            return f"{self._nonfinite_streak} non-finite losses in a row (to step {self._steps})"
        return None

    def _unstable(self, why: str) -> None:
        if self.on_instability == "raise":
            raise TrainingInstabilityError(
                f"{self.dtype} training is unstable: {why}. Find the module that breaks it with "
                f"`amp-advisor diagnose MODEL.py --dtype {self.dtype}` and keep it in fp32 (fp32_modules=...), or "
                'pass on_instability="fallback" to switch precision automatically.')
        to = self._fallback_dtype or default_fallback(self.dtype, self.device_type)
        if to is self.dtype:
            to = Dtype.FP32
        warnings.warn(f"amp-advisor: {self.dtype} training is unstable ({why}); falling back to {to} from step "
                      f"{self._steps + 1}", RuntimeWarning, stacklevel=3)
        self._switch(to, {"from": self.dtype.value, "to": to.value, "at_step": self._steps + 1, "why": why})

    def _switch(self, to: Dtype, record: dict[str, Any]) -> None:
        """From the next step on: train in `to` (no GradScaler unless fp16, which is never a fallback)."""
        import torch

        self._flush()
        self._fallback = record
        self.dtype = to
        self._autocast_dtype = torch_dtype(to) if to.autocasts else None
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=False)
        self._scaling = False
        self._scale = None
        self._skip_streak = self._nonfinite_streak = 0

    @property
    def fell_back(self) -> bool:
        return self._fallback is not None

    def _scale_on_device(self):
        # GradScaler keeps its scale in a device tensor that update() changes in place; a copy
        # records it without a sync (get_scale() would sync). The attribute is private, so fall
        # back to the public, syncing call if a torch version renames it.
        scale = getattr(self.scaler, "_scale", None)
        return scale.detach().clone() if scale is not None else self.scaler.get_scale()

    def _check_parameters(self, optimizers) -> None:
        import torch

        self._params_checked = True
        half = [p for p in _parameters(optimizers) if p.dtype == torch.float16]
        if half:
            shapes = ", ".join(str(tuple(p.shape)) for p in half[:3])
            raise FP16ParametersError(
                f"the optimizer holds {len(half)} fp16 parameter tensors (shapes {shapes}...): GradScaler "
                "cannot unscale fp16 gradients. Keep the model's weights in fp32 (do not call model.half() or "
                ".to(torch.float16)) and let autocast run the fp16 math; or train in bf16, which needs no scaler."
            )

    # ---------------------------------------------------------------------------- statistics
    def _found_inf(self, optimizers) -> Any:
        """Whether GradScaler found inf/nan gradients in this step (and so skipped it), as a
        tensor on the device: no sync here, read with the scales."""
        import torch

        flags = [flag.reshape(()).to(torch.float32) for optimizer in optimizers
                 for flag in self.scaler._found_inf_per_device(optimizer).values()]
        if not flags:
            return torch.zeros(())
        device = flags[0].device
        return torch.stack([f.to(device) for f in flags]).amax()

    def _flush(self) -> None:
        """Read the scales and norms recorded on the device: one transfer for all of them."""
        import torch

        if self._pending_scales:
            first = self._steps - len(self._pending_scales) + 1
            pending = self._pending_scales
            values = (torch.stack(pending).reshape(-1).tolist() if isinstance(pending[0], torch.Tensor)
                      else [float(s) for s in pending])
            self._pending_scales.clear()
            found = self._pending_found
            skips = (torch.stack([f.to(found[0].device) for f in found]).reshape(-1).tolist() if found
                     else [0.0] * len(values))
            self._pending_found = []
            for offset, (scale, skipped) in enumerate(zip(values, skips, strict=True)):
                # GradScaler's own verdict: it found inf/nan gradients and skipped the step. (The
                # scale dropping is not the test: an infinite scale times the backoff stays inf.)
                if skipped:
                    self._skipped += 1
                    self._skip_streak += 1
                else:
                    self._skip_streak = 0
                if scale != self._scale:
                    self._scale_history.append([first + offset, scale])
                self._scale = scale
        if self._pending_losses:
            pending = self._pending_losses
            if all(x.shape == pending[0].shape and x.dtype == pending[0].dtype for x in pending):
                flags = torch.isfinite(torch.stack(pending).reshape(len(pending), -1)).all(1).tolist()
            else:  # losses of different shapes or dtypes (backward(gradient=...) on a tensor)
                flags = torch.stack([torch.isfinite(x).all() for x in pending]).tolist()
            self._pending_losses.clear()
            for ok in flags:
                self._nonfinite_streak = 0 if ok else self._nonfinite_streak + 1
                self._nonfinite += not ok
        if self._pending_norms:
            norms = torch.stack([n.reshape(()) for n in self._pending_norms]).float().tolist()
            self._pending_norms.clear()
            finite = [n for n in norms if math.isfinite(n)]
            self._clipped += sum(1 for n in norms if n > self.max_grad_norm)
            if finite:
                self._last_norm = finite[-1]
                self._max_norm_seen = max(finite if self._max_norm_seen is None else [self._max_norm_seen, *finite])

    def stats(self, reduce: bool = False) -> dict[str, Any]:
        """Counters, skipped steps (overflow), current scale and its history ([step, scale] at each
        change), overflow ratio; gradient norms when clipping. Reads the device once. The figures
        are this rank's; with `reduce=True` under torch.distributed (a collective: call it on every
        rank) a "ranks" entry adds the world's: the most skipped steps and the lowest scale on any
        rank, non-finite losses and clipped steps summed."""
        out = self._stats()
        if reduce:
            out["ranks"] = _reduced(out)
        return out

    def _stats(self) -> dict[str, Any]:
        self._flush()
        out: dict[str, Any] = {
            "dtype": self.dtype.value,
            "autocast": str(self._autocast_dtype).replace("torch.", "") if self._autocast_dtype else None,
            "grad_scaler": self._scaling,
            "grad_accumulation_steps": self.grad_accumulation_steps,
            "micro_steps": self._micro_steps,
            "steps": self._steps,
            "skipped_steps": self._skipped,
            "overflow_ratio": self._skipped / self._steps if self._steps else 0.0,
            "scale": self._scale,
            "scale_history": [list(entry) for entry in self._scale_history],
            "fp32_islands": list(self.islands),
            "nonfinite_losses": self._nonfinite,
            "fallback": dict(self._fallback) if self._fallback else None,
        }
        if self.max_grad_norm is not None:
            out["grad_clipping"] = {"max_norm": self.max_grad_norm, "clipped_steps": self._clipped,
                                    "last_norm": self._last_norm, "largest_finite_norm": self._max_norm_seen}
        return out

    def save_stats(self, path: str | os.PathLike) -> Path:
        return write_atomic(Path(path), self.stats())

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and lists (JSON-safe): the scaler's state and every counter."""
        self._flush()
        return {
            "schema_version": STATE_VERSION,
            "dtype": self.configured_dtype.value,  # as built; a fallback is recorded below
            "fallback": dict(self._fallback) if self._fallback else None,
            "skip_streak": self._skip_streak,
            "nonfinite_streak": self._nonfinite_streak,
            "nonfinite_losses": self._nonfinite,
            "grad_accumulation_steps": self.grad_accumulation_steps,
            "micro_steps": self._micro_steps,
            "stepped_at": self._stepped_at,
            "steps": self._steps,
            "skipped_steps": self._skipped,
            "scale": self._scale,
            "scale_history": [list(entry) for entry in self._scale_history],
            "clipped_steps": self._clipped,
            "last_norm": self._last_norm,
            "largest_finite_norm": self._max_norm_seen,
            "grad_scaler": dict(self.scaler.state_dict()) if self._scaling else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what state_dict() returned: the scale sequence continues exactly."""
        if not isinstance(state, Mapping) or state.get("schema_version") != STATE_VERSION:
            version = state.get("schema_version") if isinstance(state, Mapping) else None
            raise BadInputError(f"MixedPrecision state has schema_version {version!r}, expected {STATE_VERSION}")
        problems = []
        fallback = state.get("fallback")
        if state.get("dtype") == self.configured_dtype.value and isinstance(fallback, Mapping) \
                and self._fallback is None:
            to = Dtype.parse(str(fallback.get("to")))
            warnings.warn(f"amp-advisor: this run fell back from {self.dtype} to {to} at step "
                          f"{fallback.get('at_step')} ({fallback.get('why')}); resuming in {to}", RuntimeWarning,
                          stacklevel=2)
            self._switch(to, dict(fallback))
        if state.get("dtype") != self.configured_dtype.value:
            problems.append(f"it was saved by a {state.get('dtype')} helper, this one is {self.dtype}")
        if state.get("grad_accumulation_steps") != self.grad_accumulation_steps:
            problems.append(f"grad_accumulation_steps was {state.get('grad_accumulation_steps')}, "
                            f"here {self.grad_accumulation_steps}")
        if bool(state.get("grad_scaler")) != self._scaling:
            problems.append("one of the two has a GradScaler and the other not")
        if problems:
            raise BadInputError("cannot resume from this MixedPrecision state: " + "; ".join(problems)
                                + ". Build the helper with the checkpoint's settings, or start the counters fresh.")
        self._pending_scales.clear()
        self._pending_found.clear()
        self._pending_norms.clear()
        if self._scaling:
            self.scaler.load_state_dict(dict(state["grad_scaler"]))
        self._micro_steps = int(state["micro_steps"])
        self._stepped_at = int(state["stepped_at"])
        self._steps = int(state["steps"])
        self._skipped = int(state["skipped_steps"])
        self._scale = state["scale"]
        self._scale_history = [list(entry) for entry in state["scale_history"]]
        self._clipped = int(state.get("clipped_steps", 0))
        self._last_norm = state.get("last_norm")
        self._max_norm_seen = state.get("largest_finite_norm")
        self._skip_streak = int(state.get("skip_streak", 0))
        self._nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self._nonfinite = int(state.get("nonfinite_losses", 0))


def _is_ddp(model: Any) -> bool:
    try:
        from torch.nn.parallel import DistributedDataParallel
    except ImportError:  # a torch built without distributed
        return False
    return isinstance(model, DistributedDataParallel)


def _reduced(stats: dict[str, Any]) -> dict[str, Any]:
    """The world's figures from every rank's stats (one all-reduce per operation)."""
    import torch
    import torch.distributed as dist

    scale = stats["scale"] if stats["scale"] is not None else math.inf
    high = [float(stats["skipped_steps"]), -scale]  # reduced by MAX
    total = [float(stats["nonfinite_losses"]), float(stats.get("grad_clipping", {}).get("clipped_steps", 0))]  # SUM
    world = 1
    if dist.is_available() and dist.is_initialized():
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        for values, op in ((high, dist.ReduceOp.MAX), (total, dist.ReduceOp.SUM)):
            tensor = torch.tensor(values, dtype=torch.float64, device=device)
            dist.all_reduce(tensor, op=op)
            values[:] = tensor.tolist()
        world = dist.get_world_size()
    return {"world_size": world, "skipped_steps_max": int(high[0]),
            "scale_min": None if math.isinf(high[1]) else -high[1],
            "nonfinite_losses_sum": int(total[0]), "clipped_steps_sum": int(total[1])}


def default_fallback(dtype: Dtype, device_type: str) -> Dtype:
    """The safe precision to fall back to from `dtype`: bf16 (from fp16) where this device
    computes bf16 natively (a GPU of compute capability 8+, a CPU with AMX or AVX512-BF16), else
    fp32. Read when a fallback happens, never before."""
    if dtype is Dtype.FP16 and _native_bf16(device_type):
        return Dtype.BF16
    return Dtype.FP32


def _native_bf16(device_type: str) -> bool:
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    if device_type == "cpu":
        from .hardware.cpu import CPUINFO_PATH, parse_cpuinfo

        try:
            flags = parse_cpuinfo(CPUINFO_PATH.read_text(errors="replace")).flags
        except OSError:
            return False
        return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def _parameters(optimizers: Iterable) -> list:
    return [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
