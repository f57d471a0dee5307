"""A workload whose build_model starts helper processes, as user code does (a data server, a
logger): one in a session of its own (out of the worker's process group), one that double-forks
away from its parent. Nothing of them may outlive the run that built the model."""

import subprocess
import sys

import torch


def build_model():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
    subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n    time.sleep(3600)"])
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


def make_batch(batch_size, device):
    return torch.randn(batch_size, 4, device=device), torch.randn(batch_size, 1, device=device)


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()
