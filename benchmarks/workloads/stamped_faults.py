"""For benchmarks/bench_distributed.py: the mlp-sized model of tests/workloads/rank_faults.py,
stamping the wall clock to AMP_STAMP_DIR: when rank 1 dies or hangs (at batch >= 32, as AMP_FAULT
says) and whenever a rank builds a model (a trial starting on that rank)."""
import os
import time
from pathlib import Path

import torch

RANK = int(os.environ.get("RANK", "0"))
FAULT = os.environ.get("AMP_FAULT", "")
STAMPS = Path(os.environ.get("AMP_STAMP_DIR", "."))


def _stamp(kind):
    with open(STAMPS / f"{kind}-{RANK}.txt", "a") as f:
        f.write(f"{time.time()}\n")


def build_model():
    _stamp("build")
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 10))


def make_batch(batch_size, device):
    return torch.randn(batch_size, 256, device=device), torch.randint(0, 10, (batch_size,), device=device)


def loss_fn(model, batch):
    x, y = batch
    if RANK == 1 and x.shape[0] >= 32 and FAULT:
        _stamp("fault")
        if FAULT == "crash":
            os._exit(9)
        time.sleep(3600)
    return torch.nn.functional.cross_entropy(model(x).float(), y)
