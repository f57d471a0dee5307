"""The numerics X-ray's findings: per-module statistics of a few training steps, the culprits
ranked, the advice. Plain data, JSON both ways; no torch here (harness/xray.py measures).

For every module (named as in `model.named_modules()`, the root as "(model)") and every step:

| metric               | what                                                                           |
|----------------------|--------------------------------------------------------------------------------|
| in_max, out_max      | largest finite |value| of its floating inputs / outputs in the reduced run      |
| in_nonfinite, ...    | 1 if any input / output element was inf or NaN                                |
| ref_out_max          | largest |value| of its output in the fp32 run of the same weights and batch    |
| ref_over_fraction    | fraction of those fp32 output elements beyond fp16's max (65504)              |
| ref_under_fraction   | fraction of non-zero fp32 output elements below fp16's smallest subnormal     |
| rel_err, in_rel_err  | relative error (L2) of its output / input against the fp32 run                 |
| grad_out_max, ...    | largest finite |gradient| flowing into it (w.r.t. its output) / out of it      |
|                      | (w.r.t. its input), at the loss scale for fp16; *_nonfinite as above           |
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .dtypes import DEFAULT_GROWTH_INTERVAL, DEFAULT_INIT_SCALE, FP16_MAX, Dtype
from .jsonio import check_fields

DIAGNOSIS_SCHEMA_VERSION = 1
ROOT = "(model)"  # how the model itself is named (named_modules() calls it "")
METRICS: tuple[str, ...] = (
    "in_max", "in_nonfinite", "out_max", "out_nonfinite", "ref_out_max", "ref_over_fraction", "ref_under_fraction",
    "rel_err", "in_rel_err", "grad_out_max", "grad_out_nonfinite", "grad_in_max", "grad_in_nonfinite",
)
INDEX = {name: i for i, name in enumerate(METRICS)}
# A module "drifts" when its output's relative error exceeds its input's by this many unit
# roundoffs of the dtype (bf16: 2^-8, fp16: 2^-11): one rounding per op, a few ops per module;
# and when it at least doubles the error it was given (a module downstream of a culprit carries
# the culprit's error on, a little amplified: that is not its own).
DRIFT_ROUNDOFFS = 16
DRIFT_GROWTH = 2.0
UNIT_ROUNDOFF = {Dtype.BF16: 2.0**-8, Dtype.FP16: 2.0**-11}
MAX_CULPRITS = 10


DEFAULT_STEPS = 10


@dataclass(frozen=True)
class DiagnoseSpec:
    """What to X-ray: the workload at one dtype and batch size, for `steps` training steps."""

    workload: str  # absolute path of the model.py
    dtype: Dtype
    batch_size: int
    device: str = "cpu"
    steps: int = DEFAULT_STEPS
    init_scale: float = DEFAULT_INIT_SCALE
    growth_interval: int = DEFAULT_GROWTH_INTERVAL
    seed: int = 0
    fp32_modules: tuple[str, ...] = ()  # islands to run with (to check that they fix it)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "dtype": self.dtype.value, "fp32_modules": list(self.fp32_modules)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiagnoseSpec:
        return cls(**{**data, "dtype": Dtype(data["dtype"]), "fp32_modules": tuple(data.get("fp32_modules", ()))})


def _number(x: float) -> str:
    return f"{x:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


@dataclass(frozen=True)
class Culprit:
    module: str  # qualified name as in named_modules()
    module_type: str
    kind: str  # "forward overflow" | "forward non-finite" | "backward overflow" | "drift"
    passes: str  # "forward" | "backward"
    step: int  # the first step it showed (1-based)
    steps_seen: int  # in how many of the steps
    evidence: str
    score: float  # ranking within its kind: higher is more likely

    @property
    def advice(self) -> str:
        if self.module == ROOT:  # no submodule to keep in fp32: the arithmetic is in forward() itself
            return (f"the model's own forward(), outside any submodule: {self.evidence}; move that arithmetic into "
                    "a submodule to keep it in fp32, or train in bf16 (fp32's range) or fp32")
        return f"keep `{self.module}` in fp32: {self.evidence}"

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "module_type": self.module_type, "kind": self.kind, "pass": self.passes,
                "step": self.step, "steps_seen": self.steps_seen, "evidence": self.evidence, "advice": self.advice}


@dataclass(frozen=True)
class Diagnosis:
    workload: str
    dtype: Dtype
    batch_size: int
    device: str
    steps: int
    modules: tuple[str, ...]  # in the order their forward first finished (children before parents)
    module_types: tuple[str, ...]
    values: tuple[tuple[tuple[float, ...], ...], ...]  # [step][module][metric]; NaN = not measured
    losses: tuple[float, ...] = ()  # the reduced run's, per step
    ref_losses: tuple[float, ...] = ()  # the fp32 run's of the same weights and batch
    scales: tuple[float, ...] = ()  # the loss scale each step ran at (fp16)
    fp32_modules: tuple[str, ...] = ()  # islands the run already had
    notes: tuple[str, ...] = ()
    schema_version: int = DIAGNOSIS_SCHEMA_VERSION

    # ------------------------------------------------------------------------------ reading
    def value(self, step: int, module: int, metric: str) -> float:
        return self.values[step][module][INDEX[metric]]

    def series(self, module: int, metric: str) -> list[float]:
        return [self.value(s, module, metric) for s in range(len(self.values))]

    @property
    def finite(self) -> bool:
        """Every loss of the reduced run was finite."""
        return bool(self.losses) and all(math.isfinite(x) for x in self.losses)

    def _depth(self, name: str) -> int:
        return 0 if name == ROOT else name.count(".") + 1

    def _is_ancestor(self, a: str, b: str) -> bool:
        return a != b and (a == ROOT or b.startswith(a + "."))

    # ---------------------------------------------------------------------------- culprits
    def culprits(self) -> list[Culprit]:
        """Most likely first: where the forward pass first produced inf/NaN, then where the
        backward pass did (persisting past the GradScaler's backoff), then the modules that
        drift from fp32 by far more than their inputs do."""
        return list(self._ranked)

    @functools.cached_property
    def _ranked(self) -> tuple[Culprit, ...]:
        return tuple((self._forward() + self._backward() + self._drift())[:MAX_CULPRITS])

    @property
    def fp32_nonfinite_step(self) -> int | None:
        """The first step (1-based) whose fp32 reference loss was inf/NaN: the model fails in
        fp32 too, so no precision setting or island is the fix. None when fp32 stayed finite."""
        bad = [i + 1 for i, x in enumerate(self.ref_losses) if not math.isfinite(x)]
        return bad[0] if bad else None

    def advised_islands(self) -> tuple[str, ...]:
        """The modules to keep in fp32: every culprit where inf/NaN starts (forward or backward);
        when there is none, the module that drifts most. Only modules that can be kept in fp32:
        never the model itself (ROOT: its own forward, outside any submodule; keeping all of it in
        fp32 is fp32 training), and nothing when fp32 itself is non-finite."""
        if self.fp32_nonfinite_step is not None:
            return ()
        culprits = [c for c in self.culprits() if c.module != ROOT]
        breaking = [c.module for c in culprits if c.kind != "drift"]
        return tuple(dict.fromkeys(breaking or [c.module for c in culprits[:1]]))

    def _forward(self) -> list[Culprit]:
        origins: dict[int, list[int]] = {}
        for s in range(len(self.values)):
            for m in range(len(self.modules)):  # finish order: the innermost module first
                if self.value(s, m, "out_nonfinite") == 1 and self.value(s, m, "in_nonfinite") != 1:
                    origins.setdefault(m, []).append(s)
                    break
        out = []
        for m, steps in origins.items():
            s = steps[0]
            ref_out, inp = self.value(s, m, "ref_out_max"), self.value(s, m, "in_max")
            if self.dtype is Dtype.FP16 and inp > FP16_MAX:
                kind, why = "forward overflow", (f"its input reaches {_number(inp)} > 65504 at step {s + 1} "
                                                 "(inf once autocast casts it to fp16)")
            elif self.dtype is Dtype.FP16 and ref_out > FP16_MAX:
                kind, why = "forward overflow", f"its forward output reaches {_number(ref_out)} > 65504 at step {s + 1}"
            else:
                kind, why = "forward non-finite", (f"its forward output turns inf/NaN at step {s + 1} while its "
                                                   f"inputs are finite (fp32 reaches {_number(ref_out)})")
            out.append(Culprit(self.modules[m], self.module_types[m], kind, "forward", s + 1, len(steps),
                               why + self._seen(len(steps)), len(steps) / len(self.values)))
        return sorted(out, key=lambda c: (-c.score, c.step))

    def _backward(self) -> list[Culprit]:
        """Modules whose input gradient is non-finite while the gradient into them is finite. At
        fp16's first steps an overflow is GradScaler's business (it backs off and skips the
        step): an origin counts once it persists to the last step or shows at a scale <= 1."""
        n = len(self.values)
        origins: dict[int, list[int]] = {}
        for s in range(n):
            for m in range(len(self.modules)):
                if self.value(s, m, "grad_in_nonfinite") == 1 and self.value(s, m, "grad_out_nonfinite") == 0 \
                        and self.value(s, m, "out_nonfinite") != 1:
                    origins.setdefault(m, []).append(s)
        out = []
        for m, steps in origins.items():
            low_scale = any(self.scales and self.scales[s] <= 1 for s in steps)
            if not (steps[-1] == n - 1 and len(steps) >= max(2, n // 2)) and not low_scale:
                continue  # transient: the scaler's backoff dealt with it
            s = steps[0]
            scale = f" at loss scale {_number(self.scales[s])}" if self.scales else ""
            why = (f"its input gradient turns inf/NaN at step {s + 1} while the gradient into it is finite "
                   f"(largest {_number(self.value(s, m, 'grad_out_max'))}{scale})")
            out.append(Culprit(self.modules[m], self.module_types[m], "backward overflow", "backward", s + 1,
                               len(steps), why + self._seen(len(steps)), len(steps) / n + m / 1e6))
        # several origins in one step: the one deepest in the forward order runs first backward
        return sorted(out, key=lambda c: -c.score)

    def _drift(self) -> list[Culprit]:
        floor = DRIFT_ROUNDOFFS * UNIT_ROUNDOFF.get(self.dtype, 2.0**-11)
        own: dict[int, tuple[float, int, int]] = {}  # module -> (largest own drift, its step, steps above floor)
        for m in range(len(self.modules)):
            best, at, seen = 0.0, 0, 0
            for s in range(len(self.values)):
                err, inp = self.value(s, m, "rel_err"), self.value(s, m, "in_rel_err")
                if not math.isfinite(err):
                    continue
                inp = inp if math.isfinite(inp) else 0.0
                d = err - inp
                if d > floor and err >= DRIFT_GROWTH * inp:
                    seen += 1
                    if d > best:
                        best, at = d, s
            if seen:
                own[m] = (best, at, seen)
        # a parent drifts because a child does: keep the child unless the parent adds most of it
        names = {self.modules[m]: m for m in own}
        keep = [m for m in own if not any(self._is_ancestor(self.modules[m], other)
                                          and own[names[other]][0] >= 0.5 * own[m][0] for other in names)]
        out = []
        for m in keep:
            d, s, seen = own[m]
            err = self.value(s, m, "rel_err")
            why = (f"its output differs from fp32 by {err:.1%} at step {s + 1}, {d:.1%} more than its input does "
                   f"(the {self.dtype} roundoff is {UNIT_ROUNDOFF.get(self.dtype, 0):.2%})")
            out.append(Culprit(self.modules[m], self.module_types[m], "drift", "forward", s + 1, seen,
                               why + self._seen(seen), d))
        return sorted(out, key=lambda c: -c.score)

    def _seen(self, k: int) -> str:
        n = len(self.values)
        return "" if n <= 1 else f"; in {k} of {n} steps"

    # ---------------------------------------------------------------------------------- JSON
    def to_dict(self, *, with_values: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version, "workload": self.workload, "dtype": self.dtype.value,
            "batch_size": self.batch_size, "device": self.device, "steps": self.steps,
            "finite": self.finite, "losses": _json_floats(self.losses), "ref_losses": _json_floats(self.ref_losses),
            "scales": list(self.scales), "fp32_modules": list(self.fp32_modules), "notes": list(self.notes),
            "culprits": [c.to_dict() for c in self.culprits()],
            "modules": list(self.modules), "module_types": list(self.module_types), "metrics": list(METRICS),
        }
        if with_values:
            out["values"] = [[_json_floats(row) for row in step] for step in self.values]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        if data.get("schema_version") != DIAGNOSIS_SCHEMA_VERSION:
            raise ValueError(f"diagnosis schema_version {data.get('schema_version')!r}, "
                             f"expected {DIAGNOSIS_SCHEMA_VERSION}")
        check_fields(_Saved, {k: data[k] for k in _SAVED_FIELDS if k in data}, "diagnosis")
        values = tuple(tuple(tuple(math.nan if v is None else float(v) for v in row) for row in step)
                       for step in data["values"])
        if any(len(step) != len(data["modules"]) or any(len(row) != len(METRICS) for row in step) for step in values):
            raise ValueError("diagnosis.values: not one row of every metric per module and step")
        return cls(workload=data["workload"], dtype=Dtype(data["dtype"]), batch_size=data["batch_size"],
                   device=data["device"], steps=data["steps"], modules=tuple(data["modules"]),
                   module_types=tuple(data["module_types"]), values=values,
                   losses=_floats(data.get("losses", ())), ref_losses=_floats(data.get("ref_losses", ())),
                   scales=tuple(data.get("scales", ())), fp32_modules=tuple(data.get("fp32_modules", ())),
                   notes=tuple(data.get("notes", ())))


@dataclass(frozen=True)
class _Saved:
    """The saved fields' types, for check_fields."""

    workload: str
    dtype: str
    batch_size: int
    device: str
    steps: int
    modules: Sequence[str]
    module_types: Sequence[str]
    values: Sequence[Sequence[Sequence[float | None]]]
    losses: Sequence[float | None] = ()
    ref_losses: Sequence[float | None] = ()
    scales: Sequence[float] = ()
    fp32_modules: Sequence[str] = ()
    notes: Sequence[str] = ()


_SAVED_FIELDS = tuple(f for f in _Saved.__dataclass_fields__)


def _json_floats(values: Sequence[float]) -> list[float | None]:
    """JSON has no inf or NaN: a non-finite value is null (a loss: it was not finite)."""
    return [v if math.isfinite(v) else None for v in values]


def _floats(values: Sequence[float | None]) -> tuple[float, ...]:
    return tuple(math.nan if v is None else float(v) for v in values)
