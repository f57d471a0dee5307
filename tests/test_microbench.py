import contextlib

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.hardware.microbench import BenchPlan, TorchMatmulRunner, default_plan, measure_matmuls

# Like this machine: fp32 ~0.1 TFLOP/s, bf16/fp16 ~100x slower, and small sizes slower still.
CPU_LIKE = {Dtype.FP32: 0.1e12, Dtype.FP16: 0.001e12, Dtype.BF16: 0.001e12, Dtype.FP8: 0.05e12}


class SyntheticRunner:
    """Deterministic timings from a speed table; records every matmul it 'runs'."""

    def __init__(self, speed=CPU_LIKE, fail=(), small_size_penalty=True, jitter=()):
        self.speed, self.fail, self.penalty = speed, set(fail), small_size_penalty
        self.jitter = list(jitter)
        self.elapsed = 0.0
        self.calls: list[tuple[Dtype, int]] = []

    def seconds(self, dtype, n):
        rate = self.speed[dtype] * (min(1.0, n / 512) if self.penalty else 1.0)  # not n^3 at small n
        return 2 * n**3 / rate

    @contextlib.contextmanager
    def open(self, dtype, n):
        if dtype in self.fail:
            raise RuntimeError(f"{dtype} matmul is not implemented here")

        def time_once():
            t = self.seconds(dtype, n) * (self.jitter.pop(0) if self.jitter else 1.0)
            self.elapsed += t
            self.calls.append((dtype, n))
            return t

        yield time_once


def test_a_slow_dtype_gets_a_smaller_matrix_and_the_total_stays_bounded():
    runner = SyntheticRunner()
    dtypes = [Dtype.FP32, Dtype.FP16, Dtype.BF16, Dtype.FP8]
    plan = default_plan("cpu", 1.5, len(dtypes))
    result = measure_matmuls(runner, dtypes, plan)
    assert result[Dtype.FP32].n == 1024
    assert result[Dtype.BF16].n < result[Dtype.FP32].n
    # each dtype's slice, the fp32 reference slice, and at most one op of overshoot per dtype
    assert runner.elapsed < 1.5 * 1.5


def test_speed_relative_to_fp32_is_taken_at_the_same_size():
    runner = SyntheticRunner(small_size_penalty=False)
    result = measure_matmuls(runner, [Dtype.FP32, Dtype.BF16], default_plan("cpu", 1.0, 2))
    bf16 = result[Dtype.BF16]
    assert bf16.n != result[Dtype.FP32].n
    assert (Dtype.FP32, bf16.n) in runner.calls  # an fp32 reference at bf16's size
    assert bf16.relative_to_fp32 == pytest.approx(0.01)
    assert bf16.tflops == pytest.approx(0.001)


def test_median_and_iqr_describe_the_samples_and_noise_is_flagged():
    # pilot x2 and a warm-up first
    runner = SyntheticRunner(small_size_penalty=False, jitter=[1.0] * 3 + [1.0, 1.5] * 3)
    plan = BenchPlan(seconds_per_dtype=0.2, pilot_n=256, max_n=256, min_repeats=6, max_repeats=6)
    m = measure_matmuls(runner, [Dtype.FP32], plan)[Dtype.FP32]
    assert m.repeats == 6
    assert m.median_s == pytest.approx(runner.seconds(Dtype.FP32, 256) * 1.25)
    assert m.iqr_s > 0 and "noisy" in m.warning


def test_a_dtype_that_fails_is_recorded_and_the_others_still_run():
    runner = SyntheticRunner(fail={Dtype.FP8})
    result = measure_matmuls(runner, [Dtype.FP32, Dtype.FP8, Dtype.BF16], default_plan("cpu", 1.0, 3))
    assert result[Dtype.FP8].error == "RuntimeError: fp8 matmul is not implemented here"
    assert result[Dtype.FP8].tflops is None
    assert result[Dtype.BF16].tflops is not None


def test_a_dtype_too_slow_even_at_the_pilot_size_shrinks():
    runner = SyntheticRunner(speed={Dtype.FP32: 1e6}, small_size_penalty=False)  # 1 MFLOP/s
    plan = BenchPlan(seconds_per_dtype=0.5, pilot_n=128, max_n=1024)
    m = measure_matmuls(runner, [Dtype.FP32], plan)[Dtype.FP32]
    assert m.n < 128


def test_progress_names_each_dtype():
    seen = []
    measure_matmuls(SyntheticRunner(), [Dtype.FP32, Dtype.BF16], default_plan("cpu", 0.5, 2), seen.append)
    assert seen == ["fp32", "bf16"]


def test_real_cpu_matmuls_report_consistent_numbers():
    plan = BenchPlan(seconds_per_dtype=0.05, pilot_n=32, max_n=64)
    result = measure_matmuls(TorchMatmulRunner("cpu"), [Dtype.FP32, Dtype.BF16], plan)
    for m in result.values():
        assert m.error is None and m.n in (16, 32, 64) and m.repeats >= 3
        assert m.tflops == pytest.approx(2 * m.n**3 / m.median_s / 1e12)
    assert result[Dtype.FP32].relative_to_fp32 == 1.0


def test_real_runner_restores_the_float32_matmul_precision():
    import torch

    before = torch.get_float32_matmul_precision()
    plan = BenchPlan(seconds_per_dtype=0.01, pilot_n=16, max_n=16)
    measure_matmuls(TorchMatmulRunner("cpu"), [Dtype.FP32, Dtype.TF32], plan)
    assert torch.get_float32_matmul_precision() == before
