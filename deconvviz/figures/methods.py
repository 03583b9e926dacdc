"""Figures of several methods: the comparison grid, and the sanity check's maps and curves.

They take a :class:`~deconvviz.analyses.comparison.Comparison` or a
:class:`~deconvviz.analyses.sanity.SanityResult` (any object with the same attributes will
do). Each method is drawn in its own display convention (``result.display``: ``heatmap``
over the photo for CAMs and occlusion, ``signed`` mid-grey otherwise).
"""
from __future__ import annotations

from typing import Optional

from matplotlib.figure import FigureBase

from ..choices import weights_label
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, fitted, show_note, show_tile, wrapped
from .display import to_uint8

__all__ = ["comparison_grid", "sanity_figure", "attribution_figure"]


def _tile(result, method: str, maps, index: int, photo):
    return to_uint8(maps[index], result.display.get(method, "signed"), photo=photo)


def comparison_grid(result, *, fig: Optional[FigureBase] = None) -> Figure:
    """One row per image, one column per method, the photo first; a method that cannot
    explain the target shows "n/a", and a map that is not an answer says why under its tile
    (``result.notes``: "numerically zero", "relevance not conserved").

    Args:
        result (Comparison): the maps to draw.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    rows, cols = len(result.images), len(result.methods) + 1
    # a title wrapped to its tile's width: about 9 characters per inch at the tiles' font
    width = max(8, int(9 * max(PAGE_WIDTH / cols, 0.9)))
    if fig is None:
        tile = max(PAGE_WIDTH / cols, 0.9)
        fig = Figure(figsize=(tile * cols, tile * rows * 1.18 + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        photo = result.rgb[r]
        show_tile(axes[r, 0], photo, "input" if r == 0 else None)
        axes[r, 0].set_ylabel(result.row_label(r), fontsize=TILE_FONT)
        for c, method in enumerate(result.methods, start=1):
            ax = axes[r, c]
            title = (wrapped(result.titles.get(method, method), width, words=True) if r == 0
                     else None)
            if method in result.maps:
                show_tile(ax, _tile(result, method, result.maps[method], r, photo), title)
                show_note(ax, (getattr(result, "notes", {}).get(method) or [None] * rows)[r])
            else:
                show_tile(ax, photo * 0 + 255, title)
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes,
                        fontsize=TILE_FONT + 2, color="0.4")
    untrained = f" - {weights_label(getattr(result, 'weights', 'user'))}"
    fig.suptitle(f"{result.model}: {result.target.label(0) if rows == 1 else 'each row its target'}"
                 f"{untrained}", fontsize=TILE_FONT + 2)
    return finish(fig)


def _wrapped(label: str, width: int) -> str:
    """``label`` in lines of at most ``width`` characters, broken after dots (a module path's
    parts); a part longer than a line is cut into pieces."""
    parts = [piece for part in label.replace(".", ".\n").split("\n")
             for piece in ([part[i:i + width] for i in range(0, len(part), width)] or [""])]
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def sanity_figure(result, *, image: int = 0, max_columns: int = 10,
                  fig: Optional[FigureBase] = None) -> Figure:
    """Adebayo et al.'s Fig. 2: for each method a row of maps as the layers are re-initialised
    from the top (at most ``max_columns`` steps, evenly spaced, first and last included),
    above the three similarity curves against the original map.

    Args:
        result (SanityResult): the maps and scores to draw.
        image: which image's maps to draw.
        max_columns: steps shown as maps.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    steps = len(result.steps)
    shown = sorted({round(i * (steps - 1) / max(1, min(max_columns, steps) - 1))
                    for i in range(min(max_columns, steps))})
    rows = len(result.methods)
    if fig is None:
        tile = PAGE_WIDTH / (len(shown) + 1.5)
        fig = Figure(figsize=(PAGE_WIDTH, tile * rows * 1.15 + 2.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[tile * rows * 1.15 + 0.3, 2.3])
    axes = top.subplots(rows, len(shown), squeeze=False)
    photo = result.rgb[image]
    # a column's label stays over its column: wrapped at dots to the tile's width, level
    width = int(PAGE_WIDTH / (len(shown) + 1.5) * 72 / ((TILE_FONT - 1.5) * 0.6))
    for r, method in enumerate(result.methods):
        maps = result.maps[method]
        for c, k in enumerate(shown):
            title = ("original" if k == 0 else result.steps[k]) if r == 0 else None
            show_tile(axes[r, c], _tile(result, method, maps[k], image, photo), title)
            if r == 0 and title:
                axes[r, c].set_title(_wrapped(title, width), fontsize=TILE_FONT - 1.5,
                                     pad=2)
        axes[r, 0].set_ylabel(result.titles.get(method, method), fontsize=TILE_FONT)
    curves = bottom.subplots(1, 3, sharey=True)
    names = {"spearman_abs": "Spearman, |map|", "spearman_signed": "Spearman, signed map",
             "ssim": "SSIM, |map|"}
    for ax, (metric, label) in zip(curves, names.items()):
        for method in result.methods:
            ax.plot(range(steps), result.scores[method][metric], marker="o", markersize=2,
                    label=result.titles.get(method, method))
        ax.set_title(label, fontsize=TILE_FONT + 1)
        ax.set_xlabel("layers re-initialised from the top", fontsize=TILE_FONT)
        ax.axhline(0, color="0.7", linewidth=0.5)
        ax.tick_params(labelsize=TILE_FONT - 1)
    curves[0].set_ylim(-1.05, 1.05)
    curves[0].legend(fontsize=TILE_FONT - 1, loc="lower left")
    fig.suptitle(f"{result.model}: cascading randomisation, target "
                 f"{result.target.label(image)} - {weights_label(result.weights)}",
                 fontsize=TILE_FONT + 2)
    return finish(fig)


def attribution_figure(maps, scaling: str, labels, *, photos=None, title: str = "",
                       method_title: str = "", fig: Optional[FigureBase] = None,
                       notes=None) -> Figure:
    """One method's attributions, one row per image: the photo (where it is known), then
    the map in the method's display convention, as in :func:`comparison_grid`.

    Args:
        maps: ``[N, C, H, W]`` attributions (``C`` is 3, or 1 for a CAM).
        scaling: the method's display convention (``signed`` or ``heatmap``).
        labels: each image's row label (its target).
        photos: the crops the network saw, ``H x W x 3`` uint8 each, or ``None``.
        title: the figure's title; ``method_title`` heads the maps' column.
    """
    rows, cols = len(maps), 1 + (photos is not None)
    if fig is None:
        tile = min(2.0, PAGE_WIDTH / cols)
        fig = Figure(figsize=(max(3.5, tile * cols + 0.3), tile * rows * 1.18 + 0.5),
                     layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        photo = photos[r] if photos is not None else None
        if photo is not None:
            show_tile(axes[r, 0], photo, "input" if r == 0 else None)
        show_tile(axes[r, cols - 1], to_uint8(maps[r], scaling, photo=photo),
                  method_title if r == 0 else None)
        show_note(axes[r, cols - 1], notes[r] if notes else None)
        axes[r, 0].set_ylabel(labels[r], fontsize=TILE_FONT)
    if title:
        fig.suptitle(fitted(title, fig, TILE_FONT + 2), fontsize=TILE_FONT + 2)
    return finish(fig)
