"""The CPU path, for real on this machine, and parsed from other CPUs' /proc/cpuinfo."""

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.hardware import probe
from amp_advisor.hardware.cpu import CPUINFO_PATH, parse_cpuinfo, probe_cpu
from amp_advisor.hardware.rules import CPU_ISA_FLAGS, cpu_verdicts
from tests.fakes import CPUINFO_EPYC_AVX2, CPUINFO_SAPPHIRE_RAPIDS

EPYC_AVX2, SAPPHIRE_RAPIDS = CPUINFO_EPYC_AVX2, CPUINFO_SAPPHIRE_RAPIDS

GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd sve bf16 i8mm
CPU implementer\t: 0x41
"""


def test_parse_cpuinfo_x86():
    info = parse_cpuinfo(EPYC_AVX2)
    assert info.model_name == "AMD EPYC 7B13" and info.vendor == "AuthenticAMD"
    assert "avx2" in info.flags and "avx512f" not in info.flags
    assert info.physical_cores == 2


def test_parse_cpuinfo_arm_has_no_core_ids():
    info = parse_cpuinfo(GRAVITON3)
    assert "bf16" in info.flags and info.physical_cores is None and info.vendor == "Arm implementer 0x41"


def test_sapphire_rapids_cpuinfo_makes_bf16_fast():
    facts = probe_cpu(SAPPHIRE_RAPIDS)
    assert facts.identity.isa["amx_bf16"] is True
    assert facts.verdicts[Dtype.BF16].fast


def test_unreadable_flags_are_unknown_not_absent():
    facts = probe_cpu("processor\t: 0\n")
    assert all(v is None for v in facts.identity.isa.values())
    assert "isa" in facts.unknown and "model_name" in facts.unknown


def test_real_cpu_probe_matches_the_rules_for_its_own_flags():
    (cpu,) = probe("cpu").devices
    ident = cpu.identity
    assert cpu.kind == "cpu" and cpu.torch_device == "cpu"
    assert set(CPU_ISA_FLAGS) <= set(ident.isa)
    assert ident.torch_threads >= 1 and ident.torch_cpu_capability
    assert cpu.dtypes[Dtype.FP32].supported and cpu.dtypes[Dtype.FP32].fast
    for dtype in (Dtype.BF16, Dtype.FP16):  # the rules, applied to the flags the probe read
        expected = cpu_verdicts(ident.isa, runs={d: None for d in Dtype}, arch=ident.arch)[dtype]
        assert cpu.dtypes[dtype].fast == expected.fast


_flags = parse_cpuinfo(CPUINFO_PATH.read_text()).flags if CPUINFO_PATH.exists() else frozenset()
avx2_only = pytest.mark.skipif(
    "avx2" not in _flags or bool(_flags & {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"}),
    reason="needs an AVX2 CPU without avx512_bf16/avx512_fp16/AMX, like the development machine",
)


@avx2_only
def test_on_an_avx2_only_cpu_bf16_and_fp16_run_slowly_and_fp32_is_suggested():
    (cpu,) = probe("cpu").devices
    for dtype in (Dtype.BF16, Dtype.FP16):
        assert cpu.dtypes[dtype].supported and not cpu.dtypes[dtype].fast
    assert cpu.suggested_dtype is Dtype.FP32


@avx2_only
def test_on_an_avx2_only_cpu_the_bench_measures_bf16_much_slower():
    (cpu,) = probe("cpu", bench=True, bench_seconds=0.6).devices
    bf16 = cpu.measured[Dtype.BF16]
    assert bf16.relative_to_fp32 < 0.5  # measured ~0.01 here; the bound only says "slower"
    assert cpu.suggested_dtype is Dtype.FP32 and cpu.suggested_why.startswith("measured:")
    assert "slower than fp32" in cpu.dtypes[Dtype.BF16].why
