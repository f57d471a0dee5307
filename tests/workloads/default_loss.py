"""No loss_fn: the model takes (x, y) and returns a scalar loss, which the default loss uses."""
import torch
from torch import nn


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(8, 1)

    def forward(self, x, y):
        return ((self.net(x).squeeze(-1) - y) ** 2).mean()


def build_model():
    return Regressor()


def make_batch(batch_size, device):
    return torch.randn(batch_size, 8, device=device), torch.randn(batch_size, device=device)
