from torch import nn


def build_model():
    return nn.Linear(4, 4)


def make_batch(batch_size, device):
    return "not a tensor"
