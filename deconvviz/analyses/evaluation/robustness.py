"""How much the map moves when the image barely does: max-sensitivity (Yeh et al. 2019) and
the local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018), each the largest over
``samples`` noisy copies of the image, with maps recomputed by ``inputs.explain``. Maps are
compared channel-summed, ``||.||`` is the Euclidean norm over pixels; the noise is added to
every value of the model's (normalised) input.

- max-sensitivity: ``max ||Φ(x + δ) - Φ(x)|| / ||Φ(x)||``, δ uniform in
  ``[-radius, radius]``; a map that is zero everywhere has no scale: it scores
  ``max ||Φ(x + δ)||``, the absolute change;
- local Lipschitz: ``max ||Φ(x + δ) - Φ(x)|| / ||δ||``, δ Gaussian of deviation ``std``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, metric
from .perturbation import explained, needs_explain, pixel_map

__all__ = ["max_sensitivity", "local_lipschitz", "noise"]


def noise(kind: str, shape, scale: float, generator) -> Tensor:
    """``[...]`` float64 noise: ``"uniform"`` in [-scale, scale), ``"gaussian"`` N(0, scale²)."""
    if kind == "uniform":
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


def _largest(inputs: Inputs, samples: int, kind: str, scale: float, ratio) -> Score:
    needs_explain(inputs)
    if not isinstance(samples, int) or samples < 1:
        raise ArgumentError(f"samples is a whole number of at least 1, got {samples!r}")
    x = inputs.images
    reference = pixel_map(inputs.maps).flatten(1)
    best = torch.full((x.shape[0],), -torch.inf, dtype=torch.float64)
    for _ in range(samples):
        delta = noise(kind, x.shape, scale, inputs.generator).to(x.device)
        moved = (x.double() + delta).to(x.dtype)
        maps = pixel_map(explained(inputs, inputs.model, moved, inputs.targets)).flatten(1)
        change = (maps - reference).norm(dim=1)
        step = (moved.double() - x.double()).flatten(1).norm(dim=1).cpu()
        best = torch.maximum(best, ratio(change.cpu(), maps.norm(dim=1).cpu(), step))
    return Score(best, forward_passes=samples * x.shape[0])


@metric("max_sensitivity")
def max_sensitivity(inputs: Inputs, *, samples: int = 200, radius: float = 0.2) -> Score:
    """``max ||Φ(x + δ) - Φ(x)|| / ||Φ(x)||`` over uniform δ (lower is better)."""
    size = pixel_map(inputs.maps).flatten(1).norm(dim=1).cpu()

    def ratio(change, moved_norm, step):
        return torch.where(size > 0, change / size.clamp_min(1e-300), moved_norm)

    return _largest(inputs, samples, "uniform", radius, ratio)


@metric("local_lipschitz")
def local_lipschitz(inputs: Inputs, *, samples: int = 200, std: float = 0.1) -> Score:
    """``max ||Φ(x + δ) - Φ(x)|| / ||δ||`` over Gaussian δ (lower is better)."""
    def ratio(change, moved_norm, step):
        return change / step.clamp_min(1e-300)

    return _largest(inputs, samples, "gaussian", std, ratio)
