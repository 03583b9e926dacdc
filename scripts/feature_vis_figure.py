"""Draw docs/figures/feature_vis_regularisers.png: the same units visualised with and without
each of Lucid's regularisers, on a small CNN trained here (no downloads), and on the same CNN
with random weights.

    python scripts/feature_vis_figure.py

The CNN is examples/04_your_own_model.ipynb's: trained for 200 steps to tell a white plus
from a white x on dark noise (40 px). Its conv2 units are visualised on an 80-px canvas (the
network is fully convolutional), with the channel objective (the map's mean), 256 Adam steps
at 0.05, seed 0.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses.fv_image import LUCID_TRANSFORMS
from deconvviz.data.zoo import Preprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "figures", "feature_vis_regularisers.png")
SIZE = 40
RAW = Preprocessing(resize_size=SIZE, crop_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1))
VARIANTS = [  # (label, options): each adds one regulariser to the one before
    ("pixels", dict(param="pixel", decorrelate=False, transforms=None)),
    ("+ Fourier 1/f", dict(param="fourier", decorrelate=False, transforms=None)),
    ("+ decorrelated colour", dict(param="fourier", decorrelate=True, transforms=None)),
    ("+ transforms (Lucid)", dict(param="fourier", decorrelate=True,
                                  transforms=LUCID_TRANSFORMS)),
]


def draw(kind, g):
    n = len(kind)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.3
    where = torch.randint(3, SIZE - 4, (n, 2), generator=g)
    d = torch.arange(-3, 4).repeat(n)
    i = torch.arange(n).repeat_interleave(7)
    r, c = where[:, 0].repeat_interleave(7), where[:, 1].repeat_interleave(7)
    plus = (kind == 1).repeat_interleave(7)
    x[i, :, r + d, torch.where(plus, c, c + d)] = 1.0
    x[i, :, torch.where(plus, r, r + d), torch.where(plus, c + d, c - d)] = 1.0
    return x


class Small(nn.Module):
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
        return self.head(F.adaptive_max_pool2d(self.pool2(x), 1).flatten(1))


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


def main() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    random = Small().eval()
    model = Small()
    model.load_state_dict(random.state_dict())
    kind, x = fit(model, torch.optim.Adam(model.parameters(), lr=3e-3), 200, g)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == kind).float().mean())
        top = dv.Deconvnet(model).record(x, "conv2").activations["conv2"].flatten(2).amax(2)
    units = (top[kind == 1].mean(0) - top[kind == 0].mean(0)).argsort(descending=True)[:3]
    units = units.tolist()
    print(f"accuracy {accuracy:.1%}; units {units}")
    tiles, labels, notes = [], [], []
    for name, net in (("trained", model), ("random weights", random)):
        results = [dv.feature_vis(net, "conv2", units, steps=256, image_size=80, input_size=80,
                                  preprocessing=RAW, **options) for _, options in VARIANTS]
        for row, unit in enumerate(units if name == "trained" else units[:1]):
            tiles.append([r.image(row) for r in results])
            labels.append(f"unit {unit}" + (", random" if name != "trained" else ""))
            notes.append([v for v, _ in VARIANTS] if not notes else
                         [""] * len(VARIANTS))  # the columns named once, in the first row
    title = (f"A CNN trained to tell a plus from an x ({accuracy:.0%} accuracy), conv2: "
             f"channel objective, 80 px, 256 steps Adam 0.05, seed 0; each column adds one "
             f"regulariser; the last row: the same network with random weights")
    fig = figures.feature_vis_grid(tiles, labels, title, notes=notes)
    figures.save_figure(fig, OUT, dpi=110)
    print(OUT)
    assert np.isfinite(np.stack([t for row in tiles for t in row]).astype(float)).all()


if __name__ == "__main__":
    main()
