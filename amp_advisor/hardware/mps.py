"""Apple GPUs through Metal Performance Shaders."""

from __future__ import annotations

import platform

from ..dtypes import Dtype
from .model import DeviceFacts, DtypeVerdict, MpsIdentity


def probe_mps() -> DeviceFacts | None:
    import torch

    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return None
    macos = platform.mac_ver()[0] or None
    bf16 = torch.backends.mps.is_macos_or_newer(14, 0)  # MPS gained bf16 in macOS 14
    verdicts = {
        Dtype.FP32: DtypeVerdict(True, True, "native fp32 on the Apple GPU"),
        Dtype.TF32: DtypeVerdict(False, False, "TF32 is an NVIDIA tensor-core mode"),
        Dtype.FP16: DtypeVerdict(True, True, "native fp16 ALUs on Apple GPUs"),
        Dtype.BF16: DtypeVerdict(
            bf16, False, "bf16 runs on macOS 14+, without a measured speed advantage; run --bench"
            if bf16 else "bf16 on MPS needs macOS 14 or newer",
        ),
        Dtype.FP8: DtypeVerdict(False, False, "no fp8 matmul on MPS"),
    }
    identity = MpsIdentity(name=f"Apple {platform.machine()} GPU", macos_version=macos)
    return DeviceFacts("mps", "mps", identity.name, identity, verdicts, usable=True)
