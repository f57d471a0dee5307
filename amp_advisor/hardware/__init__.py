"""Hardware: what this machine does fast, per device and dtype. Entry point: `probe()`.

    facts (cpu.py, cuda.py + nvml.py, mps.py) -> + peak rates (specs.py)
        -> + measurements (microbench.py, with bench=True) -> + suggestion (suggest.py)
        -> HardwareProfile (model.py)
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..dtypes import Dtype
from ..errors import BadInputError
from ..limits import MAX_BENCH_SECONDS
from .cpu import probe_cpu
from .cuda import CudaRuntime, TorchCuda, probe_gpus
from .microbench import MatmulRunner, TorchMatmulRunner, default_plan, measure_matmuls
from .model import DeviceFacts, DeviceProfile, DtypeVerdict, HardwareProfile, MatmulMeasurement
from .mps import probe_mps
from .nvml import NvmlReport, read_nvml
from .specs import find_gpu_spec
from .suggest import suggest_dtype

__all__ = ["probe", "DeviceSelector", "parse_device", "DEFAULT_BENCH_SECONDS"]

# Per device. The CPU figure keeps `probe --bench` within a few seconds here even though bf16
# runs ~100x slower than fp32 on an AVX2 CPU; the micro-benchmark shrinks slow dtypes to fit.
DEFAULT_BENCH_SECONDS = {"cpu": 1.5, "cuda": 3.0, "rocm": 3.0, "mps": 3.0}

_DEVICE_RE = re.compile(r"^(all|cpu|mps|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceSelector:
    kind: str  # all | cpu | cuda | mps
    index: int | None = None

    def wants(self, kind: str) -> bool:
        return self.kind == "all" or self.kind == kind or (self.kind == "cuda" and kind == "rocm")

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"



def parse_device(text: str) -> DeviceSelector:
    match = _DEVICE_RE.match(text.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise BadInputError(
            f"unknown device {text!r}: expected all, cpu, cuda, cuda:N or mps (ROCm GPUs are cuda:N in torch)"
        )
    index = match.group(2)
    return DeviceSelector(match.group(1), int(index) if index is not None else None)


def probe(
    device: str = "all",
    *,
    bench: bool = False,
    bench_seconds: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    cuda: CudaRuntime | None = None,
    nvml: Callable[[], NvmlReport] = read_nvml,
    runner_for: Callable[[str], MatmulRunner] = TorchMatmulRunner,
    cpuinfo_text: str | None = None,
) -> HardwareProfile:
    """Find out what each selected device does with fp32, tf32, fp16, bf16 and fp8.

    `device`: all (default), cpu, cuda, cuda:N or mps. With `bench`, each usable device runs a
    bounded matmul micro-benchmark (`bench_seconds` per device). `cuda`, `nvml`, `runner_for`
    and `cpuinfo_text` replace the real hardware access (tests use fakes).
    Raises BadInputError when the selected device does not exist here.
    """
    if bench_seconds is not None and not 0 < bench_seconds <= MAX_BENCH_SECONDS:
        raise BadInputError(f"bench seconds must be > 0 and <= {MAX_BENCH_SECONDS:g}, got {bench_seconds}")
    selector = parse_device(device)
    runtime = cuda if cuda is not None else TorchCuda()
    facts: list[DeviceFacts] = []
    notes: list[str] = []
    if selector.wants("cuda"):
        nvml_report = nvml()
        gpus, unavailable = probe_gpus(runtime, nvml_report)
        facts += _select_gpus(selector, gpus, unavailable, nvml_report)
        if unavailable and selector.kind == "all":
            notes.append(f"no GPU usable by torch: {unavailable}")
    if selector.wants("mps"):
        mps = probe_mps()
        if mps is None and selector.kind == "mps":
            raise BadInputError("--device mps: MPS is not available (it needs Apple silicon and macOS 12.3+)")
        facts += [mps] if mps else []
    if selector.wants("cpu"):
        facts.append(probe_cpu(cpuinfo_text))

    devices = tuple(_finish(f, bench, bench_seconds, on_progress, runner_for) for f in facts)
    return HardwareProfile(
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        hostname=_safe(socket.gethostname),
        platform=_safe(platform.platform),
        python_version=sys.version.split()[0],
        torch_version=runtime.torch_version(),
        torch_cuda_version=runtime.cuda_version(),
        torch_hip_version=runtime.hip_version(),
        devices=devices,
        notes=tuple(notes),
    )


def _select_gpus(
    selector: DeviceSelector, gpus: list[DeviceFacts], unavailable: str | None, nvml_report: NvmlReport
) -> list[DeviceFacts]:
    if selector.kind != "cuda":
        return gpus
    usable = [g for g in gpus if g.usable]
    if not usable:
        seen = f"; NVML sees {len(nvml_report.gpus)} NVIDIA GPU(s)" if nvml_report.gpus else ""
        raise BadInputError(
            f"--device {selector}: no CUDA device is usable here ({unavailable or 'none found'}{seen}). "
            "Install a CUDA build of torch, check the driver, or use --device cpu."
        )
    if selector.index is None:
        return usable
    chosen = [g for g in usable if g.torch_device == f"cuda:{selector.index}"]
    if not chosen:
        names = ", ".join(g.torch_device for g in usable)
        raise BadInputError(f"--device {selector}: no such device; this machine has {names}")
    return chosen


def _finish(
    facts: DeviceFacts,
    bench: bool,
    bench_seconds: float | None,
    on_progress: Callable[[str], None] | None,
    runner_for: Callable[[str], MatmulRunner],
) -> DeviceProfile:
    peak = find_gpu_spec(facts.name) if facts.kind in ("cuda", "rocm") else None
    notes = list(facts.notes)
    if facts.kind in ("cuda", "rocm") and peak is None:
        notes.append(f"no peak rates known for {facts.name!r}: add it to profiles/gpus.toml")
    measured = None
    if bench and facts.usable:
        dtypes = [d for d in Dtype if facts.verdicts[d].supported]
        seconds = bench_seconds if bench_seconds is not None else DEFAULT_BENCH_SECONDS[facts.kind]
        report = (lambda dtype: on_progress(f"{facts.torch_device} {dtype}")) if on_progress else None
        plan = default_plan(facts.kind, seconds, len(dtypes))
        measured = measure_matmuls(runner_for(facts.torch_device), dtypes, plan, report)
    elif bench:
        notes.append("not benchmarked: torch cannot run work on this device here")
    suggested, why = suggest_dtype(facts.verdicts, measured)
    return DeviceProfile(
        kind=facts.kind,
        torch_device=facts.torch_device,
        name=facts.name,
        identity=facts.identity,
        dtypes=_with_measured_speed(facts.verdicts, measured),
        suggested_dtype=suggested,
        suggested_why=why,
        peak=peak,
        measured=measured,
        unknown=facts.unknown,
        notes=tuple(notes),
    )


def speed_phrase(relative_to_fp32: float) -> str:
    """1.9 -> '1.9x faster than fp32'; 0.0089 -> '112x slower than fp32'."""
    if relative_to_fp32 >= 1:
        return f"{relative_to_fp32:.1f}x faster than fp32"
    slower = 1 / relative_to_fp32
    return f"{slower:.0f}x slower than fp32" if slower >= 10 else f"{slower:.1f}x slower than fp32"


def _with_measured_speed(
    verdicts: Mapping[Dtype, DtypeVerdict], measured: Mapping[Dtype, MatmulMeasurement] | None
) -> dict[Dtype, DtypeVerdict]:
    """Append what the micro-benchmark saw to each verdict's reason."""
    out = dict(verdicts)
    for dtype, m in (measured or {}).items():
        if dtype is Dtype.FP32:
            continue
        if m.error:
            extra = f"benchmark failed: {m.error}"
        elif m.relative_to_fp32 is not None:
            extra = f"measured: {speed_phrase(m.relative_to_fp32)} (n={m.n})"
        else:
            continue
        v = out[dtype]
        out[dtype] = DtypeVerdict(v.supported, v.fast, f"{v.why} [{extra}]")
    return out


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None
