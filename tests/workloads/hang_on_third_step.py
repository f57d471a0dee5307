"""Hangs (sleeps forever) on the third call of loss_fn, like a deadlocked data loader."""
import time

from tiny_base import build_model, make_batch, loss_fn as _loss  # noqa: F401

calls = 0


def loss_fn(model, batch):
    global calls
    calls += 1
    if calls == 3:
        time.sleep(3600)
    return _loss(model, batch)
