"""The whole probe on fake GPUs: torch.cuda and NVML replaced, everything else real."""

import contextlib

import pytest

from amp_advisor.dtypes import Dtype
from amp_advisor.errors import BadInputError
from amp_advisor.hardware import probe
from tests.fakes import (
    GPU_TABLE,
    FakeCuda,
    FakeGpu,
    FakeNvmlConfig,
    NVMLError_DriverNotLoaded,
    missing_pynvml,
    nvml_reader,
)
from tests.test_rules import EXPECTED


def gpu_probe(gpus, *, nvml_config=None, **kwargs):
    nvml = nvml_reader(nvml_config or FakeNvmlConfig(gpus))
    return probe(kwargs.pop("device", "cuda"), cuda=FakeCuda(gpus, **kwargs.pop("cuda_kw", {})), nvml=nvml, **kwargs)


@pytest.mark.parametrize("gpu", list(GPU_TABLE))
def test_each_gpu_gets_its_verdicts_peaks_and_identity(gpu):
    profile = gpu_probe([GPU_TABLE[gpu]])
    (dev,) = profile.devices
    assert dev.kind == "cuda" and dev.torch_device == "cuda:0"
    assert {d.value: (int(v.supported), int(v.fast)) for d, v in dev.dtypes.items()} == EXPECTED[gpu]
    assert dev.peak is not None and dev.peak_tflops(Dtype.FP32) > 0
    ident = dev.identity
    assert ident.compute_capability == "{}.{}".format(*GPU_TABLE[gpu].cc)
    assert ident.driver_version == "570.86.15" and ident.power_limit_w == 700.0
    assert ident.memory_free_bytes is not None and ident.ecc_enabled is True
    assert dev.unknown == {}


@pytest.mark.parametrize("gpu, dtype", [("V100", "fp16"), ("T4", "fp16"), ("A100", "bf16"), ("H100", "bf16")])
def test_suggested_dtype_per_gpu(gpu, dtype):
    (dev,) = gpu_probe([GPU_TABLE[gpu]]).devices
    assert dev.suggested_dtype.value == dtype


def test_h100_says_fp8_is_available_but_not_suggested():
    (dev,) = gpu_probe([GPU_TABLE["H100"]]).devices
    assert dev.suggested_dtype is Dtype.BF16 and "fp8" in dev.suggested_why


def test_json_carries_the_fields_the_issue_names():
    doc = gpu_probe([GPU_TABLE["T4"], GPU_TABLE["A100"]], device="all").to_dict()
    assert doc["schema_version"] == 1
    kinds = [d["kind"] for d in doc["devices"]]
    assert kinds == ["cuda", "cuda", "cpu"]
    t4 = doc["devices"][0]
    assert t4["name"] == "Tesla T4"
    assert t4["dtypes"]["bf16"] == {"supported": True, "fast": False, "why": t4["dtypes"]["bf16"]["why"]}
    assert t4["peak_tflops"]["fp16"] == 65.0 and t4["peak_tflops"]["bf16"] is None
    assert t4["suggested_dtype"] == "fp16"
    assert "measured_tflops" not in t4  # only with bench
    assert doc["devices"][2]["peak_tflops"] is None


def test_nvml_not_supported_fields_read_unknown_with_reason():
    gpus = [GPU_TABLE["RTX 4090"]]
    config = FakeNvmlConfig(gpus, not_supported={"nvmlDeviceGetEccMode", "nvmlDeviceGetEnforcedPowerLimit"})
    (dev,) = gpu_probe(gpus, nvml_config=config).devices
    assert dev.identity.ecc_enabled is None and "Not Supported" in dev.unknown["ecc_enabled"]
    assert dev.identity.power_limit_w is None
    assert dev.dtypes[Dtype.FP8].fast  # the verdicts do not depend on NVML


@pytest.mark.parametrize(
    "nvml_config, reader",
    [(FakeNvmlConfig([], init_error=NVMLError_DriverNotLoaded), None), (None, missing_pynvml)],
)
def test_without_nvml_torch_still_describes_the_gpu(nvml_config, reader):
    from amp_advisor.hardware.nvml import read_nvml

    gpus = [GPU_TABLE["A100"]]
    nvml = nvml_reader(nvml_config) if nvml_config else (lambda: read_nvml(loader=reader))
    (dev,) = probe("cuda", cuda=FakeCuda(gpus), nvml=nvml).devices
    assert dev.identity.name == "NVIDIA A100-SXM4-80GB" and dev.identity.sm_count == 108
    assert dev.identity.memory_total_bytes == 80 * 2**30
    assert dev.identity.memory_free_bytes is not None  # from torch.cuda.mem_get_info instead
    assert dev.identity.driver_version is None and "power_limit_w" in dev.unknown
    assert dev.dtypes[Dtype.BF16].fast


def test_torch_without_cuda_still_lists_what_nvml_sees():
    gpus = [GPU_TABLE["H100"]]
    reason = "torch 2.13.0+cpu was built without CUDA or ROCm"
    profile = probe("all", cuda=FakeCuda(gpus, cuda=None, unavailable=reason), nvml=nvml_reader(FakeNvmlConfig(gpus)))
    gpu, cpu = profile.devices
    assert gpu.identity.torch_usable is False and gpu.name == "NVIDIA H100 80GB HBM3"
    assert not any(v.supported for v in gpu.dtypes.values())
    assert reason in gpu.dtypes[Dtype.BF16].why and "native bf16" in gpu.dtypes[Dtype.BF16].why
    assert any("CUDA build of torch" in n for n in gpu.notes)
    assert cpu.kind == "cpu"


def test_device_cuda_without_cuda_is_bad_input():
    reason = "torch 2.13.0+cpu was built without CUDA or ROCm"
    with pytest.raises(BadInputError, match="no CUDA device is usable here.*built without CUDA"):
        probe("cuda", cuda=FakeCuda([], cuda=None, unavailable=reason), nvml=nvml_reader(FakeNvmlConfig([])))


def test_device_index_out_of_range_names_the_devices_there():
    with pytest.raises(BadInputError, match="cuda:3: no such device; this machine has cuda:0, cuda:1"):
        gpu_probe([GPU_TABLE["T4"], GPU_TABLE["A100"]], device="cuda:3")
    (dev,) = gpu_probe([GPU_TABLE["T4"], GPU_TABLE["A100"]], device="cuda:1").devices
    assert dev.name == "NVIDIA A100-SXM4-80GB"


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "cpu:0", "tpu", ""])
def test_unknown_device_strings_are_bad_input(text):
    with pytest.raises(BadInputError, match="expected all, cpu, cuda, cuda:N or mps"):
        probe(text)


def test_unknown_gpu_name_has_no_peaks_and_says_so():
    gpus = [FakeGpu("NVIDIA Mystery 9000", (12, 0), 170, 32,
                    "0f1e7a1c-0000-0000-0000-000000000120", "00000000:20:00.0")]
    (dev,) = gpu_probe(gpus).devices
    assert dev.peak is None and dev.peak_tflops(Dtype.BF16) is None
    assert any("no peak rates known" in n for n in dev.notes)
    assert dev.dtypes[Dtype.FP8].fast  # the rules still know what sm_120 does


def test_torch_build_without_kernels_for_the_gpu():
    gpus = [GPU_TABLE["B200"]]
    (dev,) = gpu_probe(gpus, cuda_kw={"arch_list": ["sm_70", "sm_80", "sm_90"]}, device="all").devices[:1]
    assert not dev.dtypes[Dtype.BF16].supported
    assert "no kernels for sm_100" in dev.dtypes[Dtype.BF16].why


def test_rocm_gpu_uses_gfx_rules_and_skips_nvml():
    mi300 = FakeGpu("AMD Instinct MI300X", (9, 4), 304, 192, "aa", "00000000:30:00.0",
                    gcn_arch="gfx942:sramecc+:xnack-")
    profile = probe("cuda", cuda=FakeCuda([mi300], cuda=None, hip="6.3"), nvml=nvml_reader(FakeNvmlConfig([])))
    (dev,) = profile.devices
    assert dev.kind == "rocm" and dev.identity.arch == "gfx942" and dev.identity.compute_capability is None
    assert dev.dtypes[Dtype.FP8].fast and dev.peak.profile_id == "mi300x"
    assert "NVML reads NVIDIA GPUs only" in dev.unknown["power_limit_w"]


def test_nvml_matched_by_uuid_when_visible_devices_reorder():
    gpus = [GPU_TABLE["T4"], GPU_TABLE["H100"]]
    config = FakeNvmlConfig(list(reversed(gpus)))  # NVML numbers them the other way round
    profile = probe("cuda", cuda=FakeCuda(gpus), nvml=nvml_reader(config))
    assert [d.identity.pci_bus_id for d in profile.devices] == ["0000:1b:00.0", "0000:1e:00.0"]
    assert [d.identity.memory_total_bytes for d in profile.devices] == [16 * 2**30, 80 * 2**30]


class SyntheticGpuRunner:
    """Times matmuls from a speed table instead of running them."""

    TFLOPS = {Dtype.FP32: 50.0, Dtype.TF32: 350.0, Dtype.FP16: 700.0, Dtype.BF16: 700.0, Dtype.FP8: 1400.0}

    def __init__(self, torch_device):
        self.torch_device = torch_device

    @contextlib.contextmanager
    def open(self, dtype, n):
        yield lambda: 2 * n**3 / (self.TFLOPS[dtype] * 1e12)


def test_bench_on_a_gpu_measures_each_supported_dtype_and_confirms_the_suggestion():
    (dev,) = gpu_probe([GPU_TABLE["H100"]], bench=True, runner_for=SyntheticGpuRunner).devices
    assert set(dev.measured) == set(Dtype)
    assert dev.measured[Dtype.BF16].relative_to_fp32 == pytest.approx(14.0)
    assert dev.suggested_dtype is Dtype.BF16 and dev.suggested_why.startswith("measured 14.0x")
    assert "[measured: 14.0x faster than fp32" in dev.dtypes[Dtype.BF16].why
    doc = dev.measured[Dtype.FP8]
    assert doc.tflops == pytest.approx(1400.0)


class EqualSpeedRunner(SyntheticGpuRunner):
    """An emulated bf16 that happens to match fp16 on a square matmul."""

    TFLOPS = {**SyntheticGpuRunner.TFLOPS, Dtype.BF16: 700.0, Dtype.FP16: 700.0}


def test_a_native_path_wins_over_an_equally_fast_emulated_one():
    (dev,) = gpu_probe([GPU_TABLE["T4"]], bench=True, bench_seconds=0.5, runner_for=EqualSpeedRunner).devices
    assert dev.suggested_dtype is Dtype.FP16


def test_cudnn_versions_read_like_releases():
    from amp_advisor.hardware.cuda import format_cudnn_version

    assert format_cudnn_version(91000) == "9.10.0"
    assert format_cudnn_version(90100) == "9.1.0"
    assert format_cudnn_version(8902) == "8.9.2"
