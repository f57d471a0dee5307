"""Workloads given as module:attr. Importing this module leaves a mark (the importing process's
pid) where AMP_ADVISOR_TEST_IMPORT_MARK says, so a test can tell which process imported it."""

import os
import types

import torch
from torch import nn

mark = os.environ.get("AMP_ADVISOR_TEST_IMPORT_MARK")
if mark:
    with open(mark, "a") as f:
        f.write(f"{os.getpid()}\n")


class Tiny:
    """An object providing the contract (not a module)."""

    def build_model(self):
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

    def make_batch(self, batch_size, device):
        return torch.randn(batch_size, 16, device=device)

    def loss_fn(self, model, batch):
        return model(batch).pow(2).mean()


tiny = Tiny()
nested = types.SimpleNamespace(inner=tiny)
not_a_workload = types.SimpleNamespace(build_model=tiny.build_model)  # no make_batch
