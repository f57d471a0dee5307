"""The data a probe produces: plain frozen dataclasses with a schema-versioned dict form.

Every identity field is a value or ``None``; a ``None`` has its reason in ``DeviceProfile.unknown``.
Nothing here imports torch, so a saved profile can be read anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..dtypes import ALL_DTYPES, Dtype
from ..errors import BadInputError

SCHEMA_VERSION = 1

DeviceKind = Literal["cpu", "cuda", "rocm", "mps"]


@dataclass(frozen=True)
class DtypeVerdict:
    """What one device does with one dtype."""

    supported: bool  # it runs at all (natively or emulated)
    fast: bool  # a native hardware path: tensor/matrix cores, native bf16, AMX...
    why: str  # one line a person can act on


@dataclass(frozen=True)
class CpuIdentity:
    model_name: str | None
    vendor: str | None
    arch: str | None  # platform.machine(): x86_64, aarch64, arm64
    physical_cores: int | None
    logical_cpus: int | None  # CPUs this process may run on
    torch_threads: int | None
    isa: Mapping[str, bool | None]  # the flags that decide low-precision speed; None = could not read
    torch_cpu_capability: str | None  # what ATen dispatches to: DEFAULT, AVX2, AVX512, ...
    onednn_available: bool | None
    onednn_bf16: bool | None  # oneDNN accepts bf16 here (native or emulated)
    onednn_fp16: bool | None


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    compute_capability: str | None  # "9.0"; for ROCm the gfx arch is in `arch`
    arch: str | None  # sm_90 / gfx942
    sm_count: int | None  # streaming multiprocessors (CUDA) or compute units (ROCm)
    memory_total_bytes: int | None
    memory_free_bytes: int | None
    driver_version: str | None
    runtime_version: str | None  # CUDA or HIP version torch was built with
    driver_cuda_version: str | None  # highest CUDA version the driver supports
    dnn_version: str | None  # cuDNN (CUDA) or MIOpen (ROCm)
    max_sm_clock_mhz: int | None
    power_limit_w: float | None
    pcie_generation: int | None  # current link; often lower than max while idle
    pcie_generation_max: int | None
    pcie_width: int | None
    pcie_width_max: int | None
    ecc_enabled: bool | None
    torch_usable: bool  # torch in this environment can run work on it


@dataclass(frozen=True)
class MpsIdentity:
    name: str | None
    macos_version: str | None


Identity = CpuIdentity | GpuIdentity | MpsIdentity


@dataclass(frozen=True)
class MatmulMeasurement:
    """One dtype's square-matmul micro-benchmark on one device."""

    dtype: Dtype
    n: int | None  # the matmul is n x n @ n x n; None when it failed before a size was chosen
    repeats: int
    median_s: float | None
    iqr_s: float | None
    tflops: float | None  # 2 n^3 / median
    relative_to_fp32: float | None  # speed vs fp32 at the same n, measured in the same run
    error: str | None = None  # why it could not be measured
    warning: str | None = None  # e.g. a noisy measurement (IQR/median > 10%)


@dataclass(frozen=True)
class PeakSpec:
    """Vendor peak rates for a known device (dense, not sparse), with where they come from."""

    profile_id: str
    name: str
    tflops: Mapping[Dtype, float | None]
    source: str  # the vendor document and address
    read_via: str | None = None  # the page the figures were read from, when not the document itself
    note: str | None = None


@dataclass(frozen=True)
class DeviceProfile:
    kind: DeviceKind
    torch_device: str  # "cpu", "cuda:0", "mps"; what to pass to torch.device()
    name: str | None
    identity: Identity
    dtypes: Mapping[Dtype, DtypeVerdict]
    suggested_dtype: Dtype
    suggested_why: str
    peak: PeakSpec | None = None
    measured: Mapping[Dtype, MatmulMeasurement] | None = None
    unknown: Mapping[str, str] = field(default_factory=dict)  # field -> why it could not be read
    notes: tuple[str, ...] = ()

    @property
    def index(self) -> int | None:
        return self.identity.index if isinstance(self.identity, GpuIdentity) else None

    def peak_tflops(self, dtype: Dtype) -> float | None:
        return self.peak.tflops.get(dtype) if self.peak else None

    def to_dict(self) -> dict[str, Any]:
        return _device_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceProfile:
        try:
            return _device_from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"device profile is malformed ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class HardwareProfile:
    """Everything `amp-advisor probe` found out about this machine."""

    created_at: str  # ISO 8601, UTC
    hostname: str | None
    platform: str | None
    python_version: str
    torch_version: str | None
    torch_cuda_version: str | None
    torch_hip_version: str | None
    devices: tuple[DeviceProfile, ...]
    notes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def device(self, torch_device: str) -> DeviceProfile:
        for dev in self.devices:
            if dev.torch_device == torch_device:
                return dev
        known = ", ".join(d.torch_device for d in self.devices) or "none"
        raise KeyError(f"no device {torch_device!r} in this profile (devices: {known})")

    # -- dict form -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "host": {"hostname": self.hostname, "platform": self.platform, "python": self.python_version},
            "torch": {
                "version": self.torch_version,
                "cuda": self.torch_cuda_version,
                "hip": self.torch_hip_version,
            },
            "devices": [_device_to_dict(d) for d in self.devices],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwareProfile:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BadInputError(
                f"hardware profile has schema_version {version!r}; this amp-advisor reads version "
                f"{SCHEMA_VERSION}. Re-run `amp-advisor probe --json` with this version."
            )
        try:
            host, torch_info = data["host"], data["torch"]
            return cls(
                schema_version=version,
                created_at=data["created_at"],
                hostname=host.get("hostname"),
                platform=host.get("platform"),
                python_version=host["python"],
                torch_version=torch_info.get("version"),
                torch_cuda_version=torch_info.get("cuda"),
                torch_hip_version=torch_info.get("hip"),
                devices=tuple(_device_from_dict(d) for d in data["devices"]),
                notes=tuple(data.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"hardware profile is malformed ({type(exc).__name__}: {exc})") from None


def _dtype_map(values: Mapping[Dtype, Any], convert) -> dict[str, Any]:
    return {d.value: convert(values[d]) for d in ALL_DTYPES if d in values}


def _device_to_dict(dev: DeviceProfile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": dev.kind,
        "index": dev.index,
        "name": dev.name,
        "torch_device": dev.torch_device,
        "identity": dataclasses.asdict(dev.identity),
        "unknown": dict(dev.unknown),
        "dtypes": _dtype_map(dev.dtypes, dataclasses.asdict),
        "suggested_dtype": dev.suggested_dtype.value,
        "suggested_why": dev.suggested_why,
        "peak_tflops": _dtype_map(dev.peak.tflops, lambda v: v) if dev.peak else None,
        "peak_source": (
            {
                "profile": dev.peak.profile_id,
                "name": dev.peak.name,
                "source": dev.peak.source,
                "read_via": dev.peak.read_via,
                "note": dev.peak.note,
            }
            if dev.peak
            else None
        ),
        "notes": list(dev.notes),
    }
    if dev.measured is not None:
        out["measured_tflops"] = {d.value: m.tflops for d, m in dev.measured.items()}
        out["bench"] = {d.value: _measurement_to_dict(m) for d, m in dev.measured.items()}
    return out


def _measurement_to_dict(m: MatmulMeasurement) -> dict[str, Any]:
    out = dataclasses.asdict(m)
    out["dtype"] = m.dtype.value
    return out


_IDENTITY_BY_KIND = {"cpu": CpuIdentity, "cuda": GpuIdentity, "rocm": GpuIdentity, "mps": MpsIdentity}


def _device_from_dict(data: Mapping[str, Any]) -> DeviceProfile:
    identity_cls = _IDENTITY_BY_KIND[data["kind"]]
    peak = None
    if data.get("peak_tflops") is not None:
        src = data["peak_source"]
        peak = PeakSpec(
            profile_id=src["profile"],
            name=src["name"],
            tflops={Dtype(k): v for k, v in data["peak_tflops"].items()},
            source=src["source"],
            read_via=src.get("read_via"),
            note=src.get("note"),
        )
    measured = None
    if "bench" in data:
        measured = {
            Dtype(k): MatmulMeasurement(**{**v, "dtype": Dtype(v["dtype"])}) for k, v in data["bench"].items()
        }
    return DeviceProfile(
        kind=data["kind"],
        torch_device=data["torch_device"],
        name=data.get("name"),
        identity=identity_cls(**data["identity"]),
        dtypes={Dtype(k): DtypeVerdict(**v) for k, v in data["dtypes"].items()},
        suggested_dtype=Dtype(data["suggested_dtype"]),
        suggested_why=data["suggested_why"],
        peak=peak,
        measured=measured,
        unknown=dict(data.get("unknown", {})),
        notes=tuple(data.get("notes", ())),
    )


@dataclass(frozen=True)
class DeviceFacts:
    """What a device-specific probe found, before peaks, measurements and the suggestion are added."""

    kind: DeviceKind
    torch_device: str
    name: str | None
    identity: Identity
    verdicts: Mapping[Dtype, DtypeVerdict]
    usable: bool  # torch can run work on it here (so it can be benchmarked)
    unknown: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
