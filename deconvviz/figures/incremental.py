"""The changed window of each layer for one occluder position (the occlusion docs' figure).

It draws what it is given: per layer its name, its map's size and the rows and columns the
square can change (``deconvviz.engine.passes.incremental.IncrementalForward.spans`` computes them).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import matplotlib.patches as patches
from matplotlib.figure import FigureBase

from .base import PAGE_WIDTH, TILE_FONT, Figure, finish

__all__ = ["changed_windows_figure"]


def changed_windows_figure(layers: Sequence[Tuple[str, Tuple[int, int], Tuple[int, int, int, int]]],
                           *, title: str, columns: int = 6,
                           fig: Optional[FigureBase] = None) -> Figure:
    """One panel per layer: its map (grey) and the window the square changes (orange).

    Args:
        layers: ``(name, (height, width), (top, bottom, left, right))`` per layer, in forward
            order; the window is rows ``top..bottom-1`` and columns ``left..right-1``.
        title: the figure's title (the model, the square and its position).
        columns: panels per row.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    rows = math.ceil(len(layers) / columns)
    if fig is None:
        tile = PAGE_WIDTH / columns
        fig = Figure(figsize=(PAGE_WIDTH, tile * rows * 1.1 + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, (h, w), (top, bottom, left, right)) in zip(axes.flat, layers):
        ax.set_axis_on()
        ax.add_patch(patches.Rectangle((0, 0), w, h, facecolor="0.85", edgecolor="0.4",
                                       linewidth=0.6))
        ax.add_patch(patches.Rectangle((left, top), right - left, bottom - top,
                                       facecolor="tab:orange", edgecolor="none"))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)  # rows down, as in an image
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        share = (bottom - top) * (right - left) / (h * w)
        ax.set_title(f"{name} {h}x{w}\n{bottom - top}x{right - left} ({100 * share:.0f}%)",
                     fontsize=TILE_FONT)
    fig.suptitle(title, fontsize=TILE_FONT + 2)
    return finish(fig)
