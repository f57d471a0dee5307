"""The numerics X-ray, in the worker: real training steps with hooks on every module.

Each step runs twice over the same weights and batch: first in fp32 without gradients (the
reference: what every module's output should be), then the reduced-precision training step the
recommendation would run (autocast through MixedPrecision, GradScaler for fp16). Hooks on every
module record, as device scalars, what diagnosis.METRICS lists; at the end of a step all of them
are read in one transfer and reduced to one row per module. No tensor outlives its step except
those scalars (the fp32 reference's activations live for one step, as training's own do).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from .. import tf32
from ..diagnosis import METRICS, ROOT, DiagnoseSpec, Diagnosis
from ..dtypes import FP16_MAX, FP16_MIN_SUBNORMAL
from ..errors import BadInputError
from ..runtime import MixedPrecision
from ..workload import check_batch, check_loss, load

MAX_DISTINCT_BATCHES = 4
Emit = Callable[[dict[str, Any]], None]


def _floating(value: Any, out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Every floating tensor in a (nested) forward argument or output."""
    out = [] if out is None else out
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.numel():
            out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _floating(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _floating(v, out)
    return out


# What each hook records, as one small device vector per call (few ops: the hooks run on every
# module); the host turns the raw values into diagnosis.METRICS after the step's one transfer.
IN, OUT, REF, GRAD_IN, GRAD_OUT = range(5)
WIDTH = {IN: 3, OUT: 3, REF: 5, GRAD_IN: 2, GRAD_OUT: 2}


def _magnitudes(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    """[largest finite |x|, largest |x| (inf/NaN when any element is)] over the tensors."""
    if len(ts) == 1:
        a = ts[0].detach().abs()
        return [a.nan_to_num(0.0, 0.0, 0.0).amax().float(), a.amax().float()]
    parts = [_magnitudes([t]) for t in ts]
    return [torch.stack([p[0] for p in parts]).amax(), torch.stack([p[1] for p in parts]).amax()]


def _rel_err(live: list[torch.Tensor], ref: list[torch.Tensor] | None) -> torch.Tensor:
    """||live - ref|| / ||ref|| over the tensors (NaN when they do not match up)."""
    if ref is None or len(live) != len(ref) or any(a.shape != b.shape for a, b in zip(live, ref, strict=True)):
        return torch.tensor(math.nan, device=live[0].device)
    if len(live) == 1:
        return torch.linalg.vector_norm(live[0].detach().float() - ref[0]) / torch.linalg.vector_norm(ref[0])
    diff = torch.stack([torch.linalg.vector_norm(a.detach().float() - b) for a, b in zip(live, ref, strict=True)])
    norm = torch.stack([torch.linalg.vector_norm(b) for b in ref])
    return torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(norm)


def _range_counts(ref: list[torch.Tensor], edges: torch.Tensor) -> list[torch.Tensor]:
    """[largest |x|, zeros, below fp16's smallest subnormal, within, beyond fp16's max] in one pass."""
    a = ref[0].abs() if len(ref) == 1 else torch.cat([t.abs().flatten() for t in ref])
    counts = torch.bincount(torch.bucketize(a.flatten(), edges), minlength=4).float()
    return [a.amax(), *counts.unbind()]


def _metrics(group: int, raw: list[float]) -> dict[str, float]:
    """A hook's raw values, as diagnosis.METRICS."""
    def flag(largest: float) -> float:
        return 0.0 if math.isfinite(largest) else 1.0

    if group in (IN, OUT):
        prefix = "in" if group == IN else "out"
        err = "in_rel_err" if group == IN else "rel_err"
        return {f"{prefix}_max": raw[0], f"{prefix}_nonfinite": flag(raw[1]), err: raw[2]}
    if group == REF:
        largest, zeros, under, within, over = raw
        total = zeros + under + within + over
        return {"ref_out_max": largest, "ref_over_fraction": over / total if total else math.nan,
                "ref_under_fraction": under / (total - zeros) if total > zeros else 0.0}
    prefix = "grad_in" if group == GRAD_IN else "grad_out"
    return {f"{prefix}_max": raw[0], f"{prefix}_nonfinite": flag(raw[1])}


class XRay:
    """Hooks on every module of `model`; `mode` says which pass is running ("ref", "live", "off")."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.modules = [(n or ROOT, m) for n, m in model.named_modules()]
        self.order: list[int] = []  # module indices, in the order their forward first finished
        self._seen: set[int] = set()
        self.mode = "off"
        self._calls: dict[int, int] = {}
        self._stack: dict[int, list[int]] = {}
        self._ref_in: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._ref_out: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._slots: dict[tuple[int, int], list[torch.Tensor]] = {}  # (module, group) -> one vector per call
        self._edges: dict[torch.device, torch.Tensor] = {}
        self._handles = []
        for i, (_, module) in enumerate(self.modules):
            self._handles.append(module.register_forward_pre_hook(functools.partial(self._pre, i), with_kwargs=True))
            self._handles.append(module.register_forward_hook(functools.partial(self._post, i), with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def begin(self, mode: str) -> None:
        self.mode = mode
        self._calls.clear()

    # ------------------------------------------------------------------------------ the hooks
    def _put(self, i: int, group: int, values: list[torch.Tensor]) -> None:
        self._slots.setdefault((i, group), []).append(torch.stack(values))

    def _pre(self, i: int, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if self.mode == "off":
            return
        call = self._calls.get(i, 0)
        self._calls[i] = call + 1
        self._stack.setdefault(i, []).append(call)
        inputs = _floating(args) + _floating(kwargs)
        if not inputs:
            return
        if self.mode == "ref":
            self._ref_in[(i, call)] = [t.detach().float().clone() for t in inputs]
            return
        self._put(i, IN, [*_magnitudes(inputs), _rel_err(inputs, self._ref_in.pop((i, call), None))])
        for t in inputs:
            if t.requires_grad:
                t.register_hook(functools.partial(self._grad, i, GRAD_IN))

    def _post(self, i: int, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.mode == "off":
            return
        call = self._stack[i].pop() if self._stack.get(i) else 0
        if i not in self._seen:
            self._seen.add(i)
            self.order.append(i)
        outputs = _floating(output)
        if not outputs:
            return
        if self.mode == "ref":
            ref = [t.detach().float().clone() for t in outputs]
            self._ref_out[(i, call)] = ref
            device = ref[0].device
            if device not in self._edges:
                self._edges[device] = torch.tensor([0.0, FP16_MIN_SUBNORMAL, FP16_MAX], device=device)
            self._put(i, REF, _range_counts(ref, self._edges[device]))
            return
        self._put(i, OUT, [*_magnitudes(outputs), _rel_err(outputs, self._ref_out.pop((i, call), None))])
        for t in outputs:
            if t.requires_grad:
                t.register_hook(functools.partial(self._grad, i, GRAD_OUT))

    def _grad(self, i: int, group: int, grad: torch.Tensor) -> None:
        if grad is not None and grad.numel():
            self._put(i, group, _magnitudes([grad]))

    # ------------------------------------------------------------------------------ a step
    def end_step(self) -> list[tuple[float, ...]]:
        """This step's rows, one per module in `order`: a module called more than once keeps the
        largest of each value; everything is read in one transfer."""
        self._ref_in.clear()
        self._ref_out.clear()
        keys = list(self._slots)
        vectors = [v[0] if len(v) == 1 else torch.stack(v).amax(0) for v in (self._slots[k] for k in keys)]
        self._slots.clear()
        flat = torch.cat(vectors).tolist() if vectors else []
        table: dict[int, dict[str, float]] = {}
        offset = 0
        for (i, group) in keys:
            width = WIDTH[group]
            table.setdefault(i, {}).update(_metrics(group, flat[offset:offset + width]))
            offset += width
        return [tuple(table.get(i, {}).get(name, math.nan) for name in METRICS) for i in self.order]


def _device(text: str) -> torch.device:
    """The torch device, or a BadInputError saying why it is not one here."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise BadInputError(f"--device {text!r}: not a torch device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            have = f"this machine has {count} CUDA device(s)" if count else "no CUDA device is usable here"
            raise BadInputError(f"--device {text}: {have}; use --device cpu or an existing cuda:N")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"--device {text}: MPS is not available here; use --device cpu")
    return device


def run_diagnosis(spec: DiagnoseSpec, emit: Emit) -> Diagnosis:
    """Train `spec.steps` steps of the workload under the X-ray. Raises WorkloadError/BadInputError
    for a workload that breaks the contract or islands that name no module."""
    workload = load(spec.workload)
    device = _device(spec.device)
    torch.manual_seed(spec.seed)
    model = workload.build_model().to(device)
    model.train()
    batches = []
    for _ in range(min(spec.steps, MAX_DISTINCT_BATCHES)):
        batch = workload.make_batch(spec.batch_size, device)
        check_batch(workload.label, batch, device)
        batches.append(batch)
    amp = MixedPrecision(spec.dtype, device.type, init_scale=spec.init_scale, growth_interval=spec.growth_interval,
                         fp32_modules=spec.fp32_modules)
    amp.prepare(model)
    islands = amp.islands
    optimizer = workload.build_optimizer(model.parameters())
    xray = XRay(model)
    rows, losses, ref_losses, scales = [], [], [], []
    try:
        for step in range(spec.steps):
            batch = batches[step % len(batches)]
            if amp.scaler.is_enabled():
                scales.append(float(amp.scaler.get_scale()))
            buffers = {name: b.detach().clone() for name, b in model.named_buffers()}  # BatchNorm's statistics
            xray.begin("ref")
            with torch.no_grad(), tf32.scoped(False):
                torch.manual_seed(spec.seed + step)
                ref_losses.append(float(workload.loss_fn(model, batch)))
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
            xray.begin("live")
            with tf32.scoped(False):
                torch.manual_seed(spec.seed + step)
                with amp.autocast():
                    loss = workload.loss_fn(model, batch)
                if step == 0:
                    check_loss(workload.label, loss)
                amp.backward(loss)
            xray.begin("off")
            amp.step(optimizer)
            losses.append(float(loss.detach()))
            rows.append(tuple(xray.end_step()))
            emit({"event": "step", "phase": "diagnose", "index": step})
    finally:
        xray.remove()
    width = len(xray.order)
    rows = [tuple(list(r) + [tuple([math.nan] * len(METRICS))] * (width - len(r))) for r in rows]
    notes = []
    if islands:
        notes.append(f"ran with {len(islands)} fp32 island(s): {', '.join(islands)}")
    return Diagnosis(
        workload=spec.workload, dtype=spec.dtype, batch_size=spec.batch_size, device=str(device), steps=spec.steps,
        modules=tuple(xray.modules[i][0] for i in xray.order),
        module_types=tuple(type(xray.modules[i][1]).__name__ for i in xray.order),
        values=tuple(rows), losses=tuple(losses), ref_losses=tuple(ref_losses), scales=tuple(scales),
        fp32_modules=tuple(islands), notes=tuple(notes),
    )
