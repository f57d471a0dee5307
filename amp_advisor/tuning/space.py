"""What the tuner may choose from, built from the probe's verdicts."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

from .. import levers as registry
from ..distributed.policy import FULL_COMM, Parallel, comms_for, dtype_rule
from ..dtypes import DEFAULT_GROWTH_INTERVAL, DEFAULT_INIT_SCALE, FP16_MAX, Dtype
from ..errors import BadInputError
from ..levers.islands import ISLANDS, islands_of, islands_value, with_old_islands
from ..limits import MAX_BATCH_SIZE

TUNABLE_DTYPES = (Dtype.FP32, Dtype.TF32, Dtype.BF16, Dtype.FP16)
# On a CPU throughput stops growing at small batches (measured here: the transformer example ran
# 42-54 samples/s at 8-64 and 33 at 128), while each step of a big batch costs seconds.
DEFAULT_BATCH_SIZES = {"cpu": (8, 16, 32, 64), "gpu": (8, 16, 32, 64, 128, 256, 512)}
DEFAULT_GROWTH_INTERVALS = (100, 500, DEFAULT_GROWTH_INTERVAL)
FP16_HEADROOM = 8.0  # the largest gradient times the scale stays 8x below fp16's maximum


def default_batch_sizes(device_profile) -> tuple[int, ...]:
    return DEFAULT_BATCH_SIZES["cpu" if device_profile.kind == "cpu" else "gpu"]


def describe_default_batch_sizes() -> str:
    """For --help: the same table the code uses."""
    return ", ".join(f"{','.join(map(str, sizes))} on {kind.upper()}" for kind, sizes in DEFAULT_BATCH_SIZES.items())


@dataclass(frozen=True, order=True)
class Candidate:
    dtype: Dtype
    batch_size: int
    init_scale: float = 0.0  # fp16 only; 0 elsewhere, so equal configurations compare equal
    growth_interval: int = 0
    comm: str = ""  # under --parallel: what gradients are reduced in (distributed/policy.py); "" on one process
    levers: registry.Pairs = ()  # the levers' values (levers/), defaults left out: levers.canonical

    def canonical(self) -> Candidate:
        """Equal configurations made equal: the scaler settings only matter for fp16; fp32 reduces
        its gradients in fp32 (it is the yardstick: "fp32 everywhere"); a lever's default value,
        or one where it does not apply to the dtype, is no value."""
        chosen = registry.canonical(self.levers, self.dtype)
        if self.dtype.needs_grad_scaler:
            return self if chosen == self.levers else dataclasses.replace(self, levers=chosen)
        comm = FULL_COMM if self.dtype is Dtype.FP32 and self.comm else self.comm
        return Candidate(self.dtype, self.batch_size, comm=comm, levers=chosen)

    @property
    def fp32_modules(self) -> tuple[str, ...]:
        """The fp32 islands (the islands lever) the X-ray advised: a repair of a numerics failure."""
        return islands_of(self.levers)

    @property
    def fp32_twin(self) -> Candidate:
        """fp32 at the same micro-batch (gradients reduced in fp32 too, no lever): what a speedup
        "at the same batch size" is measured against."""
        return Candidate(Dtype.FP32, self.batch_size, comm=self.comm).canonical()

    @property
    def plain(self) -> Candidate:
        """The same configuration without its speed levers (its islands kept: levers.repairs):
        what a lever's gain is measured against."""
        return dataclasses.replace(self, levers=registry.repairs(self.levers)).canonical()

    def with_lever(self, name: str, value: str) -> Candidate:
        return dataclasses.replace(self, levers=(*dict(self.levers, **{name: value}).items(),)).canonical()

    def with_islands(self, names: tuple[str, ...] = ()) -> Candidate:
        """The same configuration with these fp32 islands (none: without islands)."""
        return self.with_lever(ISLANDS, islands_value(names))

    @property
    def label(self) -> str:
        text = f"{self.dtype} bs={self.batch_size}"
        if self.dtype.needs_grad_scaler:
            text += f" scale=2^{math.log2(self.init_scale):g} growth={self.growth_interval}"
        if self.comm:
            text += f" reduce={self.comm}"
        if self.levers:
            text += " " + registry.label(self.levers)
        return text

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"dtype": self.dtype.value, "batch_size": self.batch_size,
                               "init_scale": self.init_scale, "growth_interval": self.growth_interval}
        if self.comm:
            out["comm"] = self.comm
        if self.levers:
            out["levers"] = [list(pair) for pair in self.levers]  # [name, value] pairs, as the field holds them
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        # a run directory written before the islands were a lever holds them in fp32_modules
        pairs = with_old_islands(((str(k), str(v)) for k, v in data.get("levers") or ()), data.get("fp32_modules"))
        return cls(Dtype(data["dtype"]), int(data["batch_size"]), float(data["init_scale"]),
                   int(data["growth_interval"]), str(data.get("comm", "")), tuple(sorted(pairs.items())))


@dataclass(frozen=True)
class SearchSpace:
    """What the hardware can run, and the one authority on batch sizes: which micro-batches are
    allowed (with a global batch: those that divide it, with gradient accumulation making up the
    rest), what lies between two of them, and where the baseline and the scouts run. Under
    --parallel a batch size is per rank: world size x micro-batch x accumulation = the global batch."""

    dtypes: tuple[Dtype, ...]
    batch_sizes: tuple[int, ...]  # the grid's micro-batch sizes (per rank), ascending
    init_scales: tuple[float, ...]
    growth_intervals: tuple[int, ...]
    global_batch: int | None = None
    comms: tuple[str, ...] = ()  # under --parallel: what gradients may be reduced in, fp32 first
    world_size: int = 1
    # each lever's values worth trying on this device, its default first (levers.offered)
    levers: tuple[tuple[Any, ...], ...] = ()  # (name, (values...)) pairs

    def lever_values(self, explore: str | None = None) -> dict[str, tuple[str, ...]]:
        """The space's levers and their values; `explore`: only those explored so ("grid", "leaders")."""
        return {name: values for name, values in self.levers
                if explore is None or registry.get(name).explore == explore}

    def dimensions(self) -> list[tuple[str, tuple]]:
        """What the search strategy searches: dtype, batch size, comm, and the grid levers; each a
        name and its choices (a point of them is made a Candidate by point_of)."""
        return [("dtype", tuple(d.value for d in self.dtypes)), ("batch_size", self.batch_sizes),
                ("comm", self.comms or ("",)), *self.lever_values("grid").items()]

    def point_of(self, values: dict) -> Candidate:
        """The candidate at a point of dimensions() (values by dimension name)."""
        chosen = tuple((name, str(values[name])) for name in self.lever_values("grid") if name in values)
        return self.point(Dtype(str(values["dtype"])), int(values["batch_size"]), str(values["comm"]), chosen)

    def coordinates(self, candidate: Candidate) -> list | None:
        """A candidate as a point of dimensions(), or None where it is not one (an edge bisection,
        a lever explored on the leaders)."""
        chosen = dict(candidate.levers)
        grid = self.lever_values("grid")
        if set(chosen) - set(grid):
            return None
        point = [candidate.dtype.value, candidate.batch_size, candidate.comm,
                 *(chosen.get(name, values[0]) for name, values in grid.items())]
        for (_, choices), value in zip(self.dimensions(), point, strict=True):
            if value not in choices:
                return None
        return point

    def allows(self, batch_size: int) -> bool:
        if batch_size < 1:
            return False
        per_step = batch_size * self.world_size
        return self.global_batch is None or (per_step <= self.global_batch and self.global_batch % per_step == 0)

    def grad_accum(self, batch_size: int) -> int:
        """Micro-batches per optimizer step, so that world x micro-batch x accumulation = the global batch."""
        if not self.allows(batch_size):
            raise ValueError(f"batch {batch_size} is not allowed here (global batch {self.global_batch})")
        return self.global_batch // (batch_size * self.world_size) if self.global_batch else 1

    @property
    def base_comm(self) -> str:
        """The comm of the baseline and the scouts: fp32 under --parallel, none on one process."""
        return self.comms[0] if self.comms else ""

    def between(self, low: int, high: int) -> int | None:
        """An allowed micro-batch strictly between low and high, nearest their middle; None if
        there is none. Without a global batch, sizes step by 8 where the gap allows (kernels like
        multiples of 8); with one, only its divisors keep the effective batch."""
        if self.global_batch is not None:
            sizes = [b for b in range(low + 1, high) if self.allows(b)]
        else:
            step = 8 if high - low > 8 else 1
            sizes = [b for b in range(low + 1, high) if b % step == 0]
        middle = (low + high) / 2
        return min(sizes, key=lambda b: (abs(b - middle), b)) if sizes else None

    @property
    def baseline_batch(self) -> int:
        """The fp32 baseline's size: the middle of the grid (smaller ones if it fails)."""
        return self.batch_sizes[len(self.batch_sizes) // 2]

    @property
    def fp16_scale(self) -> float:
        """fp16's init_scale in the speed trials: the seed (the middle of the choices around it).
        The scaler's settings do not change the speed; they are judged on numerics (the
        stability run), so the search measures fp16 at one setting."""
        return self.init_scales[len(self.init_scales) // 2]

    def point(self, dtype: Dtype, batch_size: int, comm: str | None = None, chosen: registry.Pairs = ()) -> Candidate:
        """The configuration the search measures for (dtype, batch, comm, levers): fp16 at
        fp16_scale and torch's default growth interval."""
        comm = self.base_comm if comm is None else comm
        if dtype.needs_grad_scaler:
            return Candidate(dtype, batch_size, self.fp16_scale, DEFAULT_GROWTH_INTERVAL, comm=comm,
                             levers=chosen).canonical()
        return Candidate(dtype, batch_size, comm=comm, levers=chosen).canonical()

    def with_init_scale_seed(self, seed: float) -> SearchSpace:
        """fp16's init_scale choices around the seed (from the baseline's largest gradient)."""
        scales = tuple(sorted({seed / 2**4, seed, min(seed * 2**4, 2.0**24)}))
        return dataclasses.replace(self, init_scales=scales)

    def candidates(self) -> list[Candidate]:
        """Every point that changes speed: dtype x batch size x comm x the grid levers, fp16 at one
        scaler setting (point()). The comms multiply every reduced precision's (fp32, the yardstick,
        reduces in fp32: a compressed all-reduce is a reduced precision, judged against it). The
        levers explored on the leaders are not points of the grid."""
        names = [name for name, _ in self.dimensions()]
        out = [self.point_of(dict(zip(names, values, strict=True)))
               for values in itertools.product(*(choices for _, choices in self.dimensions()))]
        return list(dict.fromkeys(out))  # fp32's comms are one: canonical() says so

    def to_dict(self) -> dict:
        return {"dtypes": [d.value for d in self.dtypes], "batch_sizes": list(self.batch_sizes),
                "init_scales": list(self.init_scales), "growth_intervals": list(self.growth_intervals),
                "global_batch": self.global_batch, "comms": list(self.comms), "world_size": self.world_size,
                "levers": [[name, list(values)] for name, values in self.levers]}

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        for key in ("dtypes", "batch_sizes", "init_scales", "growth_intervals"):
            if not data[key]:  # every point of a space has one of each: an empty list is not a space
                raise ValueError(f"the saved search space has no {key.replace('_', ' ')}")
        return cls(tuple(Dtype(d) for d in data["dtypes"]), tuple(data["batch_sizes"]),
                   tuple(float(s) for s in data["init_scales"]), tuple(data["growth_intervals"]),
                   data.get("global_batch"), tuple(data.get("comms") or ()), int(data.get("world_size") or 1),
                   tuple((str(k), tuple(map(str, v))) for k, v in data.get("levers") or ()))


def seeded_init_scale(max_abs_grad: float | None) -> float:
    """The largest power of two that keeps the largest fp32 gradient FP16_HEADROOM below fp16's max."""
    if not max_abs_grad or max_abs_grad <= 0 or not math.isfinite(max_abs_grad):
        return DEFAULT_INIT_SCALE  # torch's default when nothing was measured
    exponent = math.floor(math.log2(FP16_MAX / (max_abs_grad * FP16_HEADROOM)))
    return 2.0 ** max(0, min(24, exponent))


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise BadInputError(f"--batch-sizes {text!r}: expected comma-separated integers, e.g. 16,32,64") from None
    if not sizes:
        raise BadInputError(f"--batch-sizes {text!r}: empty; give sizes such as 16,32,64, or leave the option out "
                            "for the default")
    if sizes[0] < 1 or sizes[-1] > MAX_BATCH_SIZE:
        raise BadInputError(f"--batch-sizes {text!r}: batch sizes must be between 1 and {MAX_BATCH_SIZE}")
    return sizes


def build_space(device_profile, *, batch_sizes: tuple[int, ...] | None = None, global_batch: int | None = None,
                init_scale_seed: float = DEFAULT_INIT_SCALE, parallel: Parallel | None = None,
                world_size: int = 1, backend: str = "gloo",
                skip_levers: tuple[str, ...] = ()) -> tuple[SearchSpace, list[str]]:
    """The space on one device; under `parallel`, batch sizes per rank across `world_size` ranks,
    the dtypes the strategy admits and the comms `backend` can run; the levers' values for the
    device, less `skip_levers`."""
    notes = []
    dtypes = tuple(d for d in TUNABLE_DTYPES if device_profile.dtypes[d].supported)
    for d in TUNABLE_DTYPES:
        if d not in dtypes:
            notes.append(f"{d} left out: {device_profile.dtypes[d].why}")
    comms: tuple[str, ...] = ()
    if parallel is not None:
        ruled_out = {d: dtype_rule(parallel, d) for d in dtypes}
        notes += [why for why in ruled_out.values() if why]
        dtypes = tuple(d for d in dtypes if not ruled_out[d])
        comms, comm_notes = comms_for(parallel, backend)
        notes += comm_notes
    sizes = tuple(sorted(batch_sizes or default_batch_sizes(device_profile)))
    if global_batch is not None:
        if global_batch < 1:
            raise BadInputError(f"--global-batch must be >= 1, got {global_batch}")
        dividing = tuple(b for b in sizes if b * world_size <= global_batch and global_batch % (b * world_size) == 0)
        ranks = f" across {world_size} ranks" if world_size > 1 else ""
        if not dividing:
            limit = min(global_batch // world_size, MAX_BATCH_SIZE)
            would = [d for d in range(1, limit + 1) if global_batch % (d * world_size) == 0]
            raise BadInputError(f"--global-batch {global_batch}{ranks}: no batch size in {','.join(map(str, sizes))} "
                                f"divides it; sizes that would: {','.join(map(str, would[-8:])) or 'none'} "
                                "(pass them with --batch-sizes)")
        notes.append(f"global batch {global_batch}{ranks}: micro-batches {dividing} with gradient accumulation "
                     "to match")
        sizes = dividing
    offered = tuple((name, values) for name, values in registry.offered(device_profile).items()
                    if name not in skip_levers)
    space = SearchSpace(dtypes, sizes, (), DEFAULT_GROWTH_INTERVALS, global_batch, comms, world_size, offered)
    return space.with_init_scale_seed(init_scale_seed), notes
