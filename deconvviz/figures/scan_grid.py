"""Zeiler & Fergus Fig. 2 from a scan's projected top hits."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import FigureBase

from ..choices import check_scaling
from ..errors import ArgumentError
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, mosaic, show_tile
from .display import shared_scale, to_uint8

__all__ = ["scan_figure"]


EMPTY = 225  # the grey of a slot with no hit


def scan_figure(layers: Sequence[Sequence], *, scaling: str = "signed",
                ncols: int = 4, title: str = "", slots: Optional[int] = None,
                fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 2 from a scan: for each layer, a grid of features; each feature
    is a 3x3 block of its top-9 projections (left panel) beside a 3x3 block of the image
    patches that caused them (right panel).

    Args:
        layers: per layer, the :class:`~deconvviz.analyses.top_hits.FeatureHits` of its features.
        scaling: display convention, applied to each projection.
        ncols: features per row in each panel.
        slots: hits the scan kept per feature (its ``k``). A feature with fewer hits (it
            fired on fewer images: a position that is not positive is not a hit) shows its
            missing slots as plain grey squares, and its title says how many it has.
    """
    check_scaling(scaling)
    layers = [list(l) for l in layers if l]
    if not layers:
        raise ArgumentError("no features to draw")
    rows_per_layer = [math.ceil(len(l) / ncols) for l in layers]
    cols = min(ncols, max(len(l) for l in layers))
    if fig is None:
        cell = PAGE_WIDTH / (2 * cols + 0.3)
        fig = Figure(figsize=(PAGE_WIDTH, sum(rows_per_layer) * cell * 1.12 + 0.5 * len(layers)),
                     layout="constrained")
    subs = fig.subfigures(len(layers), 1, squeeze=False, height_ratios=rows_per_layer)[:, 0]
    for sub, features, rows in zip(subs, layers, rows_per_layer):
        left, right = sub.subfigures(1, 2, wspace=0.03)
        for panel, name in ((left, "projections"), (right, "image patches")):
            axes = panel.subplots(rows, cols, squeeze=False)
            for ax, feature in zip(axes.flat, features):
                if name == "projections" and feature.projections:
                    vmax = shared_scale(feature.projections) if scaling == "shared" else None
                    tiles = [to_uint8(p, scaling, vmax=vmax, photo=patch)
                             for p, patch in zip(feature.projections, feature.patches)]
                else:
                    tiles = list(feature.patches)
                n = len(tiles)
                wanted = max(slots or n, n)
                tiles += [np.full((8, 8, 3), EMPTY, np.uint8)] * (wanted - n)
                label = f"#{feature.feature}"
                if n < wanted:
                    label += " (never fired)" if n == 0 else f" ({n} of {wanted} hits)"
                show_tile(ax, mosaic(tiles), label)
            for ax in list(axes.flat)[len(features):]:
                ax.set_visible(False)
            panel.suptitle(f"{features[0].layer}: {name}", fontsize=TILE_FONT + 1.5)
    if title:
        fig.suptitle(title, fontsize=TILE_FONT + 2)
    return finish(fig)


