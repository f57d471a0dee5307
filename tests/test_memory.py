"""Per-trial peak memory on the CPU, in a process that is reused between trials."""

import sys

import pytest
import torch

from amp_advisor.harness import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not memory.LinuxRssPeak.available(),
                                reason="VmHWM and clear_refs are Linux-only")
MIB = 2**20


def _allocate_and_touch(count: int, mib: int) -> list:
    return [torch.ones(mib * MIB // 4) for _ in range(count)]


def _peak_after_earlier_trial() -> int:
    # An earlier "trial": one mmapped chunk raises glibc's mmap threshold, so the next 8 MiB
    # buffers come from the heap, which keeps them after they are freed.
    del _allocate_and_touch(1, 16)[:]
    del _allocate_and_touch(3, 8)[:]
    tracker = memory.LinuxRssPeak()
    tracker.start()
    buffers = _allocate_and_touch(3, 8)
    peak = tracker.stop()
    del buffers
    return peak


def test_a_trial_after_a_bigger_one_still_measures_its_own_peak():
    assert _peak_after_earlier_trial() >= 20 * MIB


def test_without_returning_freed_heap_the_peak_would_be_missed(monkeypatch):
    """The reason release_freed_heap exists: shows the measurement it protects can fail."""
    monkeypatch.setattr(memory, "release_freed_heap", lambda: False)
    assert _peak_after_earlier_trial() < 20 * MIB
