"""ROAD: remove and debias (Rong et al. 2022, ICML).

The most (MoRF) or least (LeRF) relevant ``p`` % of the pixels are removed and filled by
*noisy linear imputation*: each removed pixel equals the weighted mean of its 8 neighbours
(weight 1/6 for the 4 beside it, 1/12 for the 4 diagonal; neighbours outside the image
left out), known neighbours being the image's values, plus Gaussian noise of standard
deviation ``noise``. The pixels removed carry no information about where they were, which
is ROAD's reason to exist (a constant fill leaks the removal's shape to the model).

The linear systems of every image and channel of a step are solved at once in torch, on
the images' device (:mod:`.imputation`: conjugate gradients preconditioned by a multigrid
V-cycle, to a residual of ``min(1e-4, noise / 100)`` of the right-hand side with noise,
100x below the noise, and ``1e-9`` without). ``tests/test_metrics_road.py`` checks it against pytorch-grad-cam's sparse
direct solve (``NoisyLinearImputer``).

The score per image is the curve's mean over the percentages of the class's top-1
indicator (``output="accuracy"``, the paper's; averaged over images it is the accuracy of
the paper's curves) or of the class probability (``output="probability"``).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, metric
from .imputation import solve
from .perturbation import Forward, order, pixel_map

__all__ = ["impute", "road"]



def impute(images: Tensor, removed: Tensor, *, noise: float = 0.0,
           generator=None) -> Tensor:
    """``images`` ``[B, C, H, W]`` with the pixels of ``removed`` ``[B, H, W]`` filled by
    noisy linear imputation (float64 arithmetic, or float32 for float32 images with noise;
    returned in the images' dtype)."""
    removed = removed[:, None].to(images.device)
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ArgumentError("noisy linear imputation needs at least one known pixel per image")
    # with noise, to 1e-4 of the right-hand side: 100x below the noise's deviation (1e-2
    # of the values by default), in float32 for float32 images; without noise, to 1e-9 in
    # float64
    work = torch.float32 if noise and images.dtype == torch.float32 else torch.float64
    x = images.to(work)
    known = torch.where(removed, torch.zeros_like(x), x)
    filled = solve(removed, known, min(1e-4, 1e-2 * noise) if noise else 1e-9).to(work)
    if noise:
        filled = filled + noise * torch.randn(x.shape, generator=generator,
                                              dtype=work).to(x.device)
    return torch.where(removed, filled, x).to(images.dtype)


def _removed(ranks: Tensor, percentage: float, shape: Tuple[int, int]) -> Tensor:
    count = int(round(percentage / 100 * ranks.shape[1]))
    return (ranks < count).view(-1, *shape)


@metric("road_morf", "road_lerf")
def road(inputs: Inputs, *, order: str = "morf", percentages: Sequence[float] = (
        10, 20, 30, 40, 50, 60, 70, 80, 90), noise: float = 0.01,
         output: str = "accuracy") -> Score:
    """The class's top-1 indicator (or probability) with ``p`` % of the pixels, most
    (``"morf"``) or least (``"lerf"``) relevant first, imputed; one curve point per
    percentage (``round(p / 100 * H * W)`` pixels), the score their mean."""
    percentages = [float(p) for p in percentages]
    if not percentages or any(not 0 <= p < 100 for p in percentages):
        raise ArgumentError(f"percentages lie in [0, 100), got {percentages}")
    n, _, h, w = inputs.images.shape
    ranks = torch.argsort(_order(inputs, order), dim=1)
    forward = Forward(inputs, output)

    def build(p: float) -> Tensor:
        return impute(inputs.images, _removed(ranks, p, (h, w)), noise=noise,
                      generator=inputs.generator)

    curve = forward.images(build, percentages, inputs.targets)
    return Score(curve.mean(dim=1), curve, torch.tensor(percentages) / 100, forward.passes)


def _order(inputs: Inputs, how: str) -> Tensor:
    return order(pixel_map(inputs.maps).flatten(1), how)
