"""Fails on rank 1 only (RANK from torchrun's environment), at batch >= 32: out of memory,
a crash or a hang, as AMP_FAULT says (oom, crash, hang); anything else trains cleanly."""
import os
import time

import torch

RANK = int(os.environ.get("RANK", "0"))
FAULT = os.environ.get("AMP_FAULT", "")


def build_model():
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))


def make_batch(batch_size, device):
    return torch.randn(batch_size, 32, device=device), torch.randn(batch_size, 1, device=device)


def loss_fn(model, batch):
    x, y = batch
    if RANK == 1 and x.shape[0] >= 32:
        if FAULT == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated on rank 1)")
        if FAULT == "crash":
            os._exit(9)
        if FAULT == "hang":
            time.sleep(3600)
    return torch.nn.functional.mse_loss(model(x).float(), y)
