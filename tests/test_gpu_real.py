"""Run only where a CUDA GPU is present (the `gpu` marker); CI has none and skips them."""

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.hardware import probe

pytestmark = pytest.mark.gpu


def test_real_gpu_verdicts_agree_with_torch():
    import torch

    profile = probe("cuda", bench=True, bench_seconds=2.0)
    for dev in profile.devices:
        index = dev.index
        assert dev.identity.torch_usable
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False) if index == 0 else None
        if native_bf16 is not None:
            assert dev.dtypes[Dtype.BF16].fast == native_bf16
        fp32 = dev.measured[Dtype.FP32]
        assert fp32.error is None and fp32.tflops > 0
        if dev.peak is not None:
            # a measured rate above the vendor's peak means the timing or the FLOP count is wrong
            assert fp32.tflops <= dev.peak.tflops[Dtype.FP32] * 1.1
            bf16 = dev.measured[Dtype.BF16]
            assert bf16.tflops <= dev.peak.tflops[Dtype.BF16] * 1.1


@pytest.mark.parametrize("dtype", ["fp32", "tf32", "fp16", "bf16"])
def test_real_gpu_trial_times_with_events_and_reads_the_allocator_peak(dtype):
    from pathlib import Path

    from amp_advisor.lifecycle import bench

    result = bench(Path(__file__).parent / "workloads" / "tiny.py", dtype=dtype, batch_size=64,
                   device="cuda:0", steps=10, warmup_steps=2)
    assert result.status == "ok", result.error
    assert result.memory_method == "torch.cuda.max_memory_allocated" and result.peak_memory_bytes > 0
    assert result.step_time_s.median > 0 and result.tflops > 0
    if dtype == "fp16":
        assert result.skipped_steps is not None and result.final_loss_scale is not None
    if result.peak_tflops:
        assert 0 < result.mfu < 1
