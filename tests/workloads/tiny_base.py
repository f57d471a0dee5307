"""A tiny MLP shared by the test workloads (they import it as a sibling module)."""
import torch
import torch.nn.functional as F
from torch import nn


def build_model():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))


def make_batch(batch_size, device):
    return torch.randn(batch_size, 32, device=device), torch.randint(0, 4, (batch_size,), device=device)


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)
