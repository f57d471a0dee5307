"""CUDA and ROCm GPUs: torch's view merged with NVML's, and the dtype verdicts.

`TorchCuda` is the only place that touches torch.cuda; tests pass a fake with the same methods,
so the GPU logic is exercised on a CPU-only machine.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Protocol

from ..dtypes import Dtype
from .model import DeviceFacts, DeviceKind, DtypeVerdict, GpuIdentity
from .nvml import NvmlGpu, NvmlReport, normalize_pci_bus_id
from .rules import cuda_verdicts, gfx_base, rocm_verdicts, torch_has_kernels_for, unusable
from .unknowns import Unknowns, describe


@dataclass(frozen=True)
class GpuProps:
    """The subset of torch.cuda.get_device_properties the probe uses."""

    name: str
    major: int
    minor: int
    multi_processor_count: int | None
    total_memory: int | None
    uuid: str | None = None
    pci_bus_id: str | None = None
    gcn_arch: str | None = None  # ROCm only: "gfx942:sramecc+:xnack-"


class CudaRuntime(Protocol):
    def torch_version(self) -> str: ...
    def cuda_version(self) -> str | None: ...
    def hip_version(self) -> str | None: ...
    def availability(self) -> tuple[int, str | None]:
        """(number of usable devices, why none are usable or None)."""
    def properties(self, index: int) -> GpuProps: ...
    def arch_list(self) -> list[str]: ...
    def dnn_version(self) -> str | None: ...
    def mem_get_info(self, index: int) -> tuple[int, int]: ...


class TorchCuda:
    """The real torch.cuda."""

    def __init__(self) -> None:
        import torch

        self._torch = torch

    def torch_version(self) -> str:
        return self._torch.__version__

    def cuda_version(self) -> str | None:
        return self._torch.version.cuda

    def hip_version(self) -> str | None:
        return getattr(self._torch.version, "hip", None)

    def availability(self) -> tuple[int, str | None]:
        torch = self._torch
        if torch.version.cuda is None and self.hip_version() is None:
            return 0, f"torch {torch.__version__} was built without CUDA or ROCm"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = torch.cuda.is_available()
        if available:
            return torch.cuda.device_count(), None
        said = "; ".join(str(w.message) for w in caught)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return 0, f"torch found no usable GPU{hint}" + (f": {said}" if said else "")

    def properties(self, index: int) -> GpuProps:
        p = self._torch.cuda.get_device_properties(index)
        uuid = getattr(p, "uuid", None)
        return GpuProps(
            name=p.name,
            major=p.major,
            minor=p.minor,
            multi_processor_count=getattr(p, "multi_processor_count", None),
            total_memory=getattr(p, "total_memory", None),
            uuid=str(uuid) if uuid is not None else None,
            pci_bus_id=_props_bus_id(p),
            gcn_arch=getattr(p, "gcnArchName", None) if self.hip_version() else None,
        )

    def arch_list(self) -> list[str]:
        return list(self._torch.cuda.get_arch_list())

    def dnn_version(self) -> str | None:
        version = self._torch.backends.cudnn.version()
        if version is None:
            return None
        return str(version) if self.hip_version() else format_cudnn_version(version)

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return self._torch.cuda.mem_get_info(index)


def format_cudnn_version(version: int) -> str:
    """cuDNN encodes 9.10.0 as 91000 (major*10000 from 9 on) and 8.9.2 as 8902 (major*1000 before)."""
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def _props_bus_id(p) -> str | None:
    """torch >= 2.5 exposes the PCI location as three integers."""
    try:
        return f"{int(p.pci_domain_id):04x}:{int(p.pci_bus_id):02x}:{int(p.pci_device_id):02x}.0"
    except (AttributeError, TypeError, ValueError):
        return None


def _match_nvml(props: GpuProps, index: int, nvml: NvmlReport, count: int) -> NvmlGpu | None:
    """Pair torch's device with NVML's: by UUID, then PCI bus id, then index when nothing is masked."""
    if props.uuid:
        for gpu in nvml.gpus:
            if gpu.uuid and gpu.uuid.lower() == props.uuid.lower():
                return gpu
    bus = normalize_pci_bus_id(props.pci_bus_id)
    if bus:
        for gpu in nvml.gpus:
            if gpu.pci_bus_id == bus:
                return gpu
    if len(nvml.gpus) == count and "CUDA_VISIBLE_DEVICES" not in os.environ and index < len(nvml.gpus):
        return nvml.gpus[index]
    return None


NVML_FIELDS = (
    "max_sm_clock_mhz", "power_limit_w", "pcie_generation", "pcie_generation_max",
    "pcie_width", "pcie_width_max", "ecc_enabled",
)


def _unusable_verdicts(hardware: dict[Dtype, DtypeVerdict], reason: str) -> dict[Dtype, DtypeVerdict]:
    """Nothing runs, but say what the hardware would do with a torch that can use it."""
    return {d: DtypeVerdict(False, False, f"{reason}; the hardware: {v.why}") for d, v in hardware.items()}


def probe_gpus(runtime: CudaRuntime, nvml: NvmlReport) -> tuple[list[DeviceFacts], str | None]:
    """All GPUs torch can use, plus NVIDIA GPUs only NVML sees. Returns (facts, why torch sees none)."""
    count, unavailable = runtime.availability()
    is_rocm = runtime.hip_version() is not None
    arch_list = []
    arch_list_error = None
    if count:
        try:
            arch_list = runtime.arch_list()
        except Exception as exc:
            arch_list_error = describe(exc)
    facts = [
        _torch_gpu(runtime, i, nvml, count, is_rocm, arch_list, arch_list_error) for i in range(count)
    ]
    if not count:  # torch cannot use any GPU: still report what the driver sees, and why
        facts = [_nvml_only_gpu(gpu, nvml, unavailable or "torch cannot use CUDA") for gpu in nvml.gpus]
    return facts, unavailable


def _torch_gpu(
    runtime: CudaRuntime, index: int, nvml: NvmlReport, count: int, is_rocm: bool,
    arch_list: list[str], arch_list_error: str | None,
) -> DeviceFacts:
    u = Unknowns()
    props = runtime.properties(index)
    cc = (props.major, props.minor)
    nv = None if is_rocm else _match_nvml(props, index, nvml, count)
    if is_rocm:
        for name in NVML_FIELDS + ("driver_version", "driver_cuda_version"):
            u.mark(name, "NVML reads NVIDIA GPUs only; AMD SMI is not queried")
    elif nv is None:
        for name in NVML_FIELDS + ("driver_version", "driver_cuda_version"):
            u.mark(name, nvml.error or "no NVML device matched this GPU")
    else:
        for name, reason in {**nvml.unknown, **nv.unknown}.items():
            u.mark(name, reason)

    memory_total = (nv.memory_total_bytes if nv else None) or props.total_memory
    memory_free = nv.memory_free_bytes if nv else None
    if memory_free is None:
        free_total = u.read("memory_free_bytes", lambda: runtime.mem_get_info(index))
        memory_free = free_total[0] if free_total else None

    arch = gfx_base(props.gcn_arch) if is_rocm and props.gcn_arch else f"sm_{cc[0]}{cc[1]}"
    identity = GpuIdentity(
        index=index,
        name=props.name,
        uuid=props.uuid or (nv.uuid if nv else None),
        pci_bus_id=normalize_pci_bus_id(props.pci_bus_id) or (nv.pci_bus_id if nv else None),
        compute_capability=None if is_rocm else f"{cc[0]}.{cc[1]}",
        arch=arch,
        sm_count=props.multi_processor_count,
        memory_total_bytes=memory_total,
        memory_free_bytes=memory_free,
        driver_version=None if is_rocm else nvml.driver_version,
        runtime_version=runtime.hip_version() if is_rocm else runtime.cuda_version(),
        driver_cuda_version=None if is_rocm else nvml.driver_cuda_version,
        dnn_version=u.read("dnn_version", runtime.dnn_version),
        torch_usable=True,
        **{name: getattr(nv, name) if nv else None for name in NVML_FIELDS},
    )
    for name in ("uuid", "pci_bus_id", "sm_count"):
        if getattr(identity, name) is None:
            u.mark(name, "not reported by torch or NVML")

    notes: list[str] = []
    if is_rocm:
        verdicts = rocm_verdicts(props.gcn_arch or "unknown")
    else:
        verdicts = cuda_verdicts(cc, fp8_in_torch=_torch_has_fp8())
        if arch_list_error:
            notes.append(f"could not read torch's CUDA arch list ({arch_list_error})")
        elif not torch_has_kernels_for(cc, arch_list):
            reason = f"this torch has no kernels for {arch} (built for {', '.join(arch_list)})"
            verdicts = _unusable_verdicts(verdicts, reason)
            notes.append(reason + ": install a torch build that supports this GPU")
    kind: DeviceKind = "rocm" if is_rocm else "cuda"
    usable = any(v.supported for v in verdicts.values())
    return DeviceFacts(kind, f"cuda:{index}", props.name, identity, verdicts, usable, u.reasons, tuple(notes))


def _nvml_only_gpu(gpu: NvmlGpu, nvml: NvmlReport, reason: str) -> DeviceFacts:
    u = Unknowns()
    for name, why in {**nvml.unknown, **gpu.unknown}.items():
        u.mark(name, why)
    for name in ("sm_count", "runtime_version", "dnn_version"):
        u.mark(name, reason)
    cc = gpu.compute_capability
    identity = GpuIdentity(
        index=gpu.index,
        name=gpu.name,
        uuid=gpu.uuid,
        pci_bus_id=gpu.pci_bus_id,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        arch=f"sm_{cc[0]}{cc[1]}" if cc else None,
        sm_count=None,
        memory_total_bytes=gpu.memory_total_bytes,
        memory_free_bytes=gpu.memory_free_bytes,
        driver_version=nvml.driver_version,
        runtime_version=None,
        driver_cuda_version=nvml.driver_cuda_version,
        dnn_version=None,
        torch_usable=False,
        **{name: getattr(gpu, name) for name in NVML_FIELDS},
    )
    verdicts = _unusable_verdicts(cuda_verdicts(cc), reason) if cc else unusable(
        f"{reason}; compute capability unknown ({gpu.unknown.get('compute_capability', 'not reported')})"
    )
    note = f"torch cannot use this GPU: {reason}. Install a CUDA build of torch to use it."
    return DeviceFacts("cuda", f"cuda:{gpu.index}", gpu.name, identity, verdicts, False, u.reasons, (note,))


def _torch_has_fp8() -> bool:
    import torch

    return hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")
