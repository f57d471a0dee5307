"""amp-advisor: how to use mixed precision on the machine in front of you.

Public API: ``probe`` (what this machine can do per device and dtype), ``bench`` (measure one
training configuration), ``tune`` (search and recommend), ``Recommendation`` (use it in training
code), ``MixedPrecision`` (the training-time helper a recommendation becomes), ``HfSpec`` (a
Hugging Face architecture as a workload: ``bench(hf=HfSpec("gpt2"), ...)``), ``compare`` (runs
side by side). Heavy modules
(torch, scikit-optimize) are imported on first use, so ``import amp_advisor`` and ``amp-advisor --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .dtypes import Dtype
from .errors import AdvisorError, BadInputError

# public name -> the module that defines it, imported on first access
_LAZY = {
    "probe": ".hardware",
    "HardwareProfile": ".hardware.model",
    "bench": ".lifecycle",
    "diagnose": ".lifecycle",
    "Diagnosis": ".diagnosis",
    "keep_in_fp32": ".islands",
    "TrialResult": ".harness.trial",
    "tune": ".lifecycle",
    "Recommendation": ".recommendation",
    "MixedPrecision": ".runtime",
    "HfSpec": ".hf",
    "compare": ".report.compare",
}

__all__ = [*_LAZY, "Dtype", "AdvisorError", "BadInputError", "__version__"]

if TYPE_CHECKING:
    from .diagnosis import Diagnosis as Diagnosis
    from .hardware import probe as probe
    from .hardware.model import HardwareProfile as HardwareProfile
    from .harness.trial import TrialResult as TrialResult
    from .hf import HfSpec as HfSpec
    from .islands import keep_in_fp32 as keep_in_fp32
    from .lifecycle import bench as bench
    from .lifecycle import diagnose as diagnose
    from .lifecycle import tune as tune
    from .recommendation import Recommendation as Recommendation
    from .report.compare import compare as compare
    from .runtime import MixedPrecision as MixedPrecision


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'amp_advisor' has no attribute {name!r}")
