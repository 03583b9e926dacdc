"""The figure of feature visualisation: a grid of optimised images, one tile per image, under
a title that names the weights, objective, parametrisation and steps. It draws the images it
is given."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import FigureBase

from ..errors import ArgumentError
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, fitted, grid_shape, show_tile, wrapped

__all__ = ["feature_vis_grid"]


def feature_vis_grid(tiles: Sequence[Sequence[np.ndarray]], labels: Sequence[str], title: str,
                     *, notes: Optional[Sequence[Sequence[str]]] = None,
                     ncols: Optional[int] = None, fig: Optional[FigureBase] = None) -> Figure:
    """Tiles (``H x W x 3`` uint8), ``tiles[unit][image]``, laid out unit after unit; each
    titled with its unit's label and, when given, its note (the unit's value, or why it has
    none: "never fired").

    With one image per unit the units fill a square-ish grid (``ncols`` wide); with several,
    each unit is a row."""
    if not tiles or not tiles[0]:
        raise ArgumentError("nothing to draw: no images")
    per = len(tiles[0])
    flat = [(r, i) for r in range(len(tiles)) for i in range(per)]
    if per == 1:
        rows, cols = grid_shape(len(flat), ncols)
    else:
        rows, cols = len(tiles), per
    if fig is None:
        cell = min(1.1, PAGE_WIDTH / cols)
        width = max(cell * cols + 0.2, 3.5)  # room for the title's settings
        lines = len(fitted(title, Figure(figsize=(width, 1)), TILE_FONT + 1).splitlines())
        fig = Figure(figsize=(width, cell * rows * 1.15 + 0.2 + 0.13 * lines),
                     layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(flat):
            ax.set_visible(False)
            continue
        r, i = flat[k]
        name = labels[r] if i == 0 or per == 1 else ""
        note = notes[r][i] if notes is not None else ""
        heading = " ".join(t for t in (name, note) if t)  # wrapped: a reason is long
        show_tile(ax, tiles[r][i], wrapped(heading, 20) if heading else None)
    fig.suptitle(fitted(title, fig, TILE_FONT + 1), fontsize=TILE_FONT + 1)
    return finish(fig)
