"""CRP's figure (Achtibat et al. 2023, Fig. 1): one image's decision, the most relevant
concepts of a layer, each with its conditional heatmap, its share of the layer's relevance
and its reference images (patches of a scan's relevance- or activation-maximising hits).

Relevance is signed: heatmaps are drawn red for positive and blue for negative relevance on
a scale symmetric about zero, one scale per map (the share says how much each concept
weighs).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .base import PAGE_WIDTH, TILE_FONT, Figure, fitted, show_tile

__all__ = ["relevance_rgb", "concept_figure"]


def relevance_rgb(heat: np.ndarray) -> np.ndarray:
    """A signed ``H x W`` relevance map as uint8 RGB: white at zero, red positive, blue
    negative, symmetric about zero (``bwr``)."""
    from matplotlib import colormaps

    vmax = float(np.abs(heat).max()) or 1.0
    rgba = colormaps["bwr"]((heat / vmax + 1) / 2)
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def concept_figure(photo: np.ndarray, class_map: np.ndarray, maps: Sequence[np.ndarray],
                   concepts: Sequence[int], shares: Sequence[float],
                   references: Sequence[Sequence[np.ndarray]], *, title: str,
                   reference_title: str = "reference patches",
                   fig: Optional[Figure] = None) -> Figure:
    """One row per concept: its conditional heatmap (titled with its channel and share),
    then its reference patches; the first row shows the photo and the class's heatmap.

    Args:
        photo: the image as the model saw it, uint8 ``H x W x 3``.
        class_map: the class's LRP heatmap, ``H x W`` (summed over colour channels).
        maps: each concept's conditional heatmap, ``H x W``.
        concepts, shares: each concept's channel and its share of the layer's relevance.
        references: each concept's reference patches (uint8 ``h x w x 3``), most relevant
            first; may be empty.
        title: what is explained (model, weights, class, layer, method).
    """
    count = len(maps)
    columns = max(2, 1 + max([len(r) for r in references] + [0]))
    fig = fig or Figure(figsize=(PAGE_WIDTH, 1.15 * (count + 1) + 0.4), layout="constrained")
    axes = fig.subplots(count + 1, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    show_tile(axes[0, 0], photo, "input")
    axes[0, 0].axis("on")
    show_tile(axes[0, 1], relevance_rgb(class_map), "class relevance")
    axes[0, 1].axis("on")
    for row, (heat, channel, share, refs) in enumerate(zip(maps, concepts, shares, references),
                                                       start=1):
        ax = axes[row, 0]
        ax.axis("on")
        show_tile(ax, relevance_rgb(heat), f"#{channel}: {100 * share:.1f}%")
        for k, patch in enumerate(refs):
            axes[row, 1 + k].axis("on")
            show_tile(axes[row, 1 + k], patch, reference_title if k == 0 and row == 1 else None)
        if not refs:
            axes[row, 1].text(0.5, 0.5, "no scan", ha="center", va="center", fontsize=TILE_FONT)
    fig.suptitle(fitted(title, fig, 8), fontsize=8)
    return fig
