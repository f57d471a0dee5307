"""Tuning: search (dtype, batch size and the levers) for the fastest configuration that keeps
fp32's numerics, as pure functions of the trials (evidence, constraints, plan, decision) driven by
the Tuner's loop (tuner.py); the run directory is store.py. The lifecycle around it (lock, resume,
report) is amp_advisor.lifecycle.tune.
"""

from .conclude import TuneResult
from .settings import TuneSettings

__all__ = ["TuneSettings", "TuneResult"]
