"""The CPU: identity, ISA flags that decide low-precision speed, and dtype verdicts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dtypes import Dtype, torch_dtype
from .model import CpuIdentity, DeviceFacts
from .rules import CPU_ISA_FLAGS, cpu_verdicts
from .unknowns import Unknowns, describe

CPUINFO_PATH = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    model_name: str | None
    vendor: str | None
    flags: frozenset[str]
    physical_cores: int | None


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse Linux /proc/cpuinfo (x86 `flags`, Arm `Features`)."""
    model = vendor = None
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    physical_id = "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "vendor_id" and vendor is None:
            vendor = value
        elif key == "CPU implementer" and vendor is None:
            vendor = f"Arm implementer {value}"
        elif key in ("flags", "Features"):
            flags.update(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
    return CpuInfo(model, vendor, frozenset(flags), len(cores) or None)


def _macos_sysctl(name: str) -> str | None:
    out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    return out.stdout.strip() or None


def _read_cpu_info(cpuinfo_text: str | None, unknowns: Unknowns) -> CpuInfo:
    if cpuinfo_text is not None:
        return parse_cpuinfo(cpuinfo_text)
    if CPUINFO_PATH.exists():
        text = unknowns.read("cpuinfo", lambda: CPUINFO_PATH.read_text(errors="replace"))
        if text is not None:
            return parse_cpuinfo(text)
    if sys.platform == "darwin":
        brand = unknowns.read("model_name", lambda: _macos_sysctl("machdep.cpu.brand_string"))
        bf16 = unknowns.read("isa", lambda: _macos_sysctl("hw.optional.arm.FEAT_BF16"))
        return CpuInfo(brand, "Apple" if brand and "Apple" in brand else None,
                       frozenset({"bf16"} if bf16 == "1" else ()), None)
    unknowns.mark("isa", f"no /proc/cpuinfo on {sys.platform}: ISA flags not read")
    return CpuInfo(platform.processor() or None, None, frozenset(), None)


def _smoke_matmul(dtype: Dtype) -> None:
    """A 16x16 matmul in `dtype` on the CPU: does this torch run it at all?"""
    a, b = torch.randn(16, 16), torch.randn(16, 16)
    if dtype is Dtype.FP8:
        scale = torch.tensor(1.0)
        torch._scaled_mm(
            a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t(),
            scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16,
        )
        return
    a.to(torch_dtype(dtype)) @ b.to(torch_dtype(dtype))


def _smoke_runs() -> dict[Dtype, str | None]:
    runs: dict[Dtype, str | None] = {}
    for dtype in (Dtype.FP32, Dtype.FP16, Dtype.BF16, Dtype.FP8):
        try:
            _smoke_matmul(dtype)
            runs[dtype] = None
        except Exception as exc:  # an unsupported dtype is a verdict, not a crash
            runs[dtype] = describe(exc)
    return runs


def probe_cpu(cpuinfo_text: str | None = None) -> DeviceFacts:
    unknowns = Unknowns()
    info = _read_cpu_info(cpuinfo_text, unknowns)
    arch = platform.machine() or None
    # No flags at all means they could not be read, not that the CPU has none: None, not False.
    known = (lambda flag: flag in info.flags) if info.flags else (lambda flag: None)
    if not info.flags:
        unknowns.mark("isa", "the OS reported no CPU feature flags")
    isa = {flag: known(flag) for flag in CPU_ISA_FLAGS}
    if arch in ("aarch64", "arm64"):
        isa["bf16"] = known("bf16")
    if info.physical_cores is None:
        unknowns.mark("physical_cores", "cpuinfo lists no core ids (VM or non-x86 kernel)")
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    mkldnn = torch.backends.mkldnn
    identity = CpuIdentity(
        model_name=info.model_name,
        vendor=info.vendor,
        arch=arch,
        physical_cores=info.physical_cores,
        logical_cpus=logical,
        torch_threads=torch.get_num_threads(),
        isa=isa,
        torch_cpu_capability=unknowns.read("torch_cpu_capability", torch.backends.cpu.get_cpu_capability),
        onednn_available=unknowns.read("onednn_available", mkldnn.is_available),
        onednn_bf16=unknowns.read("onednn_bf16", torch.ops.mkldnn._is_mkldnn_bf16_supported),
        onednn_fp16=unknowns.read("onednn_fp16", torch.ops.mkldnn._is_mkldnn_fp16_supported),
    )
    if info.model_name is None:
        unknowns.mark("model_name", "not reported by the OS")
    verdicts = cpu_verdicts(isa, runs=_smoke_runs(), arch=arch)
    return DeviceFacts(
        kind="cpu",
        torch_device="cpu",
        name=info.model_name,
        identity=identity,
        verdicts=verdicts,
        usable=True,
        unknown=unknowns.reasons,
    )
