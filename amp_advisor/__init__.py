"""amp-advisor: how to use mixed precision on the machine in front of you.

Public API: ``probe`` (what this machine can do per device and dtype), ``bench`` (measure one
training configuration). Heavy modules (torch)
are imported on first use, so ``import amp_advisor`` and ``amp-advisor --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["probe", "bench", "HardwareProfile", "TrialResult", "Dtype", "AdvisorError", "BadInputError", "__version__"]

from .dtypes import Dtype
from .errors import AdvisorError, BadInputError

if TYPE_CHECKING:
    from .hardware import probe
    from .harness import bench
    from .harness.trial import TrialResult
    from .hardware.model import HardwareProfile


def __getattr__(name: str) -> Any:
    if name == "probe":
        from .hardware import probe

        return probe
    if name == "bench":
        from .harness import bench

        return bench
    if name == "TrialResult":
        from .harness.trial import TrialResult

        return TrialResult
    if name == "HardwareProfile":
        from .hardware.model import HardwareProfile

        return HardwareProfile
    raise AttributeError(f"module 'amp_advisor' has no attribute {name!r}")
