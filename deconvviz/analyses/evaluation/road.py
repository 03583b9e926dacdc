"""ROAD: remove and debias (Rong et al. 2022, ICML).

The most (MoRF) or least (LeRF) relevant ``p`` % of the pixels are removed and filled by
*noisy linear imputation*: each removed pixel equals the weighted mean of its 8 neighbours
(weight 1/6 for the 4 beside it, 1/12 for the 4 diagonal; neighbours outside the image
left out), known neighbours being the image's values, plus Gaussian noise of standard
deviation ``noise``. The pixels removed carry no information about where they were, which
is ROAD's reason to exist (a constant fill leaks the removal's shape to the model).

The linear system of every image, channel and percentage is solved at once in torch, on the
images' device: conjugate gradients (the system is symmetric, positive definite: each
removed region touches a known pixel unless every pixel is removed) on the 3x3 stencil, with
the diagonal as preconditioner, started from the solution at half the resolution (solved
the same way, down to a few pixels), until the residual is below ``1e-10`` of the
right-hand side. ``tests/test_metrics_road.py`` checks it against pytorch-grad-cam's sparse
direct solve (``NoisyLinearImputer``).

The score per image is the curve's mean over the percentages of the class's top-1
indicator (``output="accuracy"``, the paper's; averaged over images it is the accuracy of
the paper's curves) or of the class probability (``output="probability"``).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, metric
from .perturbation import Forward, order, pixel_map

__all__ = ["impute", "road"]

TOLERANCE = 1e-8
MAX_ITERATIONS = 2000


def _stencil(x: Tensor) -> Tensor:
    """Each pixel's weighted sum of its 8 neighbours (zero outside the image), per channel:
    ``(([1, 2, 1] x [1, 2, 1]) * x - 4 x) / 12``, as shifted sums (a depthwise convolution
    is several times slower on a CPU)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]
    both = rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]
    return (both - 4 * x) / 12


def _solve(removed: Tensor, known: Tensor, start: Tensor,
           tolerance: float = TOLERANCE) -> Tensor:
    """The removed pixels' values (0 elsewhere) of ``s u - K(u) = K(known)`` on ``removed``
    ``[B, 1, H, W]`` bool, ``known`` ``[B, C, H, W]`` (zero where removed), from ``start``."""
    m = removed.to(known.dtype)
    diag = _stencil(torch.ones_like(m)) * m  # s: the weights of the neighbours in the image
    inv = torch.where(removed, 1 / diag.clamp_min(1e-300), torch.zeros_like(diag))

    def apply(u: Tensor) -> Tensor:
        return (diag * u - _stencil(u)) * m

    b = _stencil(known) * m
    u = start * m
    r = b - apply(u)
    z = inv * r
    p = z
    rz = (r * z).flatten(2).sum(dim=2)
    limit = tolerance * b.flatten(2).norm(dim=2).clamp_min(1e-300)
    for _ in range(MAX_ITERATIONS):
        if bool((r.flatten(2).norm(dim=2) <= limit).all()):
            break
        ap = apply(p)
        alpha = rz / (p * ap).flatten(2).sum(dim=2).clamp_min(1e-300)
        u = u + alpha[..., None, None] * p
        r = r - alpha[..., None, None] * ap
        z = inv * r
        rz_new = (r * z).flatten(2).sum(dim=2)
        p = z + (rz_new / rz.clamp_min(1e-300))[..., None, None] * p
        rz = rz_new
    return u


def _coarse_start(removed: Tensor, image: Tensor) -> Tensor:
    """A first guess: the imputation at half the resolution (recursively), upsampled."""
    h, w = removed.shape[-2:]
    if min(h, w) < 8:
        keep = (~removed).to(image.dtype)
        mean = (image * keep).flatten(2).sum(2) / keep.flatten(2).sum(2).clamp_min(1)
        return mean[..., None, None].expand_as(image)
    keep = (~removed).to(image.dtype)
    weight = F.avg_pool2d(keep, 2, ceil_mode=True)
    small = F.avg_pool2d(image * keep, 2, ceil_mode=True) / weight.clamp_min(1e-300)
    small_removed = weight == 0
    small = torch.where(small_removed, torch.zeros_like(small), small)
    guess = _coarse_start(small_removed, small)
    filled = torch.where(small_removed, _solve(small_removed, small, guess, 1e-4), small)
    return F.interpolate(filled, scale_factor=2, mode="nearest")[..., :h, :w]


def impute(images: Tensor, removed: Tensor, *, noise: float = 0.0,
           generator=None) -> Tensor:
    """``images`` ``[B, C, H, W]`` with the pixels of ``removed`` ``[B, H, W]`` filled by
    noisy linear imputation (float64 arithmetic, returned in the images' dtype)."""
    removed = removed[:, None].to(images.device)
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ArgumentError("noisy linear imputation needs at least one known pixel per image")
    x = images.double()
    known = torch.where(removed, torch.zeros_like(x), x)
    filled = _solve(removed, known, _coarse_start(removed, known))
    if noise:
        filled = filled + noise * torch.randn(x.shape, generator=generator,
                                              dtype=torch.float64).to(x.device)
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
