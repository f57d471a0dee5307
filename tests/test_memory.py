"""Per-trial peak memory on the CPU, in a process that is reused between trials.

Each case runs in a fresh interpreter: what glibc's malloc does with a freed buffer depends on
the process's history (its mmap threshold rises with the largest chunk freed so far, its trim
threshold with it), so inside the test process the outcome would depend on which tests ran
before. A fresh process has one history: the one the case writes."""

import subprocess
import sys

import pytest

from amp_advisor.harness import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not memory.LinuxRssPeak.available(),
                                reason="VmHWM and clear_refs are Linux-only")
MIB = 2**20

# An earlier "trial": one mmapped 16 MiB chunk, freed, raises glibc's mmap threshold to 16 MiB
# (and its trim threshold to 32), so the next 8 MiB buffers come from the heap, which keeps them
# resident after they are freed. The trial measured next allocates the same 24 MiB again.
_CASE = """
import sys, torch
from amp_advisor.harness import memory
if sys.argv[1] == "without-release":
    memory.release_freed_heap = lambda: False
MIB = 2**20
def touch(count, mib):
    return [torch.ones(mib * MIB // 4) for _ in range(count)]
del touch(1, 16)[:]
del touch(3, 8)[:]
tracker = memory.LinuxRssPeak()
tracker.start()
buffers = touch(3, 8)
print(tracker.stop())
"""


def _peak_after_earlier_trial(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CASE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_a_trial_after_a_bigger_one_still_measures_its_own_peak():
    assert _peak_after_earlier_trial("as-shipped") >= 20 * MIB


def test_without_returning_freed_heap_the_peak_would_be_missed():
    """The reason release_freed_heap exists: shows the measurement it protects can fail."""
    assert _peak_after_earlier_trial("without-release") < 20 * MIB
