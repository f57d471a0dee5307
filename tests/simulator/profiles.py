"""The devices a landscape can be on, as the probe sees them, built from fakes: the CPUs from
their /proc/cpuinfo text, the GPUs from a fake torch.cuda and NVML. Built once each."""

from __future__ import annotations

import functools

from amp_advisor.hardware import probe
from amp_advisor.hardware.model import DeviceProfile
from tests.fakes import (
    CPUINFO_AVX512_BF16,
    CPUINFO_EPYC_AVX2,
    CPUINFO_SAPPHIRE_RAPIDS,
    GPU_TABLE,
    FakeCuda,
    FakeGpu,
    FakeNvmlConfig,
    nvml_reader,
)

CPUS = {"cpu-avx2": CPUINFO_EPYC_AVX2, "cpu-avx512-bf16": CPUINFO_AVX512_BF16, "cpu-amx": CPUINFO_SAPPHIRE_RAPIDS}
GPUS = ("V100", "T4", "A100", "H100", "H200")
# the probe's GPU tests cover GPU_TABLE; the simulator adds the H200 (as it names itself: 141 GB of HBM3e)
SIM_GPUS = {**GPU_TABLE, "H200": FakeGpu("NVIDIA H200", (9, 0), 132, 140, "0f1e7a1c-0000-0000-0000-000000000091",
                                         "00000000:20:00.0")}
DEVICES = (*CPUS, *GPUS)


@functools.cache
def profile(device: str) -> DeviceProfile:
    if device in CPUS:
        return probe("cpu", cpuinfo_text=CPUS[device]).devices[0]
    if device in GPUS:
        gpu = SIM_GPUS[device]
        return probe("cuda", cuda=FakeCuda([gpu]), nvml=nvml_reader(FakeNvmlConfig([gpu]))).devices[0]
    raise KeyError(f"unknown simulated device {device!r}: expected one of {', '.join(DEVICES)}")


def device_string(device: str) -> str:
    """What the tuner's settings name: cpu, or cuda:0."""
    return "cpu" if device in CPUS else "cuda:0"
