"""Landscape families: measured sweeps, parametric machines nobody here has, and adversarial cases.

- measured: the sweeps in ../shared/landscapes/ (an AMX Xeon, and an AVX2-only EPYC whose
  emulated bf16/fp16 were swept at the smallest batches only: the rest follow at the same ratio
  to fp32) and tests/simulator/measured/ (sweeps taken on lent GPUs). Throughput, first steps and
  each point's round-to-round spread are as measured; memory and numerics are drawn (the sweeps
  did not record them; on these CPUs memory never binds);
- parametric: a throughput curve per dtype (rises with the batch, peaks, falls past the peak),
  with each reduced precision's gain over fp32 growing from small to large batches as it does on
  tensor cores and AMX, and a memory limit. Devices: AVX2-only, AVX512-BF16 and AMX CPUs; V100/T4
  (fp16 tensor cores, bf16 emulated); A100/H100/H200 (tf32, bf16, fp16; AMP vs TF32 1.8-2.6x at
  large batches, NVIDIA's published A100 ratios for BERT and ResNet-50 span that), with the
  memory limit in the middle of the space most of the time;
- compiled: a measured sweep with a compiled sibling (`<name>-compile.json`: eager and
  torch.compile at the same batches, interleaved) gets its compiled points as the measured ratio
  to eager, at the eager point of the main sweep; the compile time is the cold one
  (COLD_COMPILE_S: the sweeps' first steps ran on a warm inductor cache);
- adversarial: the best dtype wins only at the largest batch; fp32 wins at small batches and loses
  at large ones; two dtypes within 2%; out of memory one size above the middle; fp16 overflows at
  large batches; bf16 fails on numerics everywhere; a 30% noise spread.

Every generator takes a seed and draws everything from it: a suite is reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

from amp_advisor.dtypes import Dtype

from .landscape import COMPILED, GIB, Landscape, Point
from .noise import Noise

SHARED = Path(__file__).resolve().parents[3] / "shared" / "landscapes"
OWN = Path(__file__).resolve().parent / "measured"
CPU_SIZES = (4, 8, 16, 32, 64, 128)
GPU_SIZES = (8, 16, 32, 64, 128, 256, 512)
CPU_MEMORY = 24 * GIB
GPU_MEMORY = {"V100": 16 * GIB, "T4": 16 * GIB, "A100": 80 * GIB, "H100": 80 * GIB, "H200": 140 * GIB}
# Cold compile times of the table (an AMX Xeon, 2 cores, a fresh inductor cache), s
COLD_COMPILE_S = {"convnet": {Dtype.FP32: 7.5, Dtype.BF16: 5.5}, "transformer": {Dtype.FP32: 23.7, Dtype.BF16: 8.7}}
DEVICE_OF_FLAGS = (("amx_bf16", "cpu-amx"), ("avx512_bf16", "cpu-avx512-bf16"), ("avx2", "cpu-avx2"))
GPU_OF_NAME = (("H200", "H200"), ("H100", "H100"), ("A100", "A100"), ("V100", "V100"), ("T4", "T4"))


# ----------------------------------------------------------------------------------- measured
def measured_files() -> list[Path]:
    files = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
    files += sorted(OWN.glob("*.json")) if OWN.is_dir() else []
    return [f for f in files if "compile" not in f.name]  # compiled points: a dimension the space lacks


def _device_of(data: dict) -> str:
    gpu = data.get("gpu")
    if gpu:
        return next((key for part, key in GPU_OF_NAME if part in gpu), "H100")
    flags = set(data.get("flags") or ())
    return next((key for flag, key in DEVICE_OF_FLAGS if flag in flags), "cpu-avx2")


def measured(path: Path, seed: int, batch_sizes: tuple[int, ...] | None = None) -> Landscape:
    """A measured sweep. The AVX2 sweeps measured bf16/fp16 at the smallest batches only: the
    missing points follow at the ratio to fp32 of the largest batch measured (a missing fp16 at
    bf16's ratio)."""
    rng = random.Random(f"{path.name}/{seed}")
    data = json.loads(path.read_text())
    device = _device_of(data)
    gpu = not device.startswith("cpu")
    raw: dict[tuple[Dtype, int], dict] = {}
    for p in data["points"]:
        if not p.get("compiled"):
            raw[(Dtype(p["dtype"]), int(p["batch_size"]))] = p
    sizes = sorted({b for _, b in raw})
    fp32 = {b: raw[(Dtype.FP32, b)] for b in sizes if (Dtype.FP32, b) in raw}
    dtypes = [d for d in (Dtype.FP32, Dtype.TF32, Dtype.BF16, Dtype.FP16) if any(k[0] is d for k in raw)]
    if Dtype.BF16 in dtypes and Dtype.FP16 not in dtypes and not gpu:
        dtypes.append(Dtype.FP16)  # the AVX2 conv net: fp16 emulated like bf16
    memory = GPU_MEMORY.get(device, CPU_MEMORY)
    base, per_sample = _memory_model(rng, memory, gpu, fit=None)
    points: dict[tuple[Dtype, int], Point] = {}
    for dtype in dtypes:
        own = sorted(b for d, b in raw if d is dtype)
        source = dtype if own else Dtype.BF16
        own = own or sorted(b for d, b in raw if d is Dtype.BF16)
        for b in sizes:
            if (source, b) in raw:
                p = raw[(source, b)]
                rate, first, spread = p["samples_per_s"], p["first_step_s"], _log_spread(p["samples_per_s_rounds"])
                if source is not dtype:
                    rate, first = rate * 0.9, first / 0.9
            else:  # follow fp32 at the ratio of the largest batch measured
                last = raw[(source, own[-1])]
                ratio = last["samples_per_s"] / fp32[own[-1]]["samples_per_s"]
                rate = fp32[b]["samples_per_s"] * ratio * (0.9 if source is not dtype else 1.0)
                first, spread = last["first_step_s"] * b / own[-1], _log_spread(last["samples_per_s_rounds"])
            points[(dtype, b)] = Point(rate, first, _peak(base, per_sample, dtype, b), _loss_diff(rng, dtype),
                                       spread=spread)
    name = path.stem + (f"@{','.join(map(str, batch_sizes))}" if batch_sizes else "")
    return Landscape(name, "measured", device, points, memory, build_s=rng.uniform(0.3, 1.5) * (3 if gpu else 1),
                     max_grad=10 ** rng.uniform(-2, 0.5), noise=_base_noise(rng), batch_sizes=batch_sizes,
                     lever_points=_compiled(path, points))


def _compiled(path: Path, points: dict[tuple[Dtype, int], Point]) -> dict[tuple[Dtype, int, tuple], Point]:
    """The compiled points of `path`'s compiled sibling, as its compiled/eager ratio applied to
    the main sweep's eager point; first_step_s = the cold compile time."""
    sibling = path.with_name(f"{path.stem}-compile.json")
    if not sibling.is_file():
        return {}
    data = json.loads(sibling.read_text())
    sweep = {(Dtype(p["dtype"]), int(p["batch_size"]), bool(p["compiled"])): p for p in data["points"]}
    cold = next((v for k, v in COLD_COMPILE_S.items() if k in path.stem), {})
    out = {}
    for (dtype, batch, compiled), p in sweep.items():
        eager = sweep.get((dtype, batch, False))
        if compiled and eager and (dtype, batch) in points:
            ratio = p["samples_per_s"] / eager["samples_per_s"]
            plain = points[(dtype, batch)]
            cold_s = max(p["first_step_s"], cold.get(dtype, 0.0))
            out[(dtype, batch, COMPILED)] = Point(plain.samples_per_s * ratio, cold_s, plain.peak_memory_bytes,
                                                  plain.loss_rel_diff, spread=plain.spread)
    return out


SPREAD_CAP = 0.08  # log std: what a sweep's rounds spread beyond this is slow patches, modelled as such


def _log_spread(rounds: list[float]) -> float:
    """A point's per-trial spread: the log std of its rounds, at most SPREAD_CAP. Four rounds of
    one point spread wider when a slow patch hit one of them (the noise model has those), or when
    the workload changed regime between rounds: the example mlp's fp32 steps slow 10x once it has
    memorised its one batch, which training on fresh data does not see."""
    logs = [math.log(r) for r in rounds if r > 0]
    mean = sum(logs) / len(logs)
    return min(SPREAD_CAP, math.sqrt(sum((v - mean) ** 2 for v in logs) / max(1, len(logs) - 1)))


# --------------------------------------------------------------------------------- parametric
def _memory_model(rng: random.Random, memory: int, gpu: bool, fit: int | None) -> tuple[float, float]:
    """(fixed bytes, fp32 bytes per sample): with `fit`, fp32 fits up to about that batch under
    the tuner's margin; else memory does not bind within the space (a CPU's host RAM)."""
    base = rng.uniform(1, 8) * GIB if gpu else rng.uniform(0.2, 1.0) * GIB
    if fit is None:
        return base, rng.uniform(2, 40) * 2**20
    return base, (0.9 * memory - base) / (fit * rng.uniform(1.2, 1.8))


def _peak(base: float, per_sample: float, dtype: Dtype, batch: int) -> int:
    """Reduced precisions keep smaller activations."""
    share = 1.0 if dtype in (Dtype.FP32, Dtype.TF32) else 0.6
    return int(base + per_sample * share * batch)


def _loss_diff(rng: random.Random, dtype: Dtype) -> float:
    return {Dtype.FP32: 0.0, Dtype.TF32: rng.uniform(0.0, 0.004), Dtype.BF16: rng.uniform(0.002, 0.025),
            Dtype.FP16: rng.uniform(0.001, 0.012)}[dtype]


def _base_noise(rng: random.Random) -> Noise:
    return Noise(sigma=rng.uniform(0.02, 0.05), patch_rate=rng.uniform(0.02, 0.06), drift=rng.uniform(0.02, 0.08),
                 drift_period_s=rng.uniform(60, 400))


def _curve(rng: random.Random, gpu: bool) -> Callable[[int], float]:
    """fp32 samples/s by batch: rises (half speed at batch h), peaks, falls past the peak."""
    if gpu:
        top, h, peak, droop = rng.uniform(500, 20000), rng.uniform(8, 128), rng.choice((128, 256, 512, 1024)), \
            rng.uniform(0.0, 0.1)
    else:
        top, h, peak, droop = rng.uniform(30, 2500), rng.uniform(1, 8), rng.choice((16, 32, 64)), rng.uniform(0.05, 0.3)
    return lambda b: top * b / (b + h) * (1 - droop) ** max(0.0, math.log2(b / peak))


def _gain(lo: float, hi: float, power: float, sizes: tuple[int, ...]) -> Callable[[int], float]:
    """A reduced precision's speed over fp32, from `lo` at the smallest batch to `hi` at the largest."""
    a, z = math.log2(sizes[0]), math.log2(sizes[-1])
    return lambda b: lo + (hi - lo) * min(1.0, max(0.0, (math.log2(b) - a) / (z - a))) ** power


def _gains(rng: random.Random, device: str, sizes: tuple[int, ...]) -> dict[Dtype, Callable[[int], float]]:
    u, p = rng.uniform, rng.uniform(0.5, 1.6)
    if device == "cpu-avx2":
        slow, fp16 = 1 / u(15, 38), u(0.8, 1.0)
        return {Dtype.BF16: lambda b: slow, Dtype.FP16: lambda b: slow * fp16}
    if device == "cpu-avx512-bf16":
        fp16 = 1 / u(25, 40)
        return {Dtype.BF16: _gain(u(1.05, 1.3), u(1.2, 1.7), p, sizes), Dtype.FP16: lambda b: fp16}
    if device == "cpu-amx":
        bf16 = _gain(u(1.1, 1.45), u(1.4, 2.0), p, sizes)
        if rng.random() < 0.5:  # matmul-bound: fp16 through avx512_fp16 about as fast as fp32
            fp16 = _gain(u(0.85, 1.0), u(0.95, 1.15), p, sizes)
        else:  # convolutions: fp16 has no fast path
            slow = 1 / u(100, 200)
            fp16 = lambda b: slow  # noqa: E731
        return {Dtype.BF16: bf16, Dtype.FP16: fp16}
    if device in ("V100", "T4"):
        bf16 = u(0.4, 0.9)
        return {Dtype.FP16: _gain(u(1.1, 1.4), u(2.0, 3.0), p, sizes), Dtype.BF16: lambda b: bf16}
    tf32 = _gain(u(1.05, 1.25), u(1.4, 2.5), p, sizes)
    amp = _gain(u(1.0, 1.3), u(1.8, 2.6), p, sizes)
    fp16_vs_bf16 = u(0.97, 1.05)
    return {Dtype.TF32: tf32, Dtype.BF16: lambda b: tf32(b) * amp(b),
            Dtype.FP16: lambda b: tf32(b) * amp(b) * fp16_vs_bf16}


def parametric(device: str, seed: int, *, family: str = "parametric", fit: int | None | str = "draw",
               gains: dict[Dtype, Callable[[int], float]] | None = None, noise: Noise | None = None,
               curve: Callable[[int], float] | None = None, name: str | None = None,
               nonfinite: Callable[[Dtype, int], bool] | None = None,
               loss_diff: dict[Dtype, float] | None = None) -> Landscape:
    rng = random.Random(f"{family}/{device}/{seed}/{name}")
    gpu = not device.startswith("cpu")
    sizes = GPU_SIZES if gpu else CPU_SIZES
    memory = GPU_MEMORY.get(device, CPU_MEMORY)
    if fit == "draw":
        fit = rng.choice((32, 64, 128, 256, None)) if gpu and device not in ("V100", "T4") else \
            rng.choice((64, 128, 256, None)) if gpu else None
    base, per_sample = _memory_model(rng, memory, gpu, fit if isinstance(fit, int) else None)
    curve = curve or _curve(rng, gpu)
    gains = {**_gains(rng, device, sizes), **(gains or {})}
    dtypes = [Dtype.FP32, *gains]
    build = rng.uniform(1.0, 4.0) if gpu else rng.uniform(0.2, 1.5)
    first_factor = rng.uniform(1.2, 3.0)
    points: dict[tuple[Dtype, int], Point] = {}
    for dtype in dtypes:
        for b in sizes:
            rate = curve(b) * (gains[dtype](b) if dtype in gains else 1.0)
            first = b / rate * first_factor + (rng.uniform(0.1, 1.0) if gpu else 0.0)
            diff = (loss_diff or {}).get(dtype, _loss_diff(rng, dtype))
            bad = bool(nonfinite and nonfinite(dtype, b))
            points[(dtype, b)] = Point(rate, first, _peak(base, per_sample, dtype, b), diff, bad)
    return Landscape(name or f"{family}-{device}-{seed}", family, device, points, memory, build_s=build,
                     max_grad=10 ** rng.uniform(-3, 1), noise=noise or _base_noise(rng))


PARAMETRIC_DEVICES = ("cpu-avx2", "cpu-avx512-bf16", "cpu-amx", "V100", "T4", "A100", "H100", "H200")


# ------------------------------------------------------------------------------- adversarial
def _adversarial_device(rng: random.Random) -> str:
    return rng.choice(("cpu-amx", "cpu-avx512-bf16", "A100", "H100"))


def best_only_at_largest(seed: int) -> Landscape:
    """The reduced precision is slower than fp32's best at every batch but the largest."""
    rng = random.Random(f"largest/{seed}")
    device = _adversarial_device(rng)
    gpu = not device.startswith("cpu")
    sizes = GPU_SIZES if gpu else CPU_SIZES
    top = rng.uniform(100, 5000)
    fp32 = lambda b: top * (1 - 0.03 * abs(math.log2(b / sizes[len(sizes) // 2])))  # noqa: E731 - flat, peaks mid
    lead = rng.uniform(1.06, 1.25)
    power = rng.uniform(2.0, 4.0)

    def gain(b: int) -> float:  # from 0.6 to `lead` x fp32's best at the largest batch, steeply at the end
        t = (math.log2(b) - math.log2(sizes[0])) / (math.log2(sizes[-1]) - math.log2(sizes[0]))
        return (0.6 + (lead - 0.6) * t ** power) * top / fp32(b)

    other = rng.uniform(0.7, 0.95)
    gains = {Dtype.BF16: gain, Dtype.FP16: lambda b: gain(b) * other}
    if device in ("A100", "H100"):
        tf32 = rng.uniform(0.6, 0.8)
        gains[Dtype.TF32] = lambda b: gain(b) * tf32
    return parametric(device, seed, family="adversarial", fit=None, gains=gains, curve=fp32,
                      name=f"largest-only-{device}-{seed}")


def fp32_wins_small(seed: int) -> Landscape:
    rng = random.Random(f"fp32small/{seed}")
    device = _adversarial_device(rng)
    sizes = CPU_SIZES if device.startswith("cpu") else GPU_SIZES
    gain = _gain(rng.uniform(0.6, 0.85), rng.uniform(1.25, 1.7), rng.uniform(0.7, 1.5), sizes)
    gains = {Dtype.BF16: gain, Dtype.FP16: lambda b: gain(b) * 0.85}
    if device in ("A100", "H100"):
        gains[Dtype.TF32] = lambda b: 0.5 + 0.5 * gain(b)
    return parametric(device, seed, family="adversarial", gains=gains, fit=None, name=f"fp32-small-{device}-{seed}")


def close_pair(seed: int) -> Landscape:
    """The two best dtypes within 2% of each other at every batch."""
    rng = random.Random(f"close/{seed}")
    device = _adversarial_device(rng)
    sizes = CPU_SIZES if device.startswith("cpu") else GPU_SIZES
    gain = _gain(rng.uniform(1.0, 1.3), rng.uniform(1.3, 2.5), rng.uniform(0.5, 1.5), sizes)
    within = rng.uniform(0.98, 1.02)
    gains = {Dtype.BF16: gain, Dtype.FP16: lambda b: gain(b) * within}
    if rng.random() < 0.5:  # or bf16 within 2% of fp32 itself
        gains = {Dtype.BF16: lambda b: within, Dtype.FP16: lambda b: 0.7}
    if device in ("A100", "H100"):
        gains[Dtype.TF32] = lambda b: 0.8 * gains[Dtype.BF16](b)
    return parametric(device, seed, family="adversarial", gains=gains, fit=None, name=f"close-{device}-{seed}")


def oom_above_middle(seed: int) -> Landscape:
    """Throughput rises with the batch, and one size above the space's middle is out of memory."""
    rng = random.Random(f"oom/{seed}")
    device = rng.choice(("A100", "H100", "V100", "H200"))
    sizes = GPU_SIZES
    middle = sizes[len(sizes) // 2]
    top, h = rng.uniform(1000, 10000), rng.uniform(32, 256)
    memory = GPU_MEMORY[device]
    base = rng.uniform(1, 6) * GIB
    # fp32 fits at the middle with room to spare, and not at the next size (reduced: 0.6x the activations)
    per_sample = (memory - base) / (middle * rng.uniform(1.25, 1.6) * 1.0)
    land = parametric(device, seed, family="adversarial", fit=None, curve=lambda b: top * b / (b + h),
                      name=f"oom-middle-{device}-{seed}")
    points = {k: Point(p.samples_per_s, p.first_step_s, int(base + per_sample * (1.0 if k[0] in (Dtype.FP32, Dtype.TF32)
                                                                                   else 0.9) * k[1]),
                       p.loss_rel_diff, p.nonfinite) for k, p in land.points.items()}
    return Landscape(land.name, land.family, device, points, memory, land.build_s, land.max_grad, land.noise)


def fp16_overflows_large(seed: int) -> Landscape:
    rng = random.Random(f"fp16ovf/{seed}")
    device = rng.choice(("V100", "T4", "A100", "H100", "cpu-amx"))
    sizes = CPU_SIZES if device.startswith("cpu") else GPU_SIZES
    above = sizes[rng.randint(len(sizes) // 2, len(sizes) - 2)]
    fp16 = _gain(rng.uniform(1.1, 1.4), rng.uniform(2.0, 3.0), 1.0, sizes)
    second = rng.uniform(0.85, 0.97)
    gains: dict[Dtype, Callable[[int], float]] = {Dtype.FP16: fp16}
    gains[Dtype.BF16] = (lambda b: fp16(b) * second) if device not in ("V100", "T4") else (lambda b: 0.6)
    return parametric(device, seed, family="adversarial", gains=gains, fit=None,
                      nonfinite=lambda d, b: d is Dtype.FP16 and b >= above, name=f"fp16-overflow-{device}-{seed}")


def bf16_drifts(seed: int) -> Landscape:
    """bf16 is fastest and fails fp32's loss agreement at every batch."""
    rng = random.Random(f"bf16drift/{seed}")
    device = rng.choice(("cpu-amx", "cpu-avx512-bf16", "A100", "H100"))
    return parametric(device, seed, family="adversarial", loss_diff={Dtype.BF16: rng.uniform(0.07, 0.3)},
                      name=f"bf16-drift-{device}-{seed}")


def noisy(seed: int) -> Landscape:
    """A 30% noise spread: measurements of one configuration range over 1.3x."""
    rng = random.Random(f"noisy/{seed}")
    device = rng.choice(PARAMETRIC_DEVICES)
    noise = Noise(sigma=0.09, patch_rate=0.1, drift=0.12, drift_period_s=rng.uniform(60, 300))
    return parametric(device, seed, family="adversarial", noise=noise, name=f"noisy-{device}-{seed}")


def compile_costly(seed: int) -> Landscape:
    """torch.compile trains 1.3x faster per step and takes minutes to compile: over the planned run
    it costs more than it saves (below its break-even), so eager is the right answer."""
    land = parametric("cpu-amx", seed, family="adversarial", name=f"compile-costly-{seed}")
    batch = land.sizes(Dtype.BF16)
    rate = {b: land.point(Dtype.BF16, b).samples_per_s for b in batch}
    # the compile saves (1 - 1/1.3) of a step; it would pay for itself after 4x the planned run
    compiled = {(Dtype.BF16, b, COMPILED): Point(1.3 * rate[b], 4 * land.train_steps * (b / rate[b]) * (1 - 1 / 1.3),
                                                 land.point(Dtype.BF16, b).peak_memory_bytes) for b in batch}
    return dataclasses.replace(land, lever_points=compiled)


def compile_wins(seed: int) -> Landscape:
    """The conv net's case on a machine nobody here has: torch.compile trains every dtype 1.2-1.5x
    faster per step (more at small batches, where eager's overhead weighs most), for 4-10 s of
    compile: the compiled leader is the answer, and eager leaves that much on the table."""
    rng = random.Random(f"compile-wins/{seed}")
    land = parametric(rng.choice(("cpu-avx512-bf16", "cpu-amx", "H100")), seed, family="adversarial",
                      name=f"compile-wins-{seed}")
    sizes = sorted({b for _, b in land.points})
    gains = _gain(rng.uniform(1.4, 1.5), rng.uniform(1.2, 1.3), 1.0, tuple(sizes))
    compiled = {(d, b, COMPILED): Point(gains(b) * p.samples_per_s, rng.uniform(4, 10), p.peak_memory_bytes,
                                        p.loss_rel_diff, p.nonfinite) for (d, b), p in land.points.items()}
    return dataclasses.replace(land, lever_points=compiled)


ADVERSARIAL = (best_only_at_largest, fp32_wins_small, close_pair, oom_above_middle, fp16_overflows_large,
               bf16_drifts, noisy, compile_costly, compile_wins)


# ---------------------------------------------------------------------------------- suites
def _covers(path: Path, sizes: tuple[int, ...]) -> bool:
    """Whether a CPU sweep measured fp32 at every one of `sizes` (then it also runs as --batch-sizes)."""
    data = json.loads(path.read_text())
    return not data.get("gpu") and {b for b in sizes} <= {p["batch_size"] for p in data["points"]
                                                         if p["dtype"] == "fp32" and not p.get("compiled")}
def suite(per_family: int, seed: int = 0) -> list[tuple[Landscape, int]]:
    """(landscape, noise seed) pairs: `per_family` of each family, spread over its members."""
    pairs: list[tuple[Landscape, int]] = []
    files = measured_files()
    variants = [(f, None) for f in files] + [(f, CPU_SIZES) for f in files if _covers(f, CPU_SIZES)]
    for i in range(per_family):
        f, sizes = variants[i % len(variants)]
        pairs.append((measured(f, seed + i, sizes), seed + i))
    for i in range(per_family):
        device = PARAMETRIC_DEVICES[i % len(PARAMETRIC_DEVICES)]
        pairs.append((parametric(device, seed + i), seed + i))
    for i in range(per_family):
        make = ADVERSARIAL[i % len(ADVERSARIAL)]
        pairs.append((make(seed + i), seed + i))
    return pairs
