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
from matplotlib.figure import FigureBase

from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, fitted, show_tile

__all__ = ["relevance_rgb", "concept_figure", "concept_heatmaps", "channel_relevance"]


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


def concept_heatmaps(maps: Sequence[Sequence[np.ndarray]], concepts: Sequence[int],
                     shares: Sequence[Sequence[float]], labels: Sequence[str], *, title: str,
                     fig: Optional[FigureBase] = None) -> Figure:
    """CRP's conditional heatmaps: one row per image (``labels``: its class), one column per
    concept, each titled with its channel and its share of the layer's relevance.

    Args:
        maps: per image, each concept's heatmap ``H x W`` (summed over colour channels).
        concepts: the concepts' channels, in column order.
        shares: per image, each concept's share of the layer's relevance.
    """
    rows, columns = len(maps), len(concepts)
    if fig is None:
        tile = min(1.4, PAGE_WIDTH / max(columns, 1))
        fig = Figure(figsize=(tile * columns + 0.4, tile * rows * 1.15 + 0.4),
                     layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for r in range(rows):
        for c, channel in enumerate(concepts):
            show_tile(axes[r, c], relevance_rgb(maps[r][c]),
                      f"#{channel}: {100 * shares[r][c]:.1f}%")
        axes[r, 0].set_ylabel(labels[r], fontsize=TILE_FONT)
    fig.suptitle(fitted(title, fig, 8), fontsize=8)
    return finish(fig)


def channel_relevance(channel: np.ndarray, share: np.ndarray, labels: Sequence[str], *,
                      title: str, fig: Optional[FigureBase] = None) -> Figure:
    """A class's relevance at a layer, channel by channel: one bar chart per image (its
    share of the layer's relevance per channel, red positive, blue negative).

    Args:
        channel: ``[N, C]`` relevance per channel (its sign colours the bars).
        share: ``[N, C]`` each channel's share of the layer's relevance.
        labels: each image's class.
    """
    rows = len(labels)
    fig = fig or Figure(figsize=(PAGE_WIDTH, 1.6 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    for ax, values, signs, label in zip(axes, share, channel, labels):
        colours = np.where(np.asarray(signs) >= 0, "tab:red", "tab:blue")
        ax.bar(np.arange(len(values)), 100 * np.asarray(values), color=colours, width=1.0)
        ax.axhline(0, color="0.5", linewidth=0.5)
        ax.set_ylabel("share (%)", fontsize=TILE_FONT)
        ax.set_title(label, fontsize=TILE_FONT + 1)
        ax.tick_params(labelsize=TILE_FONT - 1)
    axes[-1].set_xlabel("channel", fontsize=TILE_FONT)
    fig.suptitle(fitted(title, fig, 8), fontsize=8)
    return finish(fig)
