"""Turn a HardwareProfile into text a person reads in a terminal. Returns strings; never prints."""

from __future__ import annotations

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


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [row[-1]]
        lines.append(indent + "  ".join(cells).rstrip())
        if j == 0:
            lines.append(indent + "  ".join("-" * w for w in widths[:-1]) + "  " + "-" * min(widths[-1], 40))
    return lines


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


def render_device(dev: DeviceProfile) -> str:
    title = dev.torch_device if dev.name is None else f"{dev.torch_device}  {dev.name}"
    lines = [title, *_identity_lines(dev), ""]
    header = ["dtype", "supported", "fast", "peak TFLOP/s"]
    if dev.measured is not None:
        header += ["measured TFLOP/s", "vs fp32"]
    rows = [header + ["why"]]
    for dtype in Dtype:
        verdict = dev.dtypes[dtype]
        row = [str(dtype), _fmt(verdict.supported), _fmt(verdict.fast), _tflops(dev.peak_tflops(dtype))]
        if dev.measured is not None:
            m = dev.measured.get(dtype)
            if m is None or m.tflops is None:
                row += ["failed" if m and m.error else "-", "-"]
            else:
                ratio = f"{m.relative_to_fp32:.3g}x" if m.relative_to_fp32 is not None else "-"
                row += [f"{_tflops(m.tflops)} (n={m.n})", ratio]
        rows.append(row + [verdict.why])
    lines += _table(rows)
    lines += ["", f"  suggested dtype: {dev.suggested_dtype}  ({dev.suggested_why})"]
    if dev.peak is not None:
        lines.append(f"  peak rates: {dev.peak.name}, dense; source: {dev.peak.source}")
    for m in (dev.measured or {}).values():
        if m.warning:
            lines.append(f"  note: {m.dtype} benchmark {m.warning}")
    for note in dev.notes:
        lines.append(f"  note: {note}")
    for field, reason in dev.unknown.items():
        lines.append(f"  could not read {field}: {reason}")
    return "\n".join(lines)


def render_profile(profile: HardwareProfile) -> str:
    torch_line = f"torch {profile.torch_version}"
    if profile.torch_cuda_version:
        torch_line += f" (CUDA {profile.torch_cuda_version})"
    elif profile.torch_hip_version:
        torch_line += f" (ROCm/HIP {profile.torch_hip_version})"
    else:
        torch_line += " (CPU-only build)"
    host = profile.hostname or "this machine"
    parts = [f"amp-advisor probe · {host} · {torch_line} · Python {profile.python_version}"]
    parts += [f"note: {n}" for n in profile.notes]
    parts += [render_device(d) for d in profile.devices]
    return "\n\n".join(parts)
