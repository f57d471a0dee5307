"""The tuning levers' registry: every question about a configuration's levers is answered here.

A configuration's levers are a mapping {lever name: value} without the defaults, held as a
sorted tuple of pairs where it must be hashable (Candidate). Adding a lever is adding a module
to this package (base.py says what it declares); the modules are found and registered on import.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..dtypes import Dtype
from ..errors import BadInputError
from .base import OFF, Fragment, Lever, Stage

__all__ = ["OFF", "Fragment", "Lever", "Stage", "Pairs", "register", "unregister", "registered", "names", "get",
           "canonical", "problems", "label", "install", "scope", "enable", "fragments", "offered",
           "first_step_allowance_s", "one_time", "observe", "reset", "repairs"]

Pairs = tuple[tuple[str, str], ...]
_REGISTRY: dict[str, Lever] = {}


def register(lever: Lever) -> Lever:
    """Add a lever (a module of this package does it on import; a test may do it for itself)."""
    if not lever.name.isidentifier():
        raise ValueError(f"lever name {lever.name!r} must be an identifier")
    _REGISTRY[lever.name] = lever
    return lever


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> tuple[Lever, ...]:
    """Every lever, in the order they change the model (Stage), then by name."""
    return tuple(sorted(_REGISTRY.values(), key=lambda lever: (lever.stage, lever.name)))


def names() -> tuple[str, ...]:
    return tuple(lever.name for lever in registered())


def get(name: str) -> Lever:
    if name not in _REGISTRY:
        raise BadInputError(f"unknown lever {name!r}: expected one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _items(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(levers.items()) if isinstance(levers, Mapping) else list(levers)


def canonical(levers: Mapping[str, str] | Iterable[tuple[str, str]], dtype: Dtype | None = None) -> Pairs:
    """Equal configurations made equal: defaults and values where the lever does not apply to
    `dtype` dropped, sorted by name. Unknown names are kept (problems() reports them)."""
    out = []
    for name, value in _items(levers):
        lever = _REGISTRY.get(name)
        if lever is not None and (value == lever.default or (dtype is not None and not lever.applies(dtype))):
            continue
        out.append((str(name), str(value)))
    return tuple(sorted(out))


def problems(levers: Mapping[str, Any], dtype: Dtype, device_type: str) -> list[str]:
    """What is wrong with a levers mapping from a spec or a loaded recommendation."""
    out = []
    for name, value in levers.items():
        lever = _REGISTRY.get(name)
        if lever is None:
            out.append(f"levers: unknown lever {str(name)[:40]!r} (known: {', '.join(sorted(_REGISTRY))})")
        elif (why := lever.check(value, device_type)) is not None:
            out.append(f"levers.{name}: {why}")
        elif not lever.applies(dtype) and value != lever.default:
            out.append(f"levers.{name}={value} does not apply to {dtype}")
    return out


def label(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    return " ".join(get(name).label(value) for name, value in canonical(levers) if name in _REGISTRY)


def _ordered(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[Lever, str]]:
    chosen = dict(canonical(levers))
    return [(lever, chosen[lever.name]) for lever in registered() if lever.name in chosen]


def install(model: Any, levers: Mapping[str, str] | Iterable[tuple[str, str]], device_type: str) -> Any:
    """The model with every lever installed, in stage order."""
    for lever, value in _ordered(levers):
        model = lever.install(model, value, device_type)
    return model


@contextlib.contextmanager
def scope(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for lever, value in _ordered(levers):
            stack.enter_context(lever.scope(value))
        yield


def enable(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    for lever, value in _ordered(levers):
        lever.enable(value)


def fragments(levers: Mapping[str, str] | Iterable[tuple[str, str]], framework: str, device_type: str, *,
              before: Stage | None = None, since: Stage | None = None) -> Fragment:
    """Every lever's part of one framework's snippet, merged in stage order; only the levers of
    the stages `before` a stage or `since` one, when asked (a snippet's wrapper goes between)."""
    merged = Fragment()
    for lever, value in _ordered(levers):
        if (before is not None and lever.stage >= before) or (since is not None and lever.stage < since):
            continue
        part = lever.fragment(framework, value, device_type)
        merged.imports += [line for line in part.imports if line not in merged.imports]
        merged.lines += part.lines
        merged.args += part.args
        merged.config.update(part.config)
    return merged


def repairs(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Pairs:
    """The levers of a configuration that repair its numerics (explore "repair": fp32 islands),
    which its plain form keeps; the others are its speed levers."""
    return tuple(pair for pair in canonical(levers) if pair[0] in _REGISTRY and get(pair[0]).explore == "repair")


def offered(device) -> dict[str, tuple[str, ...]]:
    """Each lever's values worth trying on `device` (levers with one value left out)."""
    out = {}
    for lever in registered():
        values = tuple(lever.values(device))
        if len(values) > 1:
            out[lever.name] = values
    return out


def first_step_allowance_s(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> float:
    return sum(lever.first_step_allowance_s for lever, _ in _ordered(levers))


def one_time(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Pairs:
    """The levers of a configuration whose first step holds a one-time cost (a compile)."""
    return tuple((lever.name, value) for lever, value in _ordered(levers) if lever.one_time_cost)


def observe(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, float]:
    return {f"{lever.name}.{key}": value for lever, _ in _ordered(levers) for key, value in lever.observe().items()}


def reset() -> None:
    for lever in registered():
        lever.reset()


def _discover() -> None:
    """Import every lever module of this package: each registers its lever."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_discover()
