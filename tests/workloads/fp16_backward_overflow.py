"""A forward pass that fp16 holds and a backward pass it cannot: `block.rescaled` scales its
projection down by 1e-5 and up again (as code that rescales for a reduction does). Forward values
stay small; the gradient between the two scalings is 1e5 times the one flowing in, past fp16's
65504 at any loss scale above ~1, so GradScaler skips step after step and its scale collapses."""
import torch
from tiny_base import loss_fn, make_batch  # noqa: F401 (the contract: shared with the tiny workloads)
from torch import nn


class Rescaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(64, 64)

    def forward(self, x):
        small = self.proj(x) * 1e-5
        return small * 1e5


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(32, 64)
        self.rescaled = Rescaled()
        self.out = nn.Linear(64, 4)

    def forward(self, x):
        return self.out(torch.relu(self.rescaled(torch.relu(self.inp(x)))))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return self.block(x)


def build_model():
    return Model()

