"""Peak rates of known devices, read from the TOML data in profiles/ (shipped as amp_advisor.profiles)."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..dtypes import Dtype
from ..errors import AdvisorError
from .model import PeakSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

SPEC_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class _Entry:
    patterns: tuple[re.Pattern[str], ...]
    spec: PeakSpec


def parse_gpu_specs(data: dict[str, Any], origin: str = "gpus.toml") -> tuple[_Entry, ...]:
    """Validate the TOML document and turn it into match entries (first match wins)."""
    if data.get("schema_version") != SPEC_SCHEMA_VERSION:
        raise AdvisorError(f"{origin}: schema_version must be {SPEC_SCHEMA_VERSION}")
    entries = []
    for i, raw in enumerate(data.get("gpu", [])):
        where = f"{origin}: gpu #{i + 1} ({raw.get('id', '?')})"
        try:
            tflops = {Dtype(k): float(v) for k, v in raw["peak_tflops"].items()}
            spec = PeakSpec(
                profile_id=raw["id"],
                name=raw["name"],
                tflops={d: tflops.get(d) for d in Dtype},
                source=raw["source"],
                read_via=raw.get("read_via"),
                note=raw.get("note"),
            )
            patterns = tuple(re.compile(p, re.IGNORECASE) for p in raw["match"])
        except (KeyError, ValueError, TypeError, re.error) as exc:
            raise AdvisorError(f"{where}: {type(exc).__name__}: {exc}") from None
        if not patterns:
            raise AdvisorError(f"{where}: `match` needs at least one pattern")
        entries.append(_Entry(patterns, spec))
    return tuple(entries)


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[_Entry, ...]:
    text = resources.files("amp_advisor.profiles").joinpath("gpus.toml").read_text(encoding="utf-8")
    return parse_gpu_specs(tomllib.loads(text))


def find_gpu_spec(name: str | None, entries: tuple[_Entry, ...] | None = None) -> PeakSpec | None:
    """The peak rates for a device called `name`, or None when it is not in the data."""
    if not name:
        return None
    for entry in entries if entries is not None else _bundled():
        if any(p.search(name) for p in entry.patterns):
            return entry.spec
    return None


def known_gpu_specs() -> tuple[PeakSpec, ...]:
    return tuple(e.spec for e in _bundled())
