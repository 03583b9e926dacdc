"""Region perturbation's curve (Samek et al. 2017): regions removed one more at a time.

Each step differs from the step before in one region, so where the model allows
(:func:`deconvviz.analyses.occlusion`'s incremental forward, here with one base per image
that moves on with every step: :class:`deconvviz.engine.passes.chain.IncrementalChain`),
a step recomputes only the window of each layer that the new region can change. Elsewhere
(a model that cannot be traced, BatchNorm or dropout in training mode) every step is a full
forward pass, in batches.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Inputs, Score
from .perturbation import Forward, baseline_image, order, pixel_map

__all__ = ["region_curve", "region_grid", "region_order"]


def region_grid(size: int, patch: int) -> int:
    """Where the grid of ``patch``-px regions starts (<= 0): centred, as Quantus pads."""
    extra = (-size) % patch
    return -(extra // 2)


def region_order(inputs: Inputs, patch_size: int, how: str):
    """The regions' top-left corners ``(ys, xs)`` (lists of ``[R]``) and each image's order
    of them ``[N, R]`` by the map's sum over each region."""
    values = pixel_map(inputs.maps)
    n, h, w = values.shape
    oy, ox = region_grid(h, patch_size), region_grid(w, patch_size)
    padded = F.pad(values, (-ox, (-w) % patch_size + ox, -oy, (-h) % patch_size + oy))
    sums = F.avg_pool2d(padded[:, None], patch_size, divisor_override=1)[:, 0]
    gh, gw = sums.shape[-2:]
    ys = [oy + i * patch_size for i in range(gh) for _ in range(gw)]
    xs = [ox + j * patch_size for _ in range(gh) for j in range(gw)]
    return ys, xs, order(sums.flatten(1), how)


def _pixel_ranks(inputs: Inputs, ys, xs, ranked: Tensor, patch: int) -> Tensor:
    """``[N, H, W]``: the step (0 first) at which each pixel's region is removed."""
    n, _, h, w = inputs.images.shape
    gw = len(set(xs))
    oy, ox = ys[0], xs[0]
    rows = (torch.arange(h) - oy) // patch
    cols = (torch.arange(w) - ox) // patch
    region = rows[:, None] * gw + cols[None, :]  # [H, W]
    step_of = torch.argsort(ranked, dim=1)  # [N, R]: the step of each region
    return step_of[:, region.flatten()].view(n, h, w)


def region_curve(inputs: Inputs, *, order: str, patch_size: int, regions: int, baseline,
                 incremental: Optional[bool] = None) -> Score:
    x = inputs.images
    ys, xs, ranked = region_order(inputs, patch_size, order)
    steps = min(regions, ranked.shape[1])
    base = baseline_image(inputs, baseline)
    forward = Forward(inputs, "probability")
    chain = None
    if incremental is not False:
        from .chain_runner import chain_for
        chain = chain_for(inputs, forward, strict=bool(incremental))
    ranks = _pixel_ranks(inputs, ys, xs, ranked, patch_size)
    if chain is not None:  # step k (from 0) removes the region ranked k
        y0, curve = chain.curve(lambda group, k: ranks[group] == k, base, steps)
    else:
        y0 = forward(x, inputs.targets)
        at = ranks[:, None].to(x.device)
        curve = forward.images(lambda k: torch.where(at < k, base, x),
                               list(range(1, steps + 1)), inputs.targets)
    drops = y0[:, None] - curve
    return Score(drops.sum(dim=1) / (steps + 1), drops,
                 torch.arange(1, steps + 1, dtype=torch.float64), forward.passes)
