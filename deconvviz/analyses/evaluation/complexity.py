"""How concentrated a map is: sparseness, the Gini index (Chalasani et al. 2020), and
complexity, the entropy of each pixel's share (Bhatt et al. 2020), both of the absolute
channel-summed map. They run no model."""
from __future__ import annotations

import math

import torch

from .base import Inputs, Score, metric
from .perturbation import pixel_map

__all__ = ["sparseness", "complexity"]


@metric("sparseness")
def sparseness(inputs: Inputs) -> Score:
    """The Gini index of ``|map|`` over the pixels, in [0, 1): 0 when every pixel is equal,
    ``1 - 1/P`` for one non-zero pixel of P. A map that is zero everywhere scores 0."""
    a = torch.sort(pixel_map(inputs.maps).abs().flatten(1), dim=1).values
    p = a.shape[1]
    k = torch.arange(1, p + 1, dtype=torch.float64)
    total = a.sum(dim=1)
    gini = ((2 * k - p - 1) * a).sum(dim=1) / (p * total.clamp_min(1e-300))
    return Score(torch.where(total > 0, gini, torch.zeros_like(gini)))


@metric("complexity")
def complexity(inputs: Inputs) -> Score:
    """The entropy (nats) of ``|map| / sum |map|`` over the pixels (0 log 0 = 0). A map that
    is zero everywhere has no shares: it scores ``log P``, as a uniform map."""
    a = pixel_map(inputs.maps).abs().flatten(1)
    total = a.sum(dim=1, keepdim=True)
    share = a / total.clamp_min(1e-300)
    entropy = -torch.where(share > 0, share * share.clamp_min(1e-300).log(),
                           torch.zeros_like(share)).sum(dim=1)
    uniform = torch.full_like(entropy, math.log(a.shape[1]))
    return Score(torch.where(total[:, 0] > 0, entropy, uniform))
