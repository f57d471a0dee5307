import math

import pytest
import torch

from amp_advisor.harness.oom import is_oom
from amp_advisor.numerics import FP16_MAX, FP16_MIN_SUBNORMAL, grad_stats, loss_rel_diff


def test_grad_stats_counts_what_fp16_would_lose_at_the_scale():
    grads = [torch.tensor([0.0, 1e-9, 1e-3, 1.0]), torch.tensor([[2.0, 0.0]]), None]
    s = grad_stats(grads, scale=1.0)
    assert s.elements == 6 and s.zero_fraction == pytest.approx(2 / 6)
    assert s.underflow_fraction == pytest.approx(1 / 6)  # 1e-9 < 2^-24
    assert s.overflow_fraction == 0 and s.max_abs == 2.0
    assert sum(s.log2_histogram.values()) == 4 and s.log2_histogram[0] == 1 and s.log2_histogram[1] == 1
    scaled = grad_stats(grads, scale=2.0**16)
    assert scaled.underflow_fraction == 0  # 1e-9 * 65536 is representable
    assert scaled.overflow_fraction == pytest.approx(2 / 6)  # 1.0 and 2.0 times 65536 > 65504


def test_fp16_limits():
    assert torch.tensor(FP16_MAX, dtype=torch.float16).item() == FP16_MAX
    assert torch.tensor(FP16_MIN_SUBNORMAL, dtype=torch.float16).item() > 0
    assert torch.tensor(FP16_MIN_SUBNORMAL / 4, dtype=torch.float16).item() == 0


def test_loss_rel_diff_over_the_curve():
    assert loss_rel_diff([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert loss_rel_diff([1.1, 2.2], [1.0, 2.0]) == pytest.approx(0.1)
    assert loss_rel_diff([1.0, math.inf], [1.0, 2.0]) is None
    assert loss_rel_diff([], [1.0]) is None
    # a curve going to ~0 does not blow up the figure the way a last-step ratio would
    assert loss_rel_diff([2.0, 1e-4], [2.0, 1e-5]) < 0.01


@pytest.mark.parametrize(
    "exc, expected",
    [
        (MemoryError(), True),
        (torch.OutOfMemoryError("whatever text"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("HIP out of memory. Tried to allocate 20 MiB"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"),
         True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("CUDA out of memory"), False),  # the message alone on another type is not enough
    ],
)
def test_oom_classifier(exc, expected):
    assert is_oom(exc) is expected
