"""Display conventions: turning a signed RGB projection into a uint8 image.

A projection is signed RGB in input-pixel space. The scalings:

``signed`` (default)
    each projection divided by its own max ``|value|``, zero at mid-grey (128): bright where
    the feature wants more of a colour, dark where it wants less (the Deep Visualization
    Toolbox convention).
``shared``
    as ``signed``, but one max ``|value|`` for a whole grid, so tiles compare in strength.
``paper``
    the contrast-stretched look of Zeiler & Fergus's figures: the positive part only,
    clipped at its 99.5th percentile and stretched to [0, 255], on black.
``heatmap``
    ``|value|`` summed over colour channels, scaled to [0, 1], OpenCV's JET colour map,
    blended over the photo when one is given.

An all-zero projection is shown as what it is (flat mid-grey, black, or the bare photo),
never as noise from a division by zero.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch

from ..choices import SCALINGS
from ..errors import ArgumentError

__all__ = ["SCALINGS", "to_uint8", "shared_scale", "crop_window"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_hwc(projection: ArrayLike) -> np.ndarray:
    arr = projection.detach().cpu().float().numpy() if isinstance(projection, torch.Tensor) \
        else np.asarray(projection, dtype=np.float32)
    if arr.ndim != 3:
        raise ArgumentError(f"a projection is [3, H, W] (or H x W x 3), got shape {arr.shape}")
    if arr.shape[0] == 1 and arr.shape[-1] != 1:  # a one-channel map (a CAM): [1, H, W]
        return np.moveaxis(arr, 0, -1)
    return np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 and arr.shape[-1] != 3 else arr


def shared_scale(projections: Sequence[ArrayLike]) -> float:
    """The max ``|value|`` over several projections (for ``scaling="shared"``)."""
    return max((float(np.abs(_as_hwc(p)).max()) for p in projections), default=0.0)


def to_uint8(projection: ArrayLike, scaling: str = "signed", *, vmax: Optional[float] = None,
             photo: Optional[np.ndarray] = None, percentile: float = 99.5,
             alpha: float = 0.5) -> np.ndarray:
    """A displayable ``H x W x 3`` uint8 image of one projection.

    Args:
        projection: ``[3, H, W]`` tensor or array (``H x W x 3`` also accepted; a one-channel
            ``[1, H, W]`` map, such as a CAM, is shown in grey or as a heat map).
        scaling: one of ``signed``, ``shared``, ``paper``, ``heatmap`` (see the module doc).
        vmax: the scale for ``shared`` (from :func:`shared_scale`); for ``signed`` it
            overrides the projection's own max.
        photo: ``H x W x 3`` uint8 photo the heat-map is blended over.
        percentile: clipping percentile for ``paper``.
        alpha: heat-map opacity over the photo.

    Examples:
        >>> img = to_uint8(p[0, 0])          # mid-grey is zero
    """
    if scaling not in SCALINGS:
        raise ArgumentError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    arr = _as_hwc(projection)
    if arr.shape[2] == 1 and scaling != "heatmap":  # a one-channel map, shown in grey
        arr = np.repeat(arr, 3, axis=2)
    if scaling in ("signed", "shared"):
        scale = vmax if vmax is not None else float(np.abs(arr).max())
        if scaling == "shared" and vmax is None:
            raise ArgumentError("scaling='shared' needs vmax (see shared_scale)")
        unit = arr / scale if scale > 0 else np.zeros_like(arr)
        return np.clip(np.rint(127.5 + 127.5 * unit), 0, 255).astype(np.uint8)
    if scaling == "paper":
        positive = np.clip(arr, 0, None)
        nonzero = positive[positive > 0]
        if nonzero.size == 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        top = float(np.percentile(nonzero, percentile))
        top = top if top > 0 else float(nonzero.max())
        return np.clip(np.rint(255.0 * positive / top), 0, 255).astype(np.uint8)
    magnitude = np.abs(arr).sum(axis=2)
    peak = float(magnitude.max())
    if peak == 0:
        return photo.copy() if photo is not None else np.zeros(arr.shape, dtype=np.uint8)
    level = np.rint(255.0 * magnitude / peak).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    if photo is None:
        return heat
    blended = (1 - alpha) * photo.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def crop_window(rgb: np.ndarray, top: int, left: int, height: int, width: int,
                fill: int = 0) -> np.ndarray:
    """The ``height x width`` window of ``rgb`` at (top, left), padded with ``fill`` where it
    reaches past the image borders (receptive fields do)."""
    out = np.full((height, width) + rgb.shape[2:], fill, dtype=rgb.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, rgb.shape[0]), min(left + width, rgb.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = rgb[y0:y1, x0:x1]
    return out
