"""fp32 with bf16 dot products on a CPU: the "matmul" lever, the CPU's counterpart of TF32.

Weights, activations and the optimizer stay fp32; oneDNN does the matmuls as bf16 dot products
(tf32.cpu_bf16_scoped). Offered where the probe calls bf16 fast (AMX, AVX512-BF16), and only to
fp32, where it is judged like any configuration: on speed, and on its loss against eager fp32."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .. import tf32
from ..dtypes import Dtype
from . import register
from .base import OFF, Fragment, Lever, Stage


class CpuMatmulPrecision(Lever):
    name = "matmul"
    title = "fp32 matmuls as bf16"
    stage = Stage.FORMAT
    explore = "leaders"

    def values(self, device) -> tuple[str, ...]:
        bf16 = device.dtypes.get(Dtype.BF16)
        if device.torch_device == "cpu" and bf16 is not None and bf16.supported and bf16.fast:
            return (OFF, tf32.CPU_BF16)
        return (OFF,)

    def valid(self, device_type: str) -> tuple[str, ...]:
        return (OFF, tf32.CPU_BF16) if device_type == "cpu" else (OFF,)

    def applies(self, dtype: Dtype) -> bool:
        return dtype is Dtype.FP32

    def label(self, value: str) -> str:
        return f"with {value} matmuls"

    @contextmanager
    def scope(self, value: str) -> Iterator[None]:
        with tf32.cpu_bf16_scoped():
            yield

    def enable(self, value: str) -> None:
        tf32.enable_cpu_bf16()

    def fragment(self, framework: str, value: str, device_type: str) -> Fragment:
        if framework == "deepspeed":
            return Fragment()  # a process setting: no config key holds it
        return Fragment(lines=list(tf32.CPU_BF16_SOURCE_LINES))


register(CpuMatmulPrecision())
