"""What every figure shares: the ``Figure`` class, tile drawing, mosaics, stacking, saving.

Figures draw results they are given; none runs a model (the figure layer cannot import the
engine or the zoo: import-linter checks it). Every function builds on a
``matplotlib.figure.Figure`` (or a sub-figure you pass as ``fig``) and returns it; none touches
pyplot's global state or calls ``plt.show()``. Sizes are in inches for a two-column paper
(7 in wide).
"""
from __future__ import annotations

import io
import math
import os
from typing import Callable, Optional, Sequence

import cv2
import matplotlib.figure
import numpy as np
from matplotlib.figure import FigureBase, SubFigure

from .._io import FIGURE_FORMATS, check_output_path, write_atomically
from ..choices import check_scaling

__all__ = ["Figure", "PAGE_WIDTH", "TILE_FONT", "mosaic", "combine", "save_figure", "picture",
           "show_tile", "show_note", "wrapped", "grid_shape", "finish", "FIGURE_FORMATS",
           "check_scaling"]


class Figure(matplotlib.figure.Figure):
    """A matplotlib ``Figure`` that displays itself in Jupyter, with or without pyplot."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


PAGE_WIDTH = 7.0  # inches: a two-column paper's text width
TILE_FONT = 6.5


def grid_shape(count: int, ncols: Optional[int]) -> tuple:
    ncols = ncols or min(count, max(1, math.ceil(math.sqrt(count))))
    return math.ceil(count / ncols), ncols


def show_tile(ax, image, title: Optional[str] = None) -> None:
    """Draw one image tile: no ticks, thin frame, small title."""
    ax.imshow(image, interpolation="nearest" if image.shape[0] < 64 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.3)
    if title:
        ax.set_title(title, fontsize=TILE_FONT, pad=2)


def wrapped(text: str, width: int = 24, *, words: bool = False) -> str:
    """``text`` on lines of at most ``width`` characters: a note fits under its tile
    (``words``: never break a word, a title may then run a little wider)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=not words)) or text


def show_note(ax, note: Optional[str], width: int = 24) -> None:
    """Write ``note`` (why a tile is not an answer: "numerically zero", "never fired")
    under the tile, wrapped to ``width`` characters (about the tile's width)."""
    if note:
        ax.set_xlabel(wrapped(note, width), fontsize=TILE_FONT - 1, color="0.25", labelpad=2)


def fitted(text: str, fig: FigureBase, fontsize: float) -> str:
    """``text`` wrapped onto as many lines as the figure's width needs (a long model name,
    ``torchvision:efficientnet_b0``, would run past a small figure's edges)."""
    import textwrap

    width = finish(fig).get_figwidth()
    chars = max(20, int(width * 72 / (0.6 * fontsize)))  # an average glyph: 0.6 em
    return text if len(text) <= chars else "\n".join(textwrap.wrap(text, chars))


def finish(fig: FigureBase) -> "Figure":
    """The top-level figure of ``fig`` (a sub-figure's parent)."""
    return fig if not isinstance(fig, SubFigure) else fig.figure


def mosaic(tiles: Sequence[np.ndarray], *, columns: int = 3, size: int = 64,
           gutter: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles (uint8 ``H x W x 3``) resized to ``size`` and laid out ``columns`` wide with a
    ``gutter`` of ``fill`` between them; empty cells stay ``fill``."""
    rows = max(1, math.ceil(len(tiles) / columns))
    out = np.full((rows * size + (rows - 1) * gutter, columns * size + (columns - 1) * gutter, 3),
                  fill, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        interpolation = cv2.INTER_AREA if tile.shape[0] > size else cv2.INTER_NEAREST
        small = cv2.resize(tile, (size, size), interpolation=interpolation)
        out[r * (size + gutter):r * (size + gutter) + size,
            c * (size + gutter):c * (size + gutter) + size] = small
    return out


def combine(draw: Sequence[Callable[[object], object]], *, height: float) -> Figure:
    """Stack several drawings in one figure: each ``draw[i](subfigure)`` fills one row."""
    fig = Figure(figsize=(PAGE_WIDTH, height * len(draw)), layout="constrained")
    subs = fig.subfigures(len(draw), 1, squeeze=False)
    for sub, fn in zip(subs[:, 0], draw):
        fn(sub)
    return fig


def picture(image: np.ndarray, *, title: Optional[str] = None, dpi: float = 100) -> Figure:
    """A figure of one uint8 ``H x W x 3`` image at its own size (one pixel a pixel at
    ``dpi``), with an optional title above it."""
    height, width = image.shape[:2]
    band = 0.3 if title else 0.0  # inches above the image for the title
    fig = Figure(figsize=(width / dpi, height / dpi + band), dpi=dpi)
    share = band / (height / dpi + band)
    ax = fig.add_axes((0, 0, 1, 1 - share))
    ax.imshow(image, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.text(0.5, 1 - share / 2, fitted(title, fig, TILE_FONT + 1), ha="center",
                 va="center", fontsize=TILE_FONT + 1)
    return fig


def save_figure(fig: Figure, path: str, *, dpi: Optional[float] = None) -> str:
    """Save ``fig`` as PNG, JPEG, PDF or SVG (by extension), atomically. Returns ``path``."""
    check_output_path(path, FIGURE_FORMATS)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    fmt = "jpeg" if fmt == "jpg" else fmt
    return write_atomically(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi or 200))
