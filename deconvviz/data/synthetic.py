"""A tiny image folder of coloured shapes, for smoke tests and clearly labelled demo runs.

``make_shapes("shapes/")`` writes ``shapes/<class>/<i>.png``: one class per shape (circle,
square, triangle, ...), each image a shape of random colour, size and position on a random
background, drawn with Pillow and seeded. It is a ``torchvision.datasets.ImageFolder`` tree,
so ``deconvviz train`` and ``deconvviz scan`` read it like ImageNet. It exists to check that
training runs and learns, in seconds on a CPU; it is not a benchmark of anything.
"""
from __future__ import annotations

import os
import random
from typing import List, Sequence, Union

from PIL import Image, ImageDraw

__all__ = ["SHAPES", "make_shapes"]

SHAPES = ("circle", "square", "triangle", "cross")


def _draw(draw: ImageDraw.ImageDraw, shape: str, box, colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        w = max(2, (x1 - x0) // 4)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - w // 2, y0, cx + w // 2, y1), fill=colour)
        draw.rectangle((x0, cy - w // 2, x1, cy + w // 2), fill=colour)


def make_shapes(folder: Union[str, "os.PathLike[str]"], classes: Sequence[str] = SHAPES[:3],
                per_class: int = 16, size: int = 64, seed: int = 0) -> List[str]:
    """Write ``per_class`` PNG images of each shape in ``classes`` under ``folder`` (one
    sub-folder per class) and return their paths. The same arguments give the same files."""
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    rng = random.Random(seed)
    paths = []
    for shape in classes:
        os.makedirs(os.path.join(folder, shape), exist_ok=True)
        for i in range(per_class):
            background = tuple(rng.randrange(0, 96) for _ in range(3))
            colour = tuple(rng.randrange(128, 256) for _ in range(3))
            img = Image.new("RGB", (size, size), background)
            side = rng.randrange(size // 3, size * 3 // 4)
            x0, y0 = rng.randrange(0, size - side), rng.randrange(0, size - side)
            _draw(ImageDraw.Draw(img), shape, (x0, y0, x0 + side, y0 + side), colour)
            path = os.path.join(folder, shape, f"{i:03d}.png")
            img.save(path)
            paths.append(path)
    return paths
