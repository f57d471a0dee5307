"""A bounded per-dtype matrix-multiply micro-benchmark.

Bounded however slow a dtype is: each dtype first times one small "pilot" matmul, extrapolates
the n^3 cost, and takes the largest power-of-two size whose warm-up plus minimum repeats fit
its time slice. So bf16 on an AVX2 CPU (~100x slower than fp32) gets a smaller matrix, not
a longer wait. Speed relative to fp32 is always taken at the same n, measured in the same run.

The torch work sits behind `MatmulRunner`; tests drive the planning with a synthetic runner.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from .. import tf32
from ..dtypes import Dtype, torch_dtype
from ..timing import is_noisy, median_iqr, synchronize
from .model import MatmulMeasurement
from .unknowns import describe


@dataclass(frozen=True)
class BenchPlan:
    seconds_per_dtype: float
    pilot_n: int
    max_n: int
    min_n: int = 16
    min_repeats: int = 3
    max_repeats: int = 50

    @property
    def ops_per_dtype(self) -> int:
        """What a size must afford: the growth probe, a warm-up, and the minimum repeats."""
        return self.min_repeats + 2

    def fits(self, seconds_per_op: float) -> bool:
        return seconds_per_op * self.ops_per_dtype <= self.seconds_per_dtype


def default_plan(kind: str, seconds: float, n_dtypes: int) -> BenchPlan:
    per_dtype = seconds / max(n_dtypes + 1, 1)  # +1: a slice for fp32 references at other sizes
    if kind == "cpu":
        # 1024^2 fp32 is ~20 ms on two AVX2 cores: big enough to leave the cache-bound regime.
        return BenchPlan(per_dtype, pilot_n=128, max_n=1024)
    # 8192^2 keeps an H100's tensor cores busy for ~1 ms in bf16: launch overhead vanishes.
    return BenchPlan(per_dtype, pilot_n=1024, max_n=8192)


class MatmulRunner(Protocol):
    def open(self, dtype: Dtype, n: int) -> AbstractContextManager[Callable[[], float]]:
        """Allocate n x n operands; yield a function that times one matmul in seconds."""


ProgressFn = Callable[[str], None]


def measure_matmuls(
    runner: MatmulRunner,
    dtypes: Sequence[Dtype],
    plan: BenchPlan,
    on_progress: ProgressFn | None = None,
) -> dict[Dtype, MatmulMeasurement]:
    times: dict[Dtype, tuple[int, list[float]]] = {}
    errors: dict[Dtype, str] = {}
    for dtype in dtypes:
        if on_progress:
            on_progress(str(dtype))
        try:
            times[dtype] = _time_dtype(runner, dtype, plan)
        except Exception as exc:  # a dtype that fails to run is a result, not a crash
            errors[dtype] = describe(exc)

    fp32_median_at: dict[int, float] = {}
    if Dtype.FP32 in times:
        n, samples = times[Dtype.FP32]
        fp32_median_at[n] = statistics.median(samples)
    for _dtype, (n, _) in times.items():
        if n not in fp32_median_at and Dtype.FP32 not in errors:
            try:
                with runner.open(Dtype.FP32, n) as time_once:
                    time_once()  # warm-up
                    fp32_median_at[n] = statistics.median(_repeat(time_once, plan, plan.seconds_per_dtype / 2))
            except Exception:  # the fp32 reference is a nicety; its absence leaves the ratio unknown
                pass

    results: dict[Dtype, MatmulMeasurement] = {}
    for dtype in dtypes:
        if dtype in errors:
            results[dtype] = MatmulMeasurement(dtype, None, 0, None, None, None, None, error=errors[dtype])
        else:
            n, samples = times[dtype]
            results[dtype] = _summarize(dtype, n, samples, fp32_median_at.get(n))
    return results


def _time_dtype(runner: MatmulRunner, dtype: Dtype, plan: BenchPlan) -> tuple[int, list[float]]:
    n = plan.pilot_n
    with runner.open(dtype, n) as time_once:
        time_once()  # one-time costs: kernel selection, library handles, lazy initialisation
        per_op = time_once()
    # Too slow even at the pilot size: shrink by the n^3 rule (only an estimate is needed here).
    while not plan.fits(per_op) and n // 2 >= plan.min_n:
        n, per_op = n // 2, per_op / 8
    # Grow one doubling at a time, measuring each size: small matmuls do not scale as n^3,
    # so an extrapolation from the pilot can overshoot the time slice several-fold.
    while n * 2 <= plan.max_n and plan.fits(per_op * 8):
        n *= 2
        with runner.open(dtype, n) as time_once:
            per_op = time_once()
    with runner.open(dtype, n) as time_once:
        time_once()  # warm-up at the chosen size
        return n, _repeat(time_once, plan, plan.seconds_per_dtype)


def _repeat(time_once: Callable[[], float], plan: BenchPlan, seconds: float) -> list[float]:
    samples: list[float] = []
    while len(samples) < plan.max_repeats and (len(samples) < plan.min_repeats or sum(samples) < seconds):
        samples.append(time_once())
    return samples


def _summarize(dtype: Dtype, n: int, samples: list[float], fp32_median: float | None) -> MatmulMeasurement:
    median, iqr = median_iqr(samples)
    warning = None
    if is_noisy(median, iqr):
        warning = f"noisy: IQR is {iqr / median:.0%} of the median over {len(samples)} runs"
    return MatmulMeasurement(
        dtype=dtype,
        n=n,
        repeats=len(samples),
        median_s=median,
        iqr_s=iqr,
        tflops=2 * n**3 / median / 1e12 if median > 0 else None,
        relative_to_fp32=fp32_median / median if fp32_median and median > 0 else None,
        warning=warning,
    )


# --------------------------------------------------------------------------------- torch runner


class TorchMatmulRunner:
    """Real matmuls on a torch device, timed with CUDA events on GPUs and a host clock elsewhere."""

    def __init__(self, torch_device: str) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(torch_device)

    @contextlib.contextmanager
    def open(self, dtype: Dtype, n: int) -> Iterator[Callable[[], float]]:
        with tf32.scoped(dtype is Dtype.TF32):
            op = self._build(dtype, n)
            synchronize(self.device)
            yield self._event_timer(op) if self.device.type == "cuda" else self._host_timer(op)

    def _host_timer(self, op: Callable[[], object]) -> Callable[[], float]:
        def time_once() -> float:
            start = time.perf_counter()
            op()
            synchronize(self.device)
            return time.perf_counter() - start

        return time_once

    def _event_timer(self, op: Callable[[], object]) -> Callable[[], float]:
        torch = self._torch
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def time_once() -> float:
            start.record()
            op()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return time_once

    def _build(self, dtype: Dtype, n: int) -> Callable[[], object]:
        torch = self._torch
        # Random operands, never zeros: zeros can run faster than real data and hide bad kernels.
        a = torch.randn(n, n, device=self.device)
        b = torch.randn(n, n, device=self.device)
        if dtype is Dtype.FP8:
            scale = torch.tensor(1.0, device=self.device)
            a8 = a.to(torch.float8_e4m3fn)
            b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()  # _scaled_mm wants B column-major
            return lambda: torch._scaled_mm(a8, b8, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16)
        a, b = a.to(torch_dtype(dtype)), b.to(torch_dtype(dtype))
        return lambda: torch.mm(a, b)
