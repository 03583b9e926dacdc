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
import sys

import numpy as np
import torch

import deconvviz as dv
from deconvviz import figures
from deconvviz.analyses.fv_image import LUCID_TRANSFORMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the task: tests/plus_or_x.py
from plus_or_x import RAW, Small, fit  # noqa: E402

OUT = os.path.join(ROOT, "docs", "figures", "feature_vis_regularisers.png")
VARIANTS = [  # (label, options): each adds one regulariser to the one before
    ("pixels", dict(param="pixel", decorrelate=False, transforms=None)),
    ("+ Fourier 1/f", dict(param="fourier", decorrelate=False, transforms=None)),
    ("+ decorrelated colour", dict(param="fourier", decorrelate=True, transforms=None)),
    ("+ transforms (Lucid)", dict(param="fourier", decorrelate=True,
                                  transforms=LUCID_TRANSFORMS)),
]


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
        results = [dv.feature_vis(net, "conv2", features=units, steps=256, image_size=80, input_size=80,
                                  preprocessing=RAW, **options) for _, options in VARIANTS]
        for unit in (units if name == "trained" else units[:1]):
            tiles.append([r.image(unit) for r in results])
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
