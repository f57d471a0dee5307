"""The recommendation a tune run writes, and the object training code imports.

    rec = Recommendation.load("reports/<run>/recommendation.json")   # JSON only: never runs code
    scaler = rec.grad_scaler()
    with rec.autocast():
        loss = loss_fn(model, batch)
    scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import levers as lever_registry
from . import tf32 as tf32_mode
from .distributed.policy import COMMS, DDP_HOOKS, Parallel, param_dtype
from .dtypes import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_GROWTH_FACTOR,
    DEFAULT_GROWTH_INTERVAL,
    DEFAULT_INIT_SCALE,
    Dtype,
    torch_dtype,
)
from .errors import BadInputError
from .jsonio import check_depth, check_fields, loads, read_document, write_atomic
from .levers.islands import islands_of, with_old_islands
from .limits import MAX_BATCH_SIZE

RECOMMENDATION_SCHEMA_VERSION = 6
# 1: before `evidence` and `machine_busy`; 2: before `fp32_modules`; 3: before `distributed`; 4: before `levers`;
# 5: the fp32 islands in `fp32_modules`, not yet the islands lever. Read with those absent (or moved).
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4, 5, 6)
ISLANDS_FIELD_UNTIL = 5  # the last version with a `fp32_modules` field


DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:[0-9]{1,3})?")


class HardwareMismatchWarning(UserWarning):
    """The recommendation was tuned on other hardware than the one it is used on."""


@dataclass(frozen=True)
class GradScalerConfig:
    """Mirrors torch.amp.GradScaler's arguments."""

    enabled: bool
    init_scale: float = DEFAULT_INIT_SCALE
    growth_factor: float = DEFAULT_GROWTH_FACTOR
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR
    growth_interval: int = DEFAULT_GROWTH_INTERVAL


@dataclass(frozen=True)
class EvidenceFigure:
    """One figure of `Recommendation.evidence` as saved: what loading checks it against."""

    config: str
    dtype: str
    batch_size: int
    samples_per_s: float
    trials: tuple[int, ...]  # numbers in trials.jsonl


EVIDENCE_FIGURES = ("recommended", "fp32_best", "fp32_same_batch")  # "recommended" is always there


def _check_evidence(evidence: Any, where: str) -> None:
    """`evidence` (parsed JSON, already known to be an object or null) against its schema."""
    if evidence is None:
        return
    unknown = set(evidence) - {"confirmed", *EVIDENCE_FIGURES}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    if not isinstance(evidence.get("confirmed", False), bool):
        raise ValueError(f"{where}.confirmed: expected bool, got {evidence['confirmed']!r:.40}")
    if evidence.get("recommended") is None:
        raise ValueError(f"{where}.recommended: missing")
    for name in EVIDENCE_FIGURES:
        figure = evidence.get(name)
        if figure is not None:
            check_fields(EvidenceFigure, figure, f"{where}.{name}", finite=True)
            if figure["samples_per_s"] < 0 or any(n < 1 for n in figure["trials"]):
                raise ValueError(f"{where}.{name}: samples_per_s must be >= 0 and trial numbers >= 1")


@dataclass(frozen=True)
class Measured:
    samples_per_s: float
    speedup_vs_fp32: float | None = None  # vs fp32 at the same batch size, in the same interleaved rounds
    peak_memory_bytes: int | None = None
    speedup_vs_best_fp32: float | None = None  # vs the best fp32 configuration (any batch), same rounds
    # the levers' one-time cost (a compile: seconds, cold cache and warm), and the optimizer steps
    # after which it has paid for itself against the same configuration without those levers
    one_time_s: float | None = None
    one_time_warm_s: float | None = None
    break_even_steps: int | None = None
    train_steps: int | None = None  # the planned run the decision weighed the one-time cost against


@dataclass(frozen=True)
class Distributed:
    """How the recommendation was measured across ranks (tune --parallel): the strategy, the
    ranks, and what the gradients are reduced in. The micro-batch and accumulation are the
    recommendation's own batch_size and grad_accumulation_steps (per rank)."""

    parallel: str  # ddp | fsdp2
    world_size: int
    backend: str  # gloo | nccl
    comm: str  # gradients reduced in: fp32 | fp16 | bf16
    global_batch: int  # world_size x batch_size x grad_accumulation_steps
    comm_hook: str | None = None  # ddp: the hook in torch.distributed.algorithms.ddp_comm_hooks.default_hooks
    param_dtype: str | None = None  # fsdp2: MixedPrecisionPolicy(param_dtype=...)
    reduce_dtype: str | None = None  # fsdp2: MixedPrecisionPolicy(reduce_dtype=...)

    @classmethod
    def of(cls, parallel: str, world_size: int, backend: str, comm: str, dtype: Dtype, batch_size: int,
           grad_accumulation_steps: int) -> Distributed:
        strategy = Parallel(parallel)
        fsdp = strategy is Parallel.FSDP2
        return cls(strategy.value, world_size, backend, comm, world_size * batch_size * grad_accumulation_steps,
                   comm_hook=DDP_HOOKS.get(comm) if not fsdp else None,
                   param_dtype=param_dtype(dtype).value if fsdp else None, reduce_dtype=comm if fsdp else None)

    def problems(self, rec: Recommendation) -> list[str]:
        """What does not fit: the facts in distributed/policy.py, and the batch arithmetic."""
        try:
            strategy = Parallel(self.parallel)
        except ValueError:
            return [f"distributed.parallel {self.parallel[:20]!r}: expected ddp or fsdp2"]
        expected = Distributed.of(self.parallel, self.world_size, self.backend, self.comm, rec.dtype, rec.batch_size,
                                  rec.grad_accumulation_steps) if self.comm in COMMS[strategy] else None
        out = []
        if self.backend not in ("gloo", "nccl"):
            out.append("distributed.backend must be gloo or nccl")
        if not 1 <= self.world_size <= 1 << 20:
            out.append("distributed.world_size must be between 1 and 2^20")
        if expected is None:
            out.append(f"distributed.comm must be one of {', '.join(COMMS[strategy])} under {strategy}")
        elif self != expected:
            out.append(f"distributed: global_batch, comm_hook, param_dtype and reduce_dtype must follow from the rest "
                       f"(world x batch x accumulation = {expected.global_batch}; hooks {DDP_HOOKS})")
        return out


@dataclass(frozen=True)
class Recommendation:
    dtype: Dtype  # fp32 | tf32 | fp16 | bf16
    batch_size: int  # micro-batch
    grad_accumulation_steps: int
    scaler: GradScalerConfig  # "grad_scaler" in JSON; the name grad_scaler is the method below
    tf32: bool  # allow TF32 matmuls for the fp32 parts
    device: str  # the torch device it was tuned on ("cuda:0", "cpu")
    hardware: Mapping[str, Any]  # fingerprint: device name, kind, compute capability, torch version
    measured: Measured
    why: str = ""
    workload: str = ""
    created_at: str = ""
    notes: tuple[str, ...] = ()
    # The trials the figures rest on: {"confirmed": bool, "recommended" | "fp32_best" | "fp32_same_batch":
    # an EvidenceFigure as a dict, or None}
    evidence: Mapping[str, Any] | None = None
    machine_busy: str | None = None  # set when the machine drifted or was loaded while measuring
    distributed: Distributed | None = None  # tuned under torchrun (tune --parallel); None: one process
    # the tuning levers' values, defaults left out ({"compile": "default"}): MixedPrecision applies them
    levers: Mapping[str, str] = field(default_factory=dict)
    schema_version: int = RECOMMENDATION_SCHEMA_VERSION

    @property
    def fp32_modules(self) -> tuple[str, ...]:
        """Modules kept in fp32 inside autocast (names as in named_modules()): the islands lever."""
        return islands_of(self.levers)

    @property
    def device_type(self) -> str:
        """"cuda", "cpu", "mps": the device without its index, as torch.autocast and GradScaler take it."""
        return self.device.split(":")[0]

    # ---------------------------------------------------------------------------- use in training
    @contextlib.contextmanager
    def autocast(self, device_type: str | None = None) -> Iterator[None]:
        """Autocast to the recommended dtype (no-op for fp32/tf32). When the recommendation carries
        TF32, it is switched on process-wide (tf32.enable) and stays on: the trials measured it on
        for the backward pass and the optimizer too, as MixedPrecision and the snippets set it."""
        import torch

        if self.tf32:
            tf32_mode.enable()
        with torch.autocast(device_type or self.device_type, dtype=torch_dtype(self.dtype),
                            enabled=self.dtype.autocasts):
            yield

    def grad_scaler(self, device_type: str | None = None):
        """A torch.amp.GradScaler configured as recommended (disabled unless fp16)."""
        import torch

        cfg = self.scaler
        return torch.amp.GradScaler(
            device_type or self.device_type, init_scale=cfg.init_scale, growth_factor=cfg.growth_factor,
            backoff_factor=cfg.backoff_factor, growth_interval=cfg.growth_interval, enabled=cfg.enabled,
        )

    def mixed_precision(self, **overrides: Any):
        """A runtime.MixedPrecision helper (autocast, scaler, accumulation, clipping, statistics) as
        recommended; keyword overrides such as max_grad_norm=1.0 or device_type="cuda" win."""
        from .runtime import MixedPrecision

        return MixedPrecision.from_recommendation(self, **overrides)

    def prepare(self, model, device_type: str | None = None):
        """`model` made ready to train as recommended: the fp32 islands and the levers (torch.compile
        at the tuned mode...) installed; returns the model to train (see MixedPrecision.prepare)."""
        return self.mixed_precision(**({"device_type": device_type} if device_type else {})).prepare(model)

    # -------------------------------------------------------------------------------- JSON form
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out = {("grad_scaler" if k == "scaler" else k): v for k, v in out.items()}
        out["dtype"] = self.dtype.value
        out["hardware"] = dict(self.hardware)
        out["notes"] = list(self.notes)
        out["levers"] = dict(self.levers)
        out["evidence"] = dict(self.evidence) if self.evidence is not None else None
        return out

    def trials(self, figure: str = "recommended") -> tuple[int, ...]:
        """Trial numbers a figure rests on ("recommended", "fp32_best", "fp32_same_batch"); () if unknown."""
        entry = (self.evidence or {}).get(figure)
        return tuple(entry["trials"]) if isinstance(entry, Mapping) else ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "recommendation") -> Recommendation:
        if not isinstance(data, Mapping):
            raise BadInputError(f"{origin}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            newer = isinstance(version, int) and version > RECOMMENDATION_SCHEMA_VERSION
            raise BadInputError(
                f"{origin}: schema_version {version!r}, this amp-advisor reads {RECOMMENDATION_SCHEMA_VERSION}"
                + ("; upgrade amp-advisor to read it" if newer else "")
            )
        try:
            known = {("grad_scaler" if f.name == "scaler" else f.name) for f in fields(cls)}
            if version <= ISLANDS_FIELD_UNTIL:
                known.add("fp32_modules")
            unknown = set(data) - known
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            data = _islands_as_lever(data, version)
            as_fields = {("scaler" if k == "grad_scaler" else k): v for k, v in data.items()}
            check_fields(cls, as_fields, "recommendation", finite=True)
            _check_evidence(data.get("evidence"), "recommendation.evidence")
            rec = cls(
                **{
                    **{k: v for k, v in data.items() if k != "grad_scaler"},
                    "dtype": Dtype(data["dtype"]),
                    "scaler": GradScalerConfig(**data["grad_scaler"]),
                    "measured": Measured(**data["measured"]),
                    "hardware": dict(data["hardware"]),
                    "notes": tuple(data.get("notes", ())),
                    "levers": dict(data.get("levers") or {}),
                    "evidence": dict(data["evidence"]) if data.get("evidence") is not None else None,
                    "distributed": Distributed(**data["distributed"]) if data.get("distributed") else None,
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{origin}: not a valid recommendation ({type(exc).__name__}: {exc})") from None
        rec._validate(origin)
        return rec

    def _validate(self, origin: str) -> None:
        """Ranges, beyond the types from_dict checked: what the snippets and torch will be given."""
        problems = []
        s = self.scaler
        if not self.dtype.is_training:
            problems.append(f"dtype {self.dtype} is not a training dtype")
        if not (1 <= self.batch_size <= MAX_BATCH_SIZE and 1 <= self.grad_accumulation_steps <= MAX_BATCH_SIZE):
            problems.append(f"batch_size and grad_accumulation_steps must be between 1 and {MAX_BATCH_SIZE}")
        if s.enabled and not self.dtype.needs_grad_scaler:
            problems.append("grad_scaler.enabled is only meaningful for fp16")
        if not 0 < s.init_scale <= 2.0**64:
            problems.append("grad_scaler.init_scale must be > 0 and <= 2^64")
        if not (s.growth_factor > 1 and 0 < s.backoff_factor < 1 and s.growth_interval >= 1):
            problems.append("grad_scaler needs growth_factor > 1, 0 < backoff_factor < 1, growth_interval >= 1")
        if not DEVICE_PATTERN.fullmatch(self.device):
            problems.append(f"device {self.device[:40]!r} is not a torch device (cpu, cuda, cuda:N, mps)")
        if any(not isinstance(k, str) or not (v is None or isinstance(v, (str, int, float, bool)))
               for k, v in self.hardware.items()):
            problems.append("hardware must map names to plain values")
        problems += lever_registry.problems(dict(self.levers), self.dtype, self.device_type)
        if self.measured.samples_per_s < 0:
            problems.append("measured.samples_per_s must be >= 0")
        if self.distributed is not None:
            problems += self.distributed.problems(self)
        if problems:
            raise BadInputError(f"{origin}: " + "; ".join(problems))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a reader never sees half a file."""
        return write_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, *, check_hardware: bool = True) -> Recommendation:
        """Read and validate a recommendation.json. Warns when this machine differs from the tuned one."""
        path = Path(path)
        if path.is_dir():
            path = path / "recommendation.json"
        expected = "a recommendation.json written by `amp-advisor tune`, or the run directory holding it"
        text = read_document(path, expected=expected)
        try:
            data = _parse_toml(text, str(path)) if path.suffix == ".toml" else loads(text, str(path))
        except RecursionError:
            raise BadInputError(f"{path}: nested too deeply to be a file amp-advisor wrote") from None
        except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            kind = "TOML" if path.suffix == ".toml" else "JSON"
            raise BadInputError(f"{path}: corrupt recommendation file, not {kind} ({exc})") from None
        rec = cls.from_dict(data, origin=str(path))
        if check_hardware:
            rec.warn_if_other_hardware()
        return rec

    def warn_if_other_hardware(self) -> None:
        here = current_fingerprint(self.device)
        differs = {k: (v, here.get(k)) for k, v in self.hardware.items() if k in FINGERPRINT_KEYS and here.get(k) != v}
        if differs:
            shown = ", ".join(f"{k}: tuned {a!r}, here {b!r}" for k, (a, b) in differs.items())
            warnings.warn(f"this recommendation was tuned on other hardware ({shown}); re-run `amp-advisor tune`",
                          HardwareMismatchWarning, stacklevel=3)


def _islands_as_lever(data: Mapping[str, Any], version: int) -> Mapping[str, Any]:
    """A recommendation written before the islands were a lever (schema 2-5 `fp32_modules`), with
    them moved into `levers`, where they are checked like any lever's value."""
    if version > ISLANDS_FIELD_UNTIL or "fp32_modules" not in data:
        return data
    data = dict(data)
    names = data.pop("fp32_modules")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError("fp32_modules: expected a list of module names")
    levers = data.get("levers") or {}
    if names:
        if not isinstance(levers, Mapping):
            raise ValueError("levers: expected an object of lever names and values")
        data["levers"] = with_old_islands(levers, names)
    return data


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    """`amp-advisor show --format toml` output read back; TOML has no null, so absent = None."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    data = check_depth(tomllib.loads(text), origin)
    data.setdefault("hardware", {})
    return data


FINGERPRINT_KEYS = ("kind", "name", "compute_capability")


def fingerprint_of(device_profile) -> dict[str, Any]:
    """What identifies the hardware a recommendation is valid for (from a probe's DeviceProfile)."""
    ident = device_profile.identity
    return {
        "kind": device_profile.kind,
        "name": device_profile.name,
        "compute_capability": getattr(ident, "compute_capability", None),
        "memory_total_bytes": getattr(ident, "memory_total_bytes", None),
        "torch_cpu_capability": getattr(ident, "torch_cpu_capability", None),
    }


def current_fingerprint(device: str) -> dict[str, Any]:
    from .hardware import probe

    try:
        return fingerprint_of(probe(device).devices[0])
    except BadInputError:
        return {"kind": None, "name": None, "compute_capability": None}
