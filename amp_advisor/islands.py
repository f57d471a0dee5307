"""fp32 islands: modules of a model that run in fp32 inside a mixed-precision forward pass.

    keep_in_fp32(model, ["encoder.layers.2.attn", "LayerNorm"])   # names as in named_modules(), or types

An island runs with autocast disabled and its floating inputs cast to fp32, so every op inside it
(its children included) computes in fp32. What it returns stays fp32: the next autocast op casts
it to the surrounding dtype where that op runs in reduced precision, and ops outside autocast's
lists promote. The gradient flowing back through the island's input casts is cast to the input's
dtype, as autocast's own casts are.

Islands are installed on the module objects (their `forward` is wrapped), so they hold for any
training loop or framework that calls the model: plain torch, Lightning, Accelerate, the HF
Trainer. Outside autocast (fp32 training, evaluation without autocast) a wrapped forward calls the
original directly.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import BadInputError

ISLAND_ATTRIBUTE = "_amp_advisor_fp32_island"  # set on a wrapped module: installing twice is a no-op
# a named_modules() name ("0" in a Sequential, "encoder.layers.2.attn") or a class name
MODULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


class _Fp32Forward:
    """A module's forward, run in fp32 when autocast is on (a class, not a closure: the model
    still pickles and deep-copies)."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        device_type = _device_type(args, kwargs)
        if device_type is None or not torch.is_autocast_enabled(device_type):
            return self.forward(*args, **kwargs)
        with torch.autocast(device_type, enabled=False):
            return self.forward(*_to_fp32(args), **_to_fp32(kwargs))


def _device_type(args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)):
            found = _device_type(value, {})
            if found is not None:
                return found
    return None


def _to_fp32(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, tuple):
        return tuple(_to_fp32(v) for v in value)
    if isinstance(value, list):
        return [_to_fp32(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    return value


def resolve(model: Any, modules: Iterable[Any]) -> list[tuple[str, Any]]:
    """The (qualified name, module) pairs `modules` names: each entry is a qualified name as in
    `model.named_modules()`, a module class, or a class name ("LayerNorm") matching every module
    of that class. An entry that matches nothing is a BadInputError naming the closest names."""
    named = list(model.named_modules())
    by_name = dict(named)
    out: dict[str, Any] = {}
    for entry in modules:
        if isinstance(entry, type):
            matches = [(n, m) for n, m in named if isinstance(m, entry)]
            label = entry.__name__
        elif isinstance(entry, str) and entry in by_name:
            matches = [(entry, by_name[entry])]
            label = entry
        elif isinstance(entry, str):
            matches = [(n, m) for n, m in named if type(m).__name__ == entry]
            label = entry
        else:
            raise BadInputError(f"fp32_modules: {entry!r} is neither a module name nor a module class")
        if not matches:
            candidates = [n for n, _ in named if n] + sorted({type(m).__name__ for _, m in named})
            close = difflib.get_close_matches(label, candidates, n=3, cutoff=0.5)
            hint = (f"; closest: {', '.join(close)}" if close
                    else f"; its modules include {', '.join(candidates[:5])}" if candidates else "")
            raise BadInputError(f"fp32_modules: {type(model).__name__} has no module named {label!r}{hint} "
                                "(names as in model.named_modules(), or a module class name)")
        out.update(matches)
    return list(out.items())


def keep_in_fp32(model: Any, modules: Iterable[Any]) -> list[str]:
    """Make the named modules (see `resolve`) fp32 islands; returns their qualified names."""
    chosen = resolve(model, modules)
    for _, module in chosen:
        if not getattr(module, ISLAND_ATTRIBUTE, False):
            module.forward = _Fp32Forward(module.forward)
            setattr(module, ISLAND_ATTRIBUTE, True)
    return [name for name, _ in chosen]


def installed(model: Any) -> list[str]:
    """The qualified names of `model`'s modules that are fp32 islands."""
    return [name for name, module in model.named_modules() if getattr(module, ISLAND_ATTRIBUTE, False)]


def release(model: Any) -> None:
    """Undo keep_in_fp32 on every module of `model`."""
    for module in model.modules():
        if getattr(module, ISLAND_ATTRIBUTE, False):
            del module.forward  # the instance attribute: the class's forward shows through again
            delattr(module, ISLAND_ATTRIBUTE)
