"""Average Drop and Increase in Confidence (Chattopadhay et al. 2018, Grad-CAM++ §4.1).

The explanation map, as a mask in [0, 1], is multiplied into the (model's, normalised)
image, and the class probability of the masked image ``o`` is compared with the image's
``y``: Average Drop is ``100 * max(0, y - o) / y`` per image, Increase in Confidence
``100 * [o > y]``. The mask is the channel-summed map's positive part divided by its
maximum (a CAM's map, already in [0, 1], is unchanged); a map with no positive value masks
the whole image out. Both need one forward pass per image beside the unmasked one (the
masks are not local, so there is no incremental pass to take).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Inputs, Score, metric
from .perturbation import Forward, pixel_map

__all__ = ["average_drop", "increase_in_confidence", "cam_mask"]


def cam_mask(maps: Tensor) -> Tensor:
    """``[N, 1, H, W]`` float64 in [0, 1]: the positive part over its maximum (0 where the
    map has no positive value)."""
    m = pixel_map(maps).clamp_min(0)
    top = m.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(top > 0, m / top.clamp_min(1e-300), torch.zeros_like(m))[:, None]


def _both(inputs: Inputs):
    forward = Forward(inputs, "probability")
    mask = cam_mask(inputs.maps).to(inputs.images)
    scores = forward(torch.cat([inputs.images, inputs.images * mask]),
                     inputs.targets.repeat(2))
    y, o = scores.chunk(2)
    return y, o, forward.passes


@metric("average_drop")
def average_drop(inputs: Inputs) -> Score:
    """``100 * max(0, y - o) / y`` per image (lower is better)."""
    y, o, passes = _both(inputs)
    return Score(100 * (y - o).clamp_min(0) / y, forward_passes=passes)


@metric("increase_in_confidence")
def increase_in_confidence(inputs: Inputs) -> Score:
    """``100`` where the masked image's class probability exceeds the image's, else 0."""
    y, o, passes = _both(inputs)
    return Score(100 * (o > y).double(), forward_passes=passes)
