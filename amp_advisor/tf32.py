"""The fp32 matmul precision, in one place: what "TF32 on" means on a GPU (fp32 matmuls at
precision "high", cuDNN convolutions allowed to use TF32), and its CPU counterpart, fp32 matmuls
done as bf16 dot products by oneDNN (`torch.backends.mkldnn.matmul.fp32_precision = "bf16"`, the
"matmul" lever). Trials, `Recommendation.autocast()`, `MixedPrecision` and the paste-ready snippets
all switch them through here, so what is recommended is what was measured. Which dtypes turn TF32
on is `dtypes.uses_tf32`.

State is saved and restored per backend (cuda, mkldnn): torch refuses to report one global matmul
precision once the backends differ (`get_float32_matmul_precision` raises), so that one is
saved only where torch reports it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# The same switches as source text, for snippets.
SOURCE_LINES = (
    'torch.set_float32_matmul_precision("high")  # TF32 for the matmuls left in fp32 (as measured)',
    "torch.backends.cudnn.allow_tf32 = True",
)
CPU_BF16 = "bf16"
CPU_BF16_SOURCE_LINES = (
    f'torch.backends.mkldnn.matmul.fp32_precision = "{CPU_BF16}"  # fp32 weights and math, its matmuls as bf16 '
    "dot products (as measured)",
)
_MATMUL_BACKENDS = ("cuda", "mkldnn")


def _state() -> tuple[str | None, tuple[str, ...], bool]:
    """The legacy global precision (None where the backends differ and torch will not report
    one), each backend's own, and cuDNN's TF32 switch."""
    import torch

    try:
        legacy: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:
        legacy = None
    return (legacy, tuple(getattr(torch.backends, name).matmul.fp32_precision for name in _MATMUL_BACKENDS),
            torch.backends.cudnn.allow_tf32)


def _restore(state: tuple[str | None, tuple[str, ...], bool]) -> None:
    """The global first (setting it sets every backend), then each backend's own over it."""
    import torch

    legacy, precisions, cudnn = state
    if legacy is not None:
        torch.set_float32_matmul_precision(legacy)
    for name, precision in zip(_MATMUL_BACKENDS, precisions, strict=True):
        getattr(torch.backends, name).matmul.fp32_precision = precision
    torch.backends.cudnn.allow_tf32 = cudnn


def enable(on: bool = True) -> None:
    """Process-wide, for the backward pass and the optimizer too (as the trials ran). Off is
    strict fp32 on every backend (a bf16-matmul setting included)."""
    import torch

    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on


@contextlib.contextmanager
def scoped(on: bool) -> Iterator[None]:
    """TF32 on or strictly off for the block, restored afterwards: a trial's matmul precision,
    and strict fp32 for a reference pass inside any trial."""
    previous = _state()
    enable(on)
    try:
        yield
    finally:
        _restore(previous)


def enable_cpu_bf16() -> None:
    """fp32 matmuls on the CPU as bf16 dot products, process-wide (as the trial ran)."""
    import torch

    torch.backends.mkldnn.matmul.fp32_precision = CPU_BF16  # type: ignore[attr-defined]  # set up at import


@contextlib.contextmanager
def cpu_bf16_scoped() -> Iterator[None]:
    previous = _state()
    enable_cpu_bf16()
    try:
        yield
    finally:
        _restore(previous)
