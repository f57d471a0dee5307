"""A bug in the user's code on the first step: an error result, with where it happened."""
from tiny_base import build_model, make_batch  # noqa: F401


def loss_fn(model, batch):
    x, y = batch
    return model(x).sum() / undefined_name  # noqa: F821
