"""200 small residual blocks (1,000+ modules): the X-ray must keep per-module statistics, not tensors."""
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.up = nn.Linear(16, 32)
        self.act = nn.GELU()
        self.down = nn.Linear(32, 16)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x)))) * 0.1


def build_model():
    return nn.Sequential(nn.Linear(8, 16), *[Block() for _ in range(200)], nn.Linear(16, 4))


def make_batch(batch_size, device):
    return torch.randn(batch_size, 8, device=device), torch.randint(0, 4, (batch_size,), device=device)


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)
