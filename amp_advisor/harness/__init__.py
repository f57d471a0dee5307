"""Measure one training configuration truthfully, isolated in a worker process.

    TrialSpec -> Worker (subprocess) -> TrialRunner.run (measure.py) -> TrialResult

The public entry points (bench, diagnose) are amp_advisor.lifecycle's.
"""

from .trial import TrialResult, TrialSpec
from .worker import Worker

__all__ = ["TrialSpec", "TrialResult", "Worker"]
