import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.hardware.rules import (
    cpu_verdicts,
    cuda_verdicts,
    rocm_verdicts,
    torch_has_kernels_for,
)
from tests.fakes import GPU_TABLE

# (supported, fast) per dtype, per GPU of the table.
EXPECTED = {
    "V100": {"fp32": (1, 1), "tf32": (0, 0), "fp16": (1, 1), "bf16": (1, 0), "fp8": (0, 0)},
    "T4": {"fp32": (1, 1), "tf32": (0, 0), "fp16": (1, 1), "bf16": (1, 0), "fp8": (0, 0)},
    "A100": {"fp32": (1, 1), "tf32": (1, 1), "fp16": (1, 1), "bf16": (1, 1), "fp8": (0, 0)},
    "RTX 4090": {"fp32": (1, 1), "tf32": (1, 1), "fp16": (1, 1), "bf16": (1, 1), "fp8": (1, 1)},
    "H100": {"fp32": (1, 1), "tf32": (1, 1), "fp16": (1, 1), "bf16": (1, 1), "fp8": (1, 1)},
    "B200": {"fp32": (1, 1), "tf32": (1, 1), "fp16": (1, 1), "bf16": (1, 1), "fp8": (1, 1)},
}


@pytest.mark.parametrize("gpu", EXPECTED)
def test_cuda_verdicts_for_the_gpu_table(gpu):
    verdicts = cuda_verdicts(GPU_TABLE[gpu].cc)
    got = {d.value: (int(v.supported), int(v.fast)) for d, v in verdicts.items()}
    assert got == EXPECTED[gpu]
    assert all(v.why for v in verdicts.values())


@pytest.mark.parametrize("gpu", ["V100", "T4"])
def test_bf16_before_ampere_reads_emulated_not_fast(gpu):
    v = cuda_verdicts(GPU_TABLE[gpu].cc)[Dtype.BF16]
    assert v.supported and not v.fast
    assert "emulated" in v.why


def test_fp8_starts_at_sm89():
    assert not cuda_verdicts((8, 6))[Dtype.FP8].supported
    assert cuda_verdicts((8, 9))[Dtype.FP8].fast
    assert not cuda_verdicts((8, 9), fp8_in_torch=False)[Dtype.FP8].supported


def test_old_gpus_have_slow_fp16_except_p100():
    assert not cuda_verdicts((6, 1))[Dtype.FP16].fast
    assert cuda_verdicts((6, 0))[Dtype.FP16].fast


@pytest.mark.parametrize(
    "cc, arch_list, expected",
    [
        ((8, 9), ["sm_80", "sm_86", "sm_90"], True),  # sm_86 cubin runs on sm_89
        ((9, 0), ["sm_80", "sm_86"], False),  # no sm_90 cubin, no PTX
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX JIT-compiles for newer GPUs
        ((6, 1), ["sm_70", "sm_75", "sm_80"], False),  # a build that dropped Pascal
        ((9, 0), ["sm_90a"], True),
        ((9, 0), [], True),  # torch did not say
    ],
)
def test_torch_kernel_compatibility(cc, arch_list, expected):
    assert torch_has_kernels_for(cc, arch_list) is expected


@pytest.mark.parametrize(
    "arch, fast16, tf32, fp8",
    [("gfx908", True, False, False), ("gfx90a", True, False, False), ("gfx942:sramecc+:xnack-", True, True, True),
     ("gfx1100", True, False, False), ("gfx906", False, False, False)],
)
def test_rocm_verdicts(arch, fast16, tf32, fp8):
    v = rocm_verdicts(arch)
    assert v[Dtype.FP16].fast is fast16 and v[Dtype.BF16].fast is fast16
    assert v[Dtype.TF32].supported is tf32
    assert v[Dtype.FP8].supported is fp8


RUNS_ALL = {Dtype.FP32: None, Dtype.FP16: None, Dtype.BF16: None, Dtype.FP8: None}
AVX2_ONLY = {"avx2": True, "avx512f": False, "avx512_bf16": False, "avx512_fp16": False, "amx_bf16": False,
             "amx_fp16": False}


def test_avx2_cpu_runs_bf16_and_fp16_but_not_fast():
    v = cpu_verdicts(AVX2_ONLY, runs=RUNS_ALL, arch="x86_64")
    assert v[Dtype.BF16].supported and not v[Dtype.BF16].fast
    assert v[Dtype.FP16].supported and not v[Dtype.FP16].fast
    assert "avx512_bf16" in v[Dtype.BF16].why and "AVX2" in v[Dtype.BF16].why
    assert not v[Dtype.TF32].supported


def test_sapphire_rapids_cpu_is_fast_in_bf16_and_fp16():
    isa = {**AVX2_ONLY, "avx512f": True, "avx512_bf16": True, "avx512_fp16": True, "amx_bf16": True, "amx_fp16": True}
    v = cpu_verdicts(isa, runs=RUNS_ALL, arch="x86_64")
    assert v[Dtype.BF16].fast and "AMX" in v[Dtype.BF16].why
    assert v[Dtype.FP16].fast


def test_cooper_lake_style_avx512_bf16_without_amx_is_fast_bf16():
    isa = {**AVX2_ONLY, "avx512f": True, "avx512_bf16": True}
    v = cpu_verdicts(isa, runs=RUNS_ALL, arch="x86_64")
    assert v[Dtype.BF16].fast and not v[Dtype.FP16].fast


def test_arm_cpu_with_bf16_extension():
    v = cpu_verdicts({"bf16": True}, runs=RUNS_ALL, arch="aarch64")
    assert v[Dtype.BF16].fast


def test_a_dtype_that_fails_to_run_is_unsupported_with_the_error():
    runs = {**RUNS_ALL, Dtype.FP8: "RuntimeError: _scaled_mm not implemented for CPU"}
    v = cpu_verdicts(AVX2_ONLY, runs=runs, arch="x86_64")
    assert not v[Dtype.FP8].supported
    assert "not implemented" in v[Dtype.FP8].why
