"""NVML (nvidia-ml-py, imported as pynvml): what the driver says about each NVIDIA GPU.

Every call may raise pynvml.NVMLError (NotSupported on consumer cards, LibraryNotFound or
DriverNotLoaded without a driver). Each field is read on its own, so one failure loses one field.
The module is loaded through `loader`, which tests replace with a fake pynvml.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .unknowns import Unknowns, describe


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def normalize_pci_bus_id(bus_id: str | bytes | None) -> str | None:
    """'00000000:3B:00.0' (NVML) and '0000:3b:00.0' (torch) name the same slot."""
    if not bus_id:
        return None
    parts = _text(bus_id).lower().split(":")
    if len(parts) == 2:  # no domain given: domain 0
        parts = ["0", *parts]
    domain, bus, device_function = parts
    return f"{int(domain, 16):04x}:{bus}:{device_function}"


def _cuda_version_text(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"  # 12040 -> "12.4"


@dataclass
class NvmlGpu:
    index: int
    name: str | None = None
    uuid: str | None = None  # without the "GPU-" prefix, as torch reports it
    pci_bus_id: str | None = None
    compute_capability: tuple[int, int] | None = None
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    max_sm_clock_mhz: int | None = None
    power_limit_w: float | None = None
    pcie_generation: int | None = None
    pcie_generation_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    ecc_enabled: bool | None = None
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass
class NvmlReport:
    """What NVML said, or why it said nothing (`error`)."""

    error: str | None = None
    driver_version: str | None = None
    driver_cuda_version: str | None = None
    gpus: list[NvmlGpu] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)


def _default_loader() -> Any:
    return importlib.import_module("pynvml")


def read_nvml(loader: Callable[[], Any] = _default_loader) -> NvmlReport:
    try:
        nv = loader()
    except Exception as exc:  # ImportError, or a broken install
        return NvmlReport(error=f"pynvml could not be imported ({describe(exc)})")
    try:
        nv.nvmlInit()
    except Exception as exc:
        return NvmlReport(error=f"NVML did not start ({describe(exc)}): no NVIDIA driver on this machine?")
    try:
        return _read_initialized(nv)
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # shutting down cannot lose data any more
            pass


def _read_initialized(nv: Any) -> NvmlReport:
    system = Unknowns()
    report = NvmlReport(
        driver_version=system.read("driver_version", lambda: _text(nv.nvmlSystemGetDriverVersion())),
        driver_cuda_version=system.read(
            "driver_cuda_version", lambda: _cuda_version_text(nv.nvmlSystemGetCudaDriverVersion())
        ),
    )
    count = system.read("gpu_count", nv.nvmlDeviceGetCount)
    report.unknown = system.reasons
    for index in range(count or 0):
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            report.gpus.append(NvmlGpu(index=index, unknown={"handle": describe(exc)}))
            continue
        report.gpus.append(_read_gpu(nv, index, handle))
    return report


def _read_gpu(nv: Any, index: int, handle: Any) -> NvmlGpu:
    u = Unknowns()
    memory = u.read("memory_total_bytes", lambda: nv.nvmlDeviceGetMemoryInfo(handle))
    if memory is None:
        u.mark("memory_free_bytes", u.reasons["memory_total_bytes"])
    power_mw = u.read("power_limit_w", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle))
    ecc = u.read("ecc_enabled", lambda: nv.nvmlDeviceGetEccMode(handle))  # (current, pending)
    cc = u.read("compute_capability", lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))
    gpu = NvmlGpu(
        index=index,
        name=u.read("name", lambda: _text(nv.nvmlDeviceGetName(handle))),
        uuid=u.read("uuid", lambda: _text(nv.nvmlDeviceGetUUID(handle)).removeprefix("GPU-")),
        pci_bus_id=u.read("pci_bus_id", lambda: normalize_pci_bus_id(nv.nvmlDeviceGetPciInfo(handle).busId)),
        compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
        memory_total_bytes=int(memory.total) if memory else None,
        memory_free_bytes=int(memory.free) if memory else None,
        max_sm_clock_mhz=u.read("max_sm_clock_mhz",
                                lambda: int(nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_SM))),
        power_limit_w=power_mw / 1000.0 if power_mw is not None else None,
        pcie_generation=u.read("pcie_generation", lambda: int(nv.nvmlDeviceGetCurrPcieLinkGeneration(handle))),
        pcie_generation_max=u.read("pcie_generation_max", lambda: int(nv.nvmlDeviceGetMaxPcieLinkGeneration(handle))),
        pcie_width=u.read("pcie_width", lambda: int(nv.nvmlDeviceGetCurrPcieLinkWidth(handle))),
        pcie_width_max=u.read("pcie_width_max", lambda: int(nv.nvmlDeviceGetMaxPcieLinkWidth(handle))),
        ecc_enabled=bool(ecc[0]) if ecc is not None else None,
    )
    gpu.unknown = u.reasons
    return gpu
