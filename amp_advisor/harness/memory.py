"""Peak memory of one trial, measured, not estimated.

- CUDA: the caching allocator's peak (`max_memory_allocated`) after resetting it at trial start.
- CPU on Linux: the kernel's high-water mark of resident memory (VmHWM), reset per trial by
  writing 5 to /proc/self/clear_refs, minus the resident memory before the trial began. The
  worker process is reused, so a lifetime maximum (ru_maxrss) would not be per trial. Memory an
  earlier trial freed stays in glibc's heap, and a later trial reusing it would not raise the
  resident size (measured: a batch-8 trial after a batch-64 one read 0.004 MiB), so freed heap
  is handed back to the kernel (malloc_trim) before each trial.
- Elsewhere: a background thread sampling resident memory every millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import re
import threading
from pathlib import Path
from typing import Protocol

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakTracker(Protocol):
    method: str

    def start(self) -> None: ...
    def stop(self) -> int | None:
        """Peak bytes the trial used, or None when it could not be measured."""


def memory_available_bytes() -> int | None:
    """This machine's MemAvailable (what can be allocated without swapping), or None where there
    is no /proc/meminfo. The one reader of it: the tuner's memory limit, the rank count check and
    the estimate before a model is built all use it."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in {_STATUS}")
    return int(match.group(1)) * 1024


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, looked up once per process (find_library runs ldconfig: ~3 ms), or None."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_heap() -> bool:
    """Return freed heap pages to the kernel (glibc's malloc_trim); False where there is no glibc."""
    gc.collect()
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class CudaPeak:
    method = "torch.cuda.max_memory_allocated"

    def __init__(self, device) -> None:
        import torch

        self._torch, self._device = torch, device

    def start(self) -> None:
        self._torch.cuda.synchronize(self._device)
        self._torch.cuda.reset_peak_memory_stats(self._device)

    def stop(self) -> int | None:
        self._torch.cuda.synchronize(self._device)
        return int(self._torch.cuda.max_memory_allocated(self._device))


class LinuxRssPeak:
    method = "VmHWM - VmRSS at start (/proc/self/clear_refs reset)"

    @staticmethod
    def available() -> bool:
        try:
            _status_kib("VmHWM")
            _CLEAR_REFS.write_text("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        release_freed_heap()
        _CLEAR_REFS.write_text("5")  # resets the peak to the current resident size
        self._baseline = _status_kib("VmRSS")

    def stop(self) -> int | None:
        return max(0, _status_kib("VmHWM") - self._baseline)


class SampledRssPeak:
    method = "resident memory sampled every 1 ms"

    def __init__(self) -> None:
        self._peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        try:
            return _status_kib("VmRSS")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, self._rss())

    def start(self) -> None:
        release_freed_heap()
        self._baseline = self._rss()
        self._peak = self._baseline
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> int | None:
        self._stop.set()
        self._thread.join()
        return max(0, self._peak - self._baseline)


def tracker_for(device) -> PeakTracker:
    if device.type == "cuda":
        return CudaPeak(device)
    if LinuxRssPeak.available():
        return LinuxRssPeak()
    return SampledRssPeak()
