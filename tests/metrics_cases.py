"""Shared cases of the evaluation metrics' tests (tests/test_metrics_*.py): a small CNN, its
images and maps, and the metrics' inputs."""
from __future__ import annotations

import warnings
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from deconvviz.analyses.evaluation import Inputs, compute

RTOL = 1e-6  # agreement with a peer implementation, relative to the largest value compared


def small_cnn(channels: int = 3, size: int = 12, classes: int = 5, seed: int = 0,
              dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    half = size // 2
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * half * half, classes)).to(dtype).eval()


def case(channels: int = 3, size: int = 12, n: int = 3, map_channels: int = 1, seed: int = 0,
         dtype=torch.float32, positive: bool = False, **kwargs) -> Inputs:
    """A model, ``n`` random images, random maps (no ties) and the top-1 classes."""
    model = small_cnn(channels, size, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, channels, size, size, generator=g, dtype=dtype)
    maps = torch.randn(n, map_channels, size, size, generator=g, dtype=torch.float64)
    if positive:
        maps = maps.abs()
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Inputs(model, x, maps, y, batch_size=kwargs.pop("batch_size", 7), **kwargs)


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def quantus_call(metric, inputs: Inputs, a=None, **kwargs):
    """``metric`` (a Quantus metric) on the case's model, images, classes and maps (the
    maps channel-summed: deconvviz's convention, given to Quantus as one channel)."""
    a = inputs.maps.sum(dim=1, keepdim=True) if a is None else a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=inputs.model, x_batch=inputs.images.numpy(),
                      y_batch=inputs.targets.numpy(), a_batch=a.float().numpy(),
                      device="cpu", **kwargs)


def score(name: str, inputs: Inputs, **params):
    return compute(name, inputs, **params)


class Maps:
    """torchcam's metrics take a CAM extractor: this one hands back the given maps."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return nullcontext()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 5 * 5, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = self.pool(torch.relu(self.b(x)) + 0.5)
        return self.head(x.flatten(1))


def net_inputs(model, n=5):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, 20, 20, generator=g, dtype=torch.float64)
    maps = torch.randn(n, 3, 20, 20, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return Inputs(model, x, maps, y, batch_size=2)
