"""Turn a HardwareProfile into what a person reads in a terminal: rich renderables (tables for
the per-dtype verdicts). Returns them; never prints."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from ..console import grid
from ..dtypes import Dtype
from .model import CpuIdentity, DeviceProfile, GpuIdentity, HardwareProfile, MpsIdentity

UNKNOWN = "unknown"


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value}{unit}"


def _gib(nbytes: int | None) -> str:
    return UNKNOWN if nbytes is None else f"{nbytes / 2**30:.1f} GiB"


def _tflops(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _identity_lines(dev: DeviceProfile) -> list[str]:
    ident = dev.identity
    if isinstance(ident, CpuIdentity):
        isa = " ".join(f"{flag}={_fmt(has)}" for flag, has in ident.isa.items())
        return [
            f"  cores: {_fmt(ident.physical_cores)} physical, {_fmt(ident.logical_cpus)} usable CPUs, "
            f"torch threads {_fmt(ident.torch_threads)}; arch {_fmt(ident.arch)}, vendor {_fmt(ident.vendor)}",
            f"  ISA: {isa}",
            f"  torch CPU capability {_fmt(ident.torch_cpu_capability)}; oneDNN {_fmt(ident.onednn_available)} "
            f"(bf16 {_fmt(ident.onednn_bf16)}, fp16 {_fmt(ident.onednn_fp16)})",
        ]
    if isinstance(ident, GpuIdentity):
        cc = (f"compute capability {ident.compute_capability}" if ident.compute_capability
              else f"arch {_fmt(ident.arch)}")
        pcie = (
            f"PCIe gen {_fmt(ident.pcie_generation)}/{_fmt(ident.pcie_generation_max)} "
            f"x{_fmt(ident.pcie_width)}/{_fmt(ident.pcie_width_max)} (current/max)"
        )
        return [
            f"  {cc}, {_fmt(ident.sm_count)} SMs, memory {_gib(ident.memory_total_bytes)} "
            f"({_gib(ident.memory_free_bytes)} free)",
            f"  driver {_fmt(ident.driver_version)} (CUDA {_fmt(ident.driver_cuda_version)}), "
            f"torch runtime {_fmt(ident.runtime_version)}, cuDNN/MIOpen {_fmt(ident.dnn_version)}",
            f"  max SM clock {_fmt(ident.max_sm_clock_mhz, ' MHz')}, power limit {_fmt(ident.power_limit_w, ' W')}, "
            f"{pcie}, ECC {_fmt(ident.ecc_enabled)}",
            f"  uuid {_fmt(ident.uuid)}, PCI {_fmt(ident.pci_bus_id)}, usable by torch: {_fmt(ident.torch_usable)}",
        ]
    if isinstance(ident, MpsIdentity):
        return [f"  macOS {_fmt(ident.macos_version)}"]
    return []


def render_device(dev: DeviceProfile) -> RenderableType:
    title = dev.torch_device if dev.name is None else f"{dev.torch_device}  {dev.name}"
    header = ["dtype", "supported", "fast", "peak TFLOP/s"]
    if dev.measured is not None:
        header += ["measured TFLOP/s", "vs fp32"]
    table = grid(*header, "why")
    for column in table.columns[3:-1]:
        column.justify = "right"
    for dtype in Dtype:
        verdict = dev.dtypes[dtype]
        fast = Text(_fmt(verdict.fast), style="green" if verdict.fast else "")
        row: list[RenderableType] = [str(dtype), _fmt(verdict.supported), fast, _tflops(dev.peak_tflops(dtype))]
        if dev.measured is not None:
            m = dev.measured.get(dtype)
            if m is None or m.tflops is None:
                row += ["failed" if m and m.error else "-", "-"]
            else:
                ratio = f"{m.relative_to_fp32:.3g}x" if m.relative_to_fp32 is not None else "-"
                row += [f"{_tflops(m.tflops)} (n={m.n})", ratio]
        table.add_row(*row, verdict.why)
    lines = [f"suggested dtype: {dev.suggested_dtype}  ({dev.suggested_why})"]
    if dev.peak is not None:
        lines.append(f"peak rates: {dev.peak.name}, dense; source: {dev.peak.source}")
    for m in (dev.measured or {}).values():
        if m.warning:
            lines.append(f"note: {m.dtype} benchmark {m.warning}")
    lines += [f"note: {note}" for note in dev.notes]
    lines += [f"could not read {field}: {reason}" for field, reason in dev.unknown.items()]
    return Group(Text(title, style="bold"), *(Text(line) for line in _identity_lines(dev)), Text(""),
                 Padding(table, (0, 0, 0, 2), expand=False), Text(""), *(Text("  " + line) for line in lines))


def render_profile(profile: HardwareProfile) -> RenderableType:
    torch_line = f"torch {profile.torch_version}"
    if profile.torch_cuda_version:
        torch_line += f" (CUDA {profile.torch_cuda_version})"
    elif profile.torch_hip_version:
        torch_line += f" (ROCm/HIP {profile.torch_hip_version})"
    else:
        torch_line += " (CPU-only build)"
    host = profile.hostname or "this machine"
    parts: list[RenderableType] = [Text(f"amp-advisor probe · {host} · {torch_line} · Python {profile.python_version}")]
    parts += [Text(f"note: {n}") for n in profile.notes]
    for device in profile.devices:
        parts += [Text(""), render_device(device)]
    return Group(*parts)
