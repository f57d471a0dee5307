"""One out-of-memory classifier: the exception type first, then the allocators' known messages.
Everything else is an error, reported with its own message."""

from __future__ import annotations

# Messages of the allocators torch fronts, as they appear in RuntimeError text.
OOM_MESSAGES = (
    "CUDA out of memory",
    "HIP out of memory",
    "XPU out of memory",
    "MPS backend out of memory",
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # torch < 2.5 has only torch.cuda.OutOfMemoryError
        pass
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(message in text for message in OOM_MESSAGES)
