"""Does the map point at the object? Given each image's object mask ``[N, H, W]`` (boxes
rasterised by the driver): the pointing game with a tolerance (Zhang et al. 2018, as
TorchRay's benchmark), relevance mass and relevance rank accuracy (Arras et al. 2022), and
the energy-based pointing game (Wang et al. 2020). They run no model.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ArgumentError
from .base import Inputs, Score, metric
from .perturbation import order, pixel_map

__all__ = ["pointing_game", "relevance_mass", "relevance_rank", "energy_pointing_game",
           "maximum_point"]


def _masks(inputs: Inputs) -> Tensor:
    masks = inputs.masks
    n, _, h, w = inputs.maps.shape
    if masks is None:
        raise ArgumentError("this metric needs the objects' boxes or masks (none were given)")
    if tuple(masks.shape) != (n, h, w):
        raise ArgumentError(f"masks are [N, H, W] = {[n, h, w]}, got {list(masks.shape)}")
    if not bool(masks.flatten(1).any(dim=1).all()):
        raise ArgumentError("every image needs an object: a mask is empty")
    return masks.bool().cpu()


def maximum_point(values: Tensor):
    """``[N, H, W]`` -> rows, columns ``[N]`` of each map's maximum (the first in raster
    order, as ``torch.argmax``), and whether the map has one (it is not constant)."""
    flat = values.flatten(1)
    at = flat.argmax(dim=1)
    w = values.shape[-1]
    constant = flat.amax(dim=1) == flat.amin(dim=1)
    return at // w, at % w, ~constant


@metric("pointing_game")
def pointing_game(inputs: Inputs, *, tolerance: int = 15) -> Score:
    """1 where the map's maximum lies less than ``tolerance`` px (Euclidean) from a pixel of
    the object, else 0: TorchRay's acceptance disc ``(dy^2 + dx^2) < tolerance^2``. A
    constant map (zero everywhere) points nowhere: 0."""
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ArgumentError(f"tolerance is a distance in pixels (>= 0), got {tolerance!r}")
    masks = _masks(inputs)
    rows, cols, has = maximum_point(pixel_map(inputs.maps))
    h, w = masks.shape[-2:]
    dy = (torch.arange(h, dtype=torch.float64)[None, :] - rows[:, None]) ** 2  # [N, H]
    dx = (torch.arange(w, dtype=torch.float64)[None, :] - cols[:, None]) ** 2  # [N, W]
    accept = (dy[:, :, None] + dx[:, None, :]) < float(tolerance) ** 2
    hit = (masks & accept).flatten(1).any(dim=1) & has
    return Score(hit.double())


def _inside_share(inputs: Inputs) -> Tensor:
    masks = _masks(inputs)
    positive = pixel_map(inputs.maps).clamp_min(0)
    total = positive.flatten(1).sum(dim=1)
    inside = (positive * masks).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.zeros_like(total))


@metric("relevance_mass")
def relevance_mass(inputs: Inputs) -> Score:
    """The share of the map's positive relevance that lies on the object (0 for a map with
    no positive value)."""
    return Score(_inside_share(inputs))


@metric("energy_pointing_game")
def energy_pointing_game(inputs: Inputs) -> Score:
    """Score-CAM's energy-based pointing game: the share of the map's energy (its positive
    part) inside the object's box. With the object given as its box's mask it equals
    :func:`relevance_mass` on that mask (the two papers differ in the region, a box or a
    segmentation, not the arithmetic)."""
    return Score(_inside_share(inputs))


@metric("relevance_rank")
def relevance_rank(inputs: Inputs) -> Score:
    """With K the object's pixels: the share of the map's K largest pixels (ties in raster
    order) that lie on the object. A constant map ranks nothing: 0."""
    masks = _masks(inputs)
    values = pixel_map(inputs.maps).flatten(1)
    ranked = order(values, "morf")
    on = torch.gather(masks.flatten(1), 1, ranked)
    k = masks.flatten(1).sum(dim=1)
    top = torch.arange(values.shape[1])[None, :] < k[:, None]
    share = (on & top).sum(dim=1).double() / k.double()
    constant = values.amax(dim=1) == values.amin(dim=1)
    return Score(torch.where(constant, torch.zeros_like(share), share))
