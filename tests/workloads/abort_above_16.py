"""Aborts the process (SIGABRT) once the batch is larger than 16, as a failed C++ check would."""
import os

from tiny_base import build_model, make_batch, loss_fn as _loss  # noqa: F401


def loss_fn(model, batch):
    if batch[0].shape[0] > 16:
        os.abort()
    return _loss(model, batch)
