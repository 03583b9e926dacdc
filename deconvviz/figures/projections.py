"""Figures of one image's projections: a grid, receptive-field patches, a per-layer overview.

They take :class:`~deconvviz.analyses.projection.Projections` results (any object with the
same attributes will do) and draw them; tile titles give the feature index and its
activation value ("never fired" where it did not fire), and a note under a tile says why its
projection is not an answer ("numerically zero").
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from matplotlib.figure import FigureBase

from ..choices import check_scaling, weights_label
from ..errors import ArgumentError
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, fitted, grid_shape, show_note, show_tile

__all__ = ["projection_grid", "patch_grid", "layer_overview"]


def _notes(p) -> list:
    """Each tile's note (why it is not an answer), for results that have them."""
    return p.tile_notes() if hasattr(p, "tile_notes") else [None] * len(p)


def _photo_panel(fig, p) -> None:
    ax = fig.add_subplot(1, 1, 1)
    show_tile(ax, p.rgb)
    ax.set_title("input crop", fontsize=TILE_FONT + 1, pad=3)


def projection_grid(p, *, scaling: str = "signed", ncols: Optional[int] = None,
                    photo: bool = True, crop: bool = False,
                    fig: Optional[FigureBase] = None) -> Figure:
    """The photo the network saw beside a grid of projections, one tile per feature.

    Args:
        p (Projections): the projections of one image.
        scaling: display convention (see :mod:`deconvviz.display`).
        ncols: tiles per row (default: a square-ish grid).
        photo: draw the input crop on the left.
        crop: each projection cropped to the receptive field of its strongest activation
            and enlarged to the tile (the paper's view), instead of the full frame.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    check_scaling(scaling)
    rows, cols = grid_shape(len(p), ncols)
    tiles = [proj for proj, _ in p.patches(scaling)] if crop else p.images(scaling)
    if fig is None:
        width = PAGE_WIDTH if cols > 2 else 4.5
        tile = (width * (cols / (cols + rows * (1.0 if photo else 0)))) / cols
        fig = Figure(figsize=(width, tile * rows * 1.12 + 0.45), layout="constrained")
    grid_fig = fig
    if photo:
        left, grid_fig = fig.subfigures(1, 2, width_ratios=[rows, cols], wspace=0.02)
        _photo_panel(left, p)
    axes = grid_fig.subplots(rows, cols, squeeze=False)
    for ax, image, title, note in zip(axes.flat, tiles, p.tile_titles(), _notes(p)):
        show_tile(ax, image, title)
        show_note(ax, note)
    for ax in list(axes.flat)[len(p):]:
        ax.set_visible(False)
    side = tiles[0].shape[0] if tiles else 0
    note = f" - cropped to the {side}-px receptive field" if crop else ""
    fig.suptitle(fitted(p.title + note, fig, TILE_FONT + 2), fontsize=TILE_FONT + 2)
    return finish(fig)


def patch_grid(p, *, scaling: str = "signed", ncols: Optional[int] = None,
               fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 2 layout for one image: each projection cropped to the receptive
    field of its strongest activation, beside the photo patch under that field."""
    check_scaling(scaling)
    rows, cols = grid_shape(len(p), ncols)
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH, PAGE_WIDTH / (2 * cols) * rows * 1.15 + 0.45),
                     layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for i, ((proj, patch), title, note) in enumerate(zip(p.patches(scaling), p.tile_titles(),
                                                         _notes(p))):
        r, c = divmod(i, cols)
        show_tile(axes[r, 2 * c], proj, title)
        show_note(axes[r, 2 * c], note)
        show_tile(axes[r, 2 * c + 1], patch, "patch")
    for ax in list(axes.flat)[2 * len(p):]:
        ax.set_visible(False)
    fig.suptitle(fitted(p.title, fig, TILE_FONT + 2), fontsize=TILE_FONT + 2)
    return finish(fig)


def layer_overview(results: Sequence, *, scaling: str = "signed",
                   labels: Optional[Sequence[str]] = None, photo: bool = True,
                   crop: Union[bool, Sequence[bool]] = False,
                   fig: Optional[FigureBase] = None) -> Figure:
    """One row per result: by default one per layer, shallow to deep, labelled with the
    layer; ``labels`` names the rows otherwise (e.g. one model per row). With ``photo``, the
    input crop is drawn on the left. ``crop`` (one flag, or one per row) draws a row's
    projections cropped to each unit's receptive field, as the paper does for low layers."""
    check_scaling(scaling)
    if not results:
        raise ArgumentError("no layers to draw")
    cols = max(len(p) for p in results)
    rows = len(results)
    photo_share = 1.6 if photo else 0.0
    if fig is None:
        tile = PAGE_WIDTH / (cols + 1.6 + photo_share)
        fig = Figure(figsize=(PAGE_WIDTH, max(tile * rows * 1.15, 1.6) + 0.45),
                     layout="constrained")
    grid_fig = fig
    if photo:
        left, grid_fig = fig.subfigures(1, 2, width_ratios=[photo_share, cols + 1.6],
                                        wspace=0.02)
        _photo_panel(left, results[0])
    axes = grid_fig.subplots(rows, cols + 1, squeeze=False,
                             gridspec_kw={"width_ratios": [1.6] + [1] * cols})
    for r, p in enumerate(results):
        label_ax = axes[r, 0]
        label_ax.axis("off")
        label_ax.text(1.0, 0.5, labels[r] if labels else p.layer, ha="right", va="center",
                      fontsize=TILE_FONT + 1.5, transform=label_ax.transAxes)
        row_crop = crop[r] if isinstance(crop, (list, tuple)) else crop
        images = [c for c, _ in p.patches(scaling)] if row_crop else p.images(scaling)
        for c, (image, title, note) in enumerate(zip(images, p.tile_titles(), _notes(p))):
            show_tile(axes[r, c + 1], image, title)
            show_note(axes[r, c + 1], note)
        for c in range(len(p), cols):
            axes[r, c + 1].set_visible(False)
    first = results[0]
    name = os.path.basename(first.image) if first.image else "image"
    what = f"{first.model}, strongest features per layer" if labels is None else \
        "strongest features"
    labels_of_weights = sorted({weights_label(getattr(p, "weights", "user")) for p in results})
    untrained = f" - {', '.join(labels_of_weights)}"
    fig.suptitle(f"{what} ({first.mode}) - {name}{untrained}", fontsize=TILE_FONT + 2)
    return finish(fig)
