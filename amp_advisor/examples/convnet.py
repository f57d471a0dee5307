"""A small CNN with BatchNorm on 32x32 RGB images (CIFAR-sized): convolutions plus norm layers,
which autocast keeps in fp32."""

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = 10


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def build_model() -> nn.Module:
    return nn.Sequential(
        _block(3, 32), _block(32, 64), nn.MaxPool2d(2),
        _block(64, 128), nn.MaxPool2d(2),
        _block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, CLASSES),
    )


def make_batch(batch_size: int, device):
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, CLASSES, (batch_size,), device=device)
    return images, labels


def loss_fn(model, batch):
    images, labels = batch
    return F.cross_entropy(model(images), labels)
