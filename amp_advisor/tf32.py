"""What "TF32 on" means, in one place: fp32 matmuls (torch.matmul, nn.Linear) at precision "high"
and cuDNN convolutions allowed to use TF32. Trials, `Recommendation.autocast()`, `MixedPrecision`
and the paste-ready snippets all switch it through here, so what is recommended is what was measured.
Which dtypes turn it on is `dtypes.uses_tf32`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# The same switch as source text, for snippets.
SOURCE_LINES = (
    'torch.set_float32_matmul_precision("high")  # TF32 for the matmuls left in fp32 (as measured)',
    "torch.backends.cudnn.allow_tf32 = True",
)


def _state() -> tuple[str, bool]:
    import torch

    return torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32


def _set(precision: str, cudnn: bool) -> None:
    import torch

    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = cudnn


def enable(on: bool = True) -> None:
    """Process-wide, for the backward pass and the optimizer too (as the trials ran)."""
    _set("high" if on else "highest", on)


@contextlib.contextmanager
def scoped(on: bool) -> Iterator[None]:
    """TF32 on or strictly off for the block, restored afterwards: a trial's matmul precision."""
    previous = _state()
    enable(on)
    try:
        yield
    finally:
        _set(*previous)
