"""A tiny MLP whose forward breaks dynamo's graph once (torch._dynamo.graph_break), and whose loss
checks that a compiled model's backward runs without autocast (backward_pass_autocast="off")."""
import torch
import torch.nn.functional as F
from tiny_base import make_batch  # noqa: F401
from torch import nn


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        torch._dynamo.graph_break()
        return self.b(h)


def build_model():
    return Broken()


def loss_fn(model, batch):
    import torch._functorch.config as functorch_config

    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule) and hasattr(functorch_config,
                                                                               "backward_pass_autocast"):
        assert functorch_config.backward_pass_autocast == "off", functorch_config.backward_pass_autocast
    x, y = batch
    return F.cross_entropy(model(x), y)
