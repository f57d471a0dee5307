"""What each kind of hardware does natively with each dtype.

Pure functions from facts (compute capability, gfx arch, CPU flags) to verdicts, so that every
rule is testable on a CPU-only machine. Sources for the thresholds: NVIDIA's architecture
whitepapers (tensor cores: fp16 from Volta sm_70, bf16/tf32 from Ampere sm_80, fp8 from
Ada sm_89 / Hopper sm_90) and AMD's CDNA whitepapers (matrix cores from gfx908).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..dtypes import Dtype
from .model import DtypeVerdict

Verdicts = dict[Dtype, DtypeVerdict]


def _all(supported: bool, why: str) -> Verdicts:
    return {d: DtypeVerdict(supported, False, why) for d in Dtype}


def unusable(why: str) -> Verdicts:
    """Every dtype unsupported for one reason (no driver, torch without CUDA, ...)."""
    return _all(False, why)


# ----------------------------------------------------------------------------------------- NVIDIA


def parse_compute_capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def cuda_verdicts(cc: tuple[int, int], *, fp8_in_torch: bool = True) -> Verdicts:
    """Verdicts for an NVIDIA GPU of compute capability `cc` that torch can use."""
    sm = f"sm_{cc[0]}{cc[1]}"
    v: Verdicts = {}
    if cc >= (8, 0):
        v[Dtype.FP32] = DtypeVerdict(True, True, f"native fp32 on {sm}; enable TF32 for tensor-core matmuls")
        v[Dtype.TF32] = DtypeVerdict(True, True, f"TF32 tensor cores ({sm} >= sm_80)")
    else:
        v[Dtype.FP32] = DtypeVerdict(True, True, f"native fp32 CUDA cores on {sm}")
        v[Dtype.TF32] = DtypeVerdict(
            False, False, f"TF32 needs sm_80+ tensor cores; on {sm} allow_tf32 has no effect (fp32 matmuls)"
        )

    if cc >= (7, 0):
        v[Dtype.FP16] = DtypeVerdict(True, True, f"fp16 tensor cores ({sm} >= sm_70)")
    elif cc in ((6, 0), (6, 2)):
        v[Dtype.FP16] = DtypeVerdict(True, True, f"native fp16 at 2x the fp32 rate on {sm}, no tensor cores")
    else:
        v[Dtype.FP16] = DtypeVerdict(True, False, f"no tensor cores and no fast fp16 ALUs on {sm}")

    if cc >= (8, 0):
        v[Dtype.BF16] = DtypeVerdict(True, True, f"native bf16 tensor cores ({sm} >= sm_80)")
    else:
        # torch.cuda.is_bf16_supported() says True here because it counts emulation.
        v[Dtype.BF16] = DtypeVerdict(
            True, False, f"bf16 is emulated on {sm} (native bf16 needs sm_80+): runs, but slower than fp16"
        )

    if cc >= (8, 9) and fp8_in_torch:
        v[Dtype.FP8] = DtypeVerdict(True, True, f"fp8 tensor cores ({sm} >= sm_89), via torch._scaled_mm")
    elif cc >= (8, 9):
        v[Dtype.FP8] = DtypeVerdict(False, False, "the GPU has fp8 tensor cores but this torch has no fp8 matmul")
    else:
        v[Dtype.FP8] = DtypeVerdict(False, False, f"fp8 needs sm_89+ (Ada/Hopper); this GPU is {sm}")
    return v


def torch_has_kernels_for(cc: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether torch's compiled arch list can run on `cc`.

    A cubin for sm_XY runs on sm_XZ with Z >= Y (same major); PTX for compute_XY is JIT-compiled
    for any newer GPU. An empty list means torch did not say, so assume yes.
    """
    if not arch_list:
        return True
    for entry in arch_list:
        kind, _, digits = entry.partition("_")
        digits = digits.rstrip("af")  # sm_90a, sm_100f: arch-specific variants
        if not digits.isdigit() or len(digits) < 2:
            continue
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and built[0] == cc[0] and built[1] <= cc[1]:
            return True
        if kind == "compute" and built <= cc:
            return True
    return False


# -------------------------------------------------------------------------------------------- AMD


def gfx_base(arch: str) -> str:
    """Strip feature suffixes: gfx942:sramecc+:xnack- -> gfx942."""
    return arch.split(":")[0].strip().lower()


def rocm_verdicts(arch: str) -> Verdicts:
    """Verdicts for an AMD GPU from its gfx architecture name."""
    base = gfx_base(arch)
    cdna = {"gfx908": 1, "gfx90a": 2, "gfx940": 3, "gfx941": 3, "gfx942": 3, "gfx950": 4}.get(base)
    rdna3 = base.startswith("gfx11")
    rdna4 = base.startswith("gfx12")
    v: Verdicts = {Dtype.FP32: DtypeVerdict(True, True, f"native fp32 on {base}")}
    if cdna == 3:
        v[Dtype.TF32] = DtypeVerdict(True, True, f"xf32 matrix cores on {base} (CDNA3)")
    else:
        v[Dtype.TF32] = DtypeVerdict(False, False, f"no TF32/xf32 matrix mode on {base}; fp32 matmuls stay fp32")
    if cdna or rdna3 or rdna4:
        label = f"CDNA{cdna} matrix cores" if cdna else "WMMA matrix instructions"
        v[Dtype.FP16] = DtypeVerdict(True, True, f"fp16 {label} on {base}")
        v[Dtype.BF16] = DtypeVerdict(True, True, f"bf16 {label} on {base}")
    else:
        v[Dtype.FP16] = DtypeVerdict(True, False, f"no matrix cores known for {base}")
        v[Dtype.BF16] = DtypeVerdict(True, False, f"bf16 without matrix cores on {base}: emulated, slow")
    if cdna in (3, 4) or rdna4:
        v[Dtype.FP8] = DtypeVerdict(True, True, f"fp8 matrix cores on {base}")
    else:
        v[Dtype.FP8] = DtypeVerdict(False, False, f"no fp8 matrix support on {base} (needs CDNA3+)")
    return v


# -------------------------------------------------------------------------------------------- CPU

CPU_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")


def cpu_verdicts(
    isa: Mapping[str, bool | None],
    *,
    runs: Mapping[Dtype, str | None],
    arch: str | None = None,
) -> Verdicts:
    """Verdicts for the CPU.

    `isa` has the x86 flags of CPU_ISA_FLAGS (and `bf16` for Arm). `runs` maps each dtype to
    None when a tiny smoke test ran on this CPU, or to the error it raised.
    """
    has = lambda flag: bool(isa.get(flag))  # noqa: E731 - a None (unreadable) flag counts as absent
    arm = arch in ("aarch64", "arm64")
    level = "AVX-512" if has("avx512f") else "AVX2" if has("avx2") else ("NEON/SVE" if arm else "baseline SIMD")

    def ran(dtype: Dtype, fast: bool, why: str) -> DtypeVerdict:
        error = runs.get(dtype)
        if error is not None:
            return DtypeVerdict(False, False, f"a {dtype} matmul failed on this CPU: {error}")
        return DtypeVerdict(True, fast, why)

    v: Verdicts = {
        Dtype.FP32: ran(Dtype.FP32, True, f"the baseline: fp32 on {level} FMA units"),
        Dtype.TF32: DtypeVerdict(False, False, "TF32 is a GPU tensor-core mode; CPU fp32 matmuls stay fp32"),
    }

    if has("amx_bf16"):
        v[Dtype.BF16] = ran(Dtype.BF16, True, "native bf16 via AMX tiles (amx_bf16)")
    elif has("avx512_bf16"):
        v[Dtype.BF16] = ran(Dtype.BF16, True, "native bf16 dot products (avx512_bf16)")
    elif arm and has("bf16"):
        v[Dtype.BF16] = ran(Dtype.BF16, True, "native bf16 instructions (Arm BF16 extension)")
    elif has("avx512f"):
        v[Dtype.BF16] = ran(Dtype.BF16, False, "no avx512_bf16/AMX: bf16 is converted to fp32 on AVX-512, no gain")
    else:
        v[Dtype.BF16] = ran(
            Dtype.BF16, False, f"no avx512_bf16/AMX: bf16 is emulated on {level}, far slower than fp32"
        )

    if has("amx_fp16"):
        v[Dtype.FP16] = ran(Dtype.FP16, True, "native fp16 via AMX tiles (amx_fp16)")
    elif has("avx512_fp16"):
        v[Dtype.FP16] = ran(Dtype.FP16, True, "native fp16 arithmetic (avx512_fp16)")
    elif arm:
        v[Dtype.FP16] = ran(Dtype.FP16, False, "fp16 on Arm NEON without matrix extensions: little or no gain")
    else:
        v[Dtype.FP16] = ran(
            Dtype.FP16, False, f"no avx512_fp16/AMX-FP16: fp16 is emulated on {level}, far slower than fp32"
        )

    v[Dtype.FP8] = ran(Dtype.FP8, False, "no fp8 matrix hardware on CPUs: _scaled_mm runs a reference path")
    return v
