"""Fakes for torch.cuda and pynvml, so GPU logic runs on a CPU-only machine.

The fake pynvml raises the same kind of errors the real one does: subclasses of NVMLError whose
text is what NVML prints ("Not Supported", "Driver Not Loaded", ...).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from pathlib import Path

from amp_advisor.diagnosis import INDEX, METRICS, Diagnosis
from amp_advisor.dtypes import Dtype
from amp_advisor.hardware.cuda import GpuProps
from amp_advisor.harness.trial import StepTimes, TrialResult, failed
from amp_advisor.numerics import GradStats
from amp_advisor.tuning.store import RunStore
from amp_advisor.tuning.tuner import Tuner, TuneSettings

WORKLOADS = Path(__file__).parent / "workloads"


@dataclass(frozen=True)
class FakeGpu:
    name: str
    cc: tuple[int, int]
    sms: int
    memory_gib: int
    uuid: str
    bus_id: str  # NVML spelling: 00000000:3B:00.0
    gcn_arch: str | None = None


# The table the issue names, with the names each GPU really reports.
GPU_TABLE = {
    "V100": FakeGpu("Tesla V100-SXM2-16GB", (7, 0), 80, 16, "0f1e7a1c-0000-0000-0000-000000000070", "00000000:1A:00.0"),
    "T4": FakeGpu("Tesla T4", (7, 5), 40, 16, "0f1e7a1c-0000-0000-0000-000000000075", "00000000:1B:00.0"),
    "A100": FakeGpu("NVIDIA A100-SXM4-80GB", (8, 0), 108, 80,
                    "0f1e7a1c-0000-0000-0000-000000000080", "00000000:1C:00.0"),
    "RTX 4090": FakeGpu("NVIDIA GeForce RTX 4090", (8, 9), 128, 24,
                        "0f1e7a1c-0000-0000-0000-000000000089", "00000000:1D:00.0"),
    "H100": FakeGpu("NVIDIA H100 80GB HBM3", (9, 0), 132, 80,
                    "0f1e7a1c-0000-0000-0000-000000000090", "00000000:1E:00.0"),
    "B200": FakeGpu("NVIDIA B200", (10, 0), 148, 180, "0f1e7a1c-0000-0000-0000-000000000100", "00000000:1F:00.0"),
}

CUDA_ARCH_LIST = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


class FakeCuda:
    """Stands in for TorchCuda: the torch.cuda view of a machine."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        cuda: str | None = "12.8",
        hip: str | None = None,
        unavailable: str | None = None,
        arch_list: list[str] | None = None,
    ) -> None:
        self.gpus = gpus
        self._cuda, self._hip, self._unavailable = cuda, hip, unavailable
        self._arch_list = CUDA_ARCH_LIST if arch_list is None else arch_list

    def torch_version(self) -> str:
        return "2.99.0+fake"

    def cuda_version(self) -> str | None:
        return self._cuda

    def hip_version(self) -> str | None:
        return self._hip

    def availability(self) -> tuple[int, str | None]:
        if self._unavailable:
            return 0, self._unavailable
        return len(self.gpus), None

    def properties(self, index: int) -> GpuProps:
        g = self.gpus[index]
        domain, bus, devfn = g.bus_id.lower().split(":")
        return GpuProps(
            name=g.name, major=g.cc[0], minor=g.cc[1], multi_processor_count=g.sms,
            total_memory=g.memory_gib * 2**30, uuid=g.uuid, pci_bus_id=f"{int(domain, 16):04x}:{bus}:{devfn}",
            gcn_arch=g.gcn_arch,
        )

    def arch_list(self) -> list[str]:
        return list(self._arch_list)

    def dnn_version(self) -> str | None:
        return "91000"

    def mem_get_info(self, index: int) -> tuple[int, int]:
        total = self.gpus[index].memory_gib * 2**30
        return total - 2**30, total


class NVMLError(Exception):
    pass


def _nvml_error(name: str, text: str) -> type[NVMLError]:
    return type(f"NVMLError_{name}", (NVMLError,), {"__str__": lambda self: text})


NVMLError_NotSupported = _nvml_error("NotSupported", "Not Supported")
NVMLError_LibraryNotFound = _nvml_error("LibraryNotFound", "NVML Shared Library Not Found")
NVMLError_DriverNotLoaded = _nvml_error("DriverNotLoaded", "Driver Not Loaded")


@dataclass
class FakeNvmlConfig:
    gpus: list[FakeGpu]
    init_error: type[NVMLError] | None = None
    not_supported: set[str] = field(default_factory=set)  # pynvml function names that raise NotSupported
    calls: list[str] = field(default_factory=list)


def fake_pynvml(config: FakeNvmlConfig) -> types.ModuleType:
    """A module with pynvml's names, answering from `config`."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_CLOCK_SM = 1

    def api(fn):
        def wrapper(*args):
            config.calls.append(fn.__name__)
            if fn.__name__ in config.not_supported:
                raise NVMLError_NotSupported()
            return fn(*args)

        wrapper.__name__ = fn.__name__
        setattr(nv, fn.__name__, wrapper)
        return wrapper

    @api
    def nvmlInit():
        if config.init_error:
            raise config.init_error()

    @api
    def nvmlShutdown():
        return None

    @api
    def nvmlSystemGetDriverVersion():
        return "570.86.15"

    @api
    def nvmlSystemGetCudaDriverVersion():
        return 12080

    @api
    def nvmlDeviceGetCount():
        return len(config.gpus)

    @api
    def nvmlDeviceGetHandleByIndex(i):
        return config.gpus[i]

    @api
    def nvmlDeviceGetName(g):
        return g.name

    @api
    def nvmlDeviceGetUUID(g):
        return "GPU-" + g.uuid

    @api
    def nvmlDeviceGetPciInfo(g):
        return types.SimpleNamespace(busId=g.bus_id.encode())

    @api
    def nvmlDeviceGetCudaComputeCapability(g):
        return g.cc

    @api
    def nvmlDeviceGetMemoryInfo(g):
        total = g.memory_gib * 2**30
        return types.SimpleNamespace(total=total, free=total - 2**29, used=2**29)

    @api
    def nvmlDeviceGetMaxClockInfo(g, clock):
        assert clock == nv.NVML_CLOCK_SM
        return 1980

    @api
    def nvmlDeviceGetEnforcedPowerLimit(g):
        return 700_000  # milliwatts

    @api
    def nvmlDeviceGetCurrPcieLinkGeneration(g):
        return 1  # idle links train down

    @api
    def nvmlDeviceGetMaxPcieLinkGeneration(g):
        return 5

    @api
    def nvmlDeviceGetCurrPcieLinkWidth(g):
        return 16

    @api
    def nvmlDeviceGetMaxPcieLinkWidth(g):
        return 16

    @api
    def nvmlDeviceGetEccMode(g):
        return (1, 1)

    return nv


def nvml_reader(config: FakeNvmlConfig):
    """A `nvml=` argument for probe(): reads the fake module."""
    from amp_advisor.hardware.nvml import read_nvml

    return lambda: read_nvml(loader=lambda: fake_pynvml(config))


def missing_pynvml():
    raise ImportError("No module named 'pynvml'")


# /proc/cpuinfo of the CPUs the machines here have (and CI may have): the probe's rules read them.
CPUINFO_EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma f16c
physical id\t: 0
core id\t\t: 0

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma f16c
physical id\t: 0
core id\t\t: 1
"""

CPUINFO_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
physical id\t: 0
core id\t\t: 0
"""


CPUINFO_AVX512_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512_bf16
physical id\t: 0
core id\t\t: 0
"""

def fake_cpu_profile(cpuinfo_text: str = CPUINFO_EPYC_AVX2):
    from amp_advisor.hardware import probe

    return probe("cpu", cpuinfo_text=cpuinfo_text).devices[0]


def fake_h100_profile():
    from amp_advisor.hardware import probe

    gpu = GPU_TABLE["H100"]
    return probe("cuda", cuda=FakeCuda([gpu]), nvml=nvml_reader(FakeNvmlConfig([gpu]))).devices[0]


# ---------------------------------------------------------------------- a synthetic machine for tune
GPU_RATES = {Dtype.FP32: 1000.0, Dtype.TF32: 4000.0, Dtype.BF16: 9000.0, Dtype.FP16: 9500.0}
FLOPS_PER_SAMPLE = 3e10


class SyntheticWorker:
    """A machine where each dtype has a peak rate, small batches pay a fixed overhead, and
    optionally some batches run out of memory, some dtypes break numerics, or the whole machine
    is slower for a while (`slow={trial index: factor}`, 0-based in the order trials ran), or the
    first measurement of a configuration is (`slow_first={(dtype, batch): factor}`)."""

    world_size = 1  # the ranks a trial runs on (as Worker)

    def __init__(self, rates, *, oom_at=None, loss_diff=None, skip_rate=None, interrupt_after=None, stall=(),
                 memory_per_sample=None, slow=None, rate_at=None, slow_first=None, culprit=None, island_cost=0.05):
        self.rates, self.oom_at = rates, oom_at or {}
        self.rate_at = rate_at or {}  # (dtype, batch) -> samples/s, overriding the model below
        self.memory_per_sample = memory_per_sample or {}  # bytes per sample by dtype; default 1e8
        self.stall = set(stall)  # (dtype, batch): the first step is slow by accident (a busy machine)
        self.loss_diff, self.skip_rate = loss_diff or {}, skip_rate or {}
        self.interrupt_after = interrupt_after
        self.slow = slow or {}
        self.slow_first = dict(slow_first or {})
        # dtype -> the module that breaks its numerics (what diagnose() names); with that module an
        # fp32 island, the dtype keeps fp32's numerics and runs island_cost slower
        self.culprit, self.island_cost = culprit or {}, island_cost
        self.specs = []
        self.diagnosed = []

    def diagnose(self, spec):
        """A synthetic X-ray: the dtype's culprit, found where the forward pass first overflows."""
        self.diagnosed.append(spec)
        name = self.culprit.get(spec.dtype)
        modules = (name, "(model)") if name else ("layer", "(model)")
        nan = math.nan
        row = {m: [nan] * len(METRICS) for m in modules}
        if name:
            row[name][INDEX["out_nonfinite"]], row[name][INDEX["in_nonfinite"]] = 1.0, 0.0
            row[name][INDEX["ref_out_max"]] = 2.6e5
        values = tuple(tuple(tuple(row[m]) for m in modules) for _ in range(spec.steps))
        return Diagnosis(spec.workload, spec.dtype, spec.batch_size, spec.device, spec.steps, modules,
                         ("Linear", "Model"), values, losses=(math.nan,) * spec.steps,
                         ref_losses=(1.0,) * spec.steps, scales=(spec.init_scale,) * spec.steps)

    def spawn(self):
        pass

    def close(self):
        pass

    def step_s(self, dtype, bs, accum=1):
        samples = bs * accum
        if (dtype, bs) in self.rate_at:
            return samples / self.rate_at[(dtype, bs)]
        return 0.002 * accum + samples / self.rates[dtype]  # fixed overhead per micro-batch + per-sample work

    def run(self, spec):
        index = len(self.specs)
        self.specs.append(spec)
        if self.interrupt_after is not None and len(self.specs) > self.interrupt_after:
            raise KeyboardInterrupt("synthetic Ctrl-C")
        dtype, bs = spec.dtype, spec.batch_size
        if bs >= self.oom_at.get(dtype, math.inf):
            return failed(spec, "oom", "CUDA out of memory. Tried to allocate 4.00 GiB")
        samples = bs * spec.grad_accum
        step = (self.step_s(dtype, bs, spec.grad_accum) * self.slow.get(index, 1.0)
                * self.slow_first.pop((dtype, bs), 1.0))
        if spec.abandon_after_s and (step > spec.abandon_after_s or (dtype, bs) in self.stall):
            return failed(spec, "pruned", f"stopped early: the first step took {step:.2f} s, over the "
                                          f"{spec.abandon_after_s:.2f} s allowed")
        repaired = self.culprit.get(dtype) is not None and self.culprit.get(dtype) in spec.fp32_modules
        if repaired:
            step *= 1 + self.island_cost
        skip_rate = 0.0 if repaired else self.skip_rate.get(dtype, 0.0)
        skipped = int(skip_rate * spec.steps) if dtype is Dtype.FP16 else None
        loss_diff = 0.001 if repaired else self.loss_diff.get(dtype, 0.001)
        curve = tuple(1.0 - 0.01 * i for i in range(spec.warmup_steps + spec.steps))
        compared = min(spec.compare_steps or len(curve), len(curve))
        return TrialResult(
            spec=spec, status="ok", step_time_s=StepTimes(step, 0.0, step, step, (step,) * spec.steps),
            samples_per_s=samples / step, peak_memory_bytes=int(10**9 + bs * self.memory_per_sample.get(dtype, 10**8)),
            memory_method="synthetic", skipped_steps=skipped, wall_s=0.5 + step * (spec.steps + spec.warmup_steps),
            final_loss_scale=spec.init_scale if dtype is Dtype.FP16 else None,
            flops_per_step=samples * FLOPS_PER_SAMPLE, tflops=samples * FLOPS_PER_SAMPLE / step / 1e12,
            warmup_losses=curve[: spec.warmup_steps], losses=curve[spec.warmup_steps:],
            fp32_losses=curve[:compared] if dtype is not Dtype.FP32 and spec.compare_fp32 else (),
            loss_rel_diff_vs_fp32=((loss_diff if spec.compare_fp32 else None)
                                   if dtype is not Dtype.FP32 else 0.0),
            grad_stats=GradStats(1.0, 100, 0.0, 0.0, 0.0, 0.01, {-7: 100}),
            tf32=bool(spec.tf32) or dtype is Dtype.TF32,
        )


def run_tuner(tmp_path, worker, profile=None, on_event=None, **settings):
    settings = {"workload": str(WORKLOADS / "tiny.py"), "device": "cuda:0", **settings}
    store = RunStore(tmp_path / "run")
    tuner_settings = TuneSettings(**settings)
    store.create(tuner_settings.to_dict())
    tuner = Tuner(tuner_settings, store, worker=worker, device_profile=profile or fake_h100_profile(),
                  on_event=on_event)
    return tuner.run(), store
