"""Does the map depend on what the model learned and on the class it explains?

- model-parameter randomisation (Adebayo et al. 2018) as a score: the Spearman rank
  correlation of each image's absolute map with the absolute map of the same method after
  every layer with parameters is re-initialised, top down (the cascade of
  :func:`deconvviz.sanity_check`, on a copy: the user's model is not changed);
- the random-logit test (Sixt et al. 2020): the SSIM of each image's map with the map of a
  class drawn uniformly from the other classes.

Both recompute maps with ``inputs.explain`` (the method as the driver runs it). A constant
map shares no rank order with another: its Spearman correlation is 0. SSIM is
scikit-image's (a 7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03) on the 2-D
channel-summed maps, with the data range of the pair (two equal maps score 1).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, metric
from .perturbation import Forward, explained, needs_explain, pearson, pixel_map

__all__ = ["model_randomisation", "random_logit", "spearman", "ssim_2d"]


def _ranks(v: Tensor) -> Tensor:
    """Average ranks (ties share their mean rank) of each row of ``[N, P]``."""
    sorted_v, idx = torch.sort(v, dim=1, stable=True)
    n, p = v.shape
    pos = torch.arange(p, dtype=torch.float64).expand(n, p)
    new = torch.ones_like(sorted_v, dtype=torch.bool)
    new[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = new.long().cumsum(dim=1) - 1
    sums = torch.zeros(n, p, dtype=torch.float64).scatter_add_(1, group, pos)
    counts = torch.zeros(n, p, dtype=torch.float64).scatter_add_(1, group, torch.ones_like(pos))
    mean = torch.gather(sums / counts.clamp_min(1), 1, group)
    return torch.empty_like(mean).scatter_(1, idx, mean)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Spearman correlation of ``[N, P]`` tensors (average ranks for ties); 0 where
    a row is constant."""
    return pearson(_ranks(a.double()), _ranks(b.double()))


def ssim_2d(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    """scikit-image's ``structural_similarity(a, b, data_range=max - min of the pair)`` of
    each pair of ``[N, H, W]`` maps (its defaults: a uniform window, sample covariance)."""
    a, b = a.double()[:, None], b.double()[:, None]
    if min(a.shape[-2:]) < win_size:
        raise ArgumentError(f"SSIM needs maps of at least {win_size}x{win_size} pixels")
    both = torch.cat([a, b], dim=1).flatten(1)
    rng = both.amax(dim=1) - both.amin(dim=1)
    np_ = win_size ** 2
    cov = np_ / (np_ - 1)
    ux, uy, uxx, uyy, uxy = (F.avg_pool2d(t, win_size, stride=1)
                             for t in (a, b, a * a, b * b, a * b))
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = ((0.01 * rng) ** 2).view(-1, 1, 1, 1), ((0.03 * rng) ** 2).view(-1, 1, 1, 1)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    same = (a == b).flatten(1).all(dim=1)
    return torch.where(same | (rng == 0), torch.ones_like(rng),
                       torch.nan_to_num(s.flatten(1).mean(dim=1)))


@metric("model_randomisation")
def model_randomisation(inputs: Inputs, *, seed: int = 0) -> Score:
    """Spearman correlation of ``|map|`` with ``|map|`` of the fully randomised model
    (lower is better: the map depends on the weights)."""
    from ..sanity import parametrised_layers, reinitialise

    needs_explain(inputs)
    copied = copy.deepcopy(inputs.model)
    layers = parametrised_layers(copied)
    if not layers:
        raise ArgumentError("the model has no layers with parameters to randomise")
    for k, path in enumerate(layers[::-1], start=1):  # the sanity check's cascade
        reinitialise(copied, path, seed + k)
    random_maps = explained(inputs, copied, inputs.images, inputs.targets)
    a = pixel_map(inputs.maps).abs().flatten(1)
    b = pixel_map(random_maps).abs().flatten(1)
    return Score(spearman(a, b), forward_passes=inputs.images.shape[0])


@metric("random_logit")
def random_logit(inputs: Inputs, *, seed: int = 0) -> Score:
    """SSIM of the map with the map of a random other class (lower is better)."""
    needs_explain(inputs)
    classes = int(Forward(inputs, "logit").logits(inputs.images[:1]).shape[1])
    if classes < 2:
        raise ArgumentError("the random-logit test needs a model with two classes or more")
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, classes, (inputs.targets.shape[0],), generator=g)
    other = (inputs.targets.cpu() + shift) % classes
    maps = explained(inputs, inputs.model, inputs.images, other.to(inputs.targets.device))
    return Score(ssim_2d(pixel_map(inputs.maps), pixel_map(maps)),
                 forward_passes=1 + inputs.images.shape[0])
