"""A 3-layer MLP classifier on random features: matmul-bound, the simplest case for autocast."""

import torch
import torch.nn.functional as F
from torch import nn

FEATURES, HIDDEN, CLASSES = 1024, 2048, 10


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.GELU(),
        nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
        nn.Linear(HIDDEN, CLASSES),
    )


def make_batch(batch_size: int, device):
    x = torch.randn(batch_size, FEATURES, device=device)
    y = torch.randint(0, CLASSES, (batch_size,), device=device)
    return x, y


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)
