"""Healthy at first, broken in fp16 later: `gain` grows 4x per training step up to 1e6, so after
a few steps the hidden activations pass fp16's 65504 (inf, GradScaler skips every step and its
scale collapses) while fp32 and bf16 hold them easily."""
import torch
from tiny_base import loss_fn, make_batch  # noqa: F401 (the contract: shared with the tiny workloads)
from torch import nn


class Growing(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(32, 64)
        self.second = nn.Linear(64, 4)
        self.register_buffer("gain", torch.tensor(1.0))

    def forward(self, x):
        if self.training:
            self.gain.mul_(4.0).clamp_(max=1e6)
        h = torch.relu(self.first(x)) * self.gain
        return self.second(h) / self.gain


def build_model():
    return Growing()
