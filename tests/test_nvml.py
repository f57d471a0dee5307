from amp_advisor.hardware.nvml import normalize_pci_bus_id, read_nvml
from tests.fakes import (
    GPU_TABLE,
    FakeNvmlConfig,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    fake_pynvml,
    missing_pynvml,
)


def read(config):
    return read_nvml(loader=lambda: fake_pynvml(config))


def test_reads_every_field_of_a_datacenter_gpu():
    report = read(FakeNvmlConfig([GPU_TABLE["H100"]]))
    assert report.error is None
    assert report.driver_version == "570.86.15" and report.driver_cuda_version == "12.8"
    gpu = report.gpus[0]
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == GPU_TABLE["H100"].uuid  # "GPU-" prefix stripped, as torch spells it
    assert gpu.compute_capability == (9, 0)
    assert gpu.memory_total_bytes == 80 * 2**30
    assert gpu.power_limit_w == 700.0
    assert (gpu.pcie_generation, gpu.pcie_generation_max, gpu.pcie_width) == (1, 5, 16)
    assert gpu.ecc_enabled is True
    assert gpu.unknown == {}


def test_not_supported_calls_lose_only_their_field():
    config = FakeNvmlConfig(
        [GPU_TABLE["RTX 4090"]],
        not_supported={"nvmlDeviceGetEccMode", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetMemoryInfo"},
    )
    gpu = read(config).gpus[0]
    assert gpu.ecc_enabled is None and gpu.power_limit_w is None and gpu.memory_total_bytes is None
    assert gpu.unknown["ecc_enabled"] == "NVMLError_NotSupported: Not Supported"
    assert "memory_free_bytes" in gpu.unknown
    assert gpu.name == "NVIDIA GeForce RTX 4090" and gpu.max_sm_clock_mhz == 1980
    assert "nvmlShutdown" in config.calls  # always released


def test_no_driver_is_a_reason_not_a_crash():
    for error in (NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded):
        report = read(FakeNvmlConfig([], init_error=error))
        assert report.gpus == [] and "NVML did not start" in report.error
    assert "Driver Not Loaded" in report.error


def test_pynvml_import_failure_is_a_reason():
    report = read_nvml(loader=missing_pynvml)
    assert report.gpus == [] and "pynvml could not be imported" in report.error


def test_real_pynvml_on_this_machine_never_raises():
    report = read_nvml()
    assert report.error is not None or report.gpus is not None


def test_pci_bus_ids_from_nvml_and_torch_compare_equal():
    assert normalize_pci_bus_id("00000000:3B:00.0") == normalize_pci_bus_id("0000:3b:00.0") == "0000:3b:00.0"
    assert normalize_pci_bus_id(b"3b:00.0") == "0000:3b:00.0"
    assert normalize_pci_bus_id(None) is None
