"""The plus-or-x task of examples/04_your_own_model.ipynb, shared by the feature
visualisation tests (tests/test_feature_vis.py) and the scripts that draw its figures
(scripts/feature_vis_figure.py, scripts/feature_vis_plus_study.py): the images, the small
CNN, its training loop, the two shapes and the correlation that compares an image with them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deconvviz.data.zoo import Preprocessing

SIZE = 40  # the images' side
RAW = Preprocessing(resize_size=SIZE, crop_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1))
PLUS = torch.zeros(7, 7)
PLUS[3, :] = 1
PLUS[:, 3] = 1
EX = torch.eye(7) + torch.eye(7).flip(1)
EX[3, 3] = 1


def corr(a, b):
    """Pearson's correlation of two images (flattened)."""
    a, b = a.flatten().double() - a.mean(), b.flatten().double() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def placements(shape):
    """The 7-px ``shape`` at its 4 places in an 8-px window (conv2's receptive field)."""
    return [F.pad(shape, (dx, 1 - dx, dy, 1 - dy)) for dy in (0, 1) for dx in (0, 1)]


def draw(kind, g):
    """The notebook's images: a 7-px plus (1) or x (0), white, at a random place in dark
    noise; vectorised."""
    n = len(kind)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.3
    where = torch.randint(3, SIZE - 4, (n, 2), generator=g)
    d = torch.arange(-3, 4)
    i = torch.arange(n).repeat_interleave(7)
    r, c = where[:, 0].repeat_interleave(7), where[:, 1].repeat_interleave(7)
    d, plus = d.repeat(n), (kind == 1).repeat_interleave(7)
    x[i, :, r + d, torch.where(plus, c, c + d)] = 1.0  # | or \\
    x[i, :, torch.where(plus, r, r + d), torch.where(plus, c + d, c - d)] = 1.0  # - or /
    return x


class Small(nn.Module):
    """examples/04_your_own_model.ipynb's network."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = nn.functional.adaptive_max_pool2d(self.pool2(x), 1).flatten(1)
        return self.head(x)


def fit(model, opt, steps, g, drawer=draw):
    """``steps`` of plus-or-x batches of 32 drawn by ``drawer`` from ``g``; then 256 test
    images: ``(kind, x)``, with the model in eval mode."""
    for _ in range(steps):
        kind = torch.randint(0, 2, (32,), generator=g)
        loss = F.cross_entropy(model(drawer(kind, g)), kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    kind = torch.randint(0, 2, (256,), generator=g)
    return kind, drawer(kind, g)
