"""Activations around 1e5: fine in fp32 and bf16, inf in fp16 (max 65504)."""
import torch
import torch.nn.functional as F
from torch import nn


class Loud(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(32, 64)
        self.second = nn.Linear(64, 4)

    def forward(self, x):
        h = self.first(x * 1e5)  # inputs past 65504: inf once autocast casts them to fp16
        return self.second(torch.relu(h) * 1e-5)


def build_model():
    return Loud()


def make_batch(batch_size, device):
    return torch.randn(batch_size, 32, device=device), torch.randint(0, 4, (batch_size,), device=device)


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)
