"""Matplotlib figures of projections, for notebooks and papers.

Every function builds on a ``matplotlib.figure.Figure`` (or a sub-figure you pass as ``fig``)
and returns it; none touches pyplot's global state or calls ``plt.show()``. Sizes are in
inches for a two-column paper (7 in wide); tile titles give the feature index and its
activation value.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import io

import cv2
import matplotlib.figure
import numpy as np
from matplotlib.figure import FigureBase, SubFigure

from torch import nn

from .display import SCALINGS, shared_scale, to_uint8
from .errors import ArgumentError
from .visualize import FeatureHits, Projections

if TYPE_CHECKING:
    from .scan import ScanResult

__all__ = ["Figure", "projection_grid", "patch_grid", "layer_overview", "scan_figure", "figure_from_scan",
           "mosaic",
           "combine", "save_figure", "write_atomically", "FORMATS"]

FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


class Figure(matplotlib.figure.Figure):
    """A matplotlib ``Figure`` that displays itself in Jupyter, with or without pyplot."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

PAGE_WIDTH = 7.0  # inches: a two-column paper's text width
TILE_FONT = 6.5


def _check_scaling(scaling: str) -> None:
    if scaling not in SCALINGS:
        raise ArgumentError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")


def _grid_shape(count: int, ncols: Optional[int]) -> tuple:
    ncols = ncols or min(count, max(1, math.ceil(math.sqrt(count))))
    return math.ceil(count / ncols), ncols


def _show(ax, image, title: Optional[str] = None) -> None:
    ax.imshow(image, interpolation="nearest" if image.shape[0] < 64 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.3)
    if title:
        ax.set_title(title, fontsize=TILE_FONT, pad=2)


def _photo_panel(fig, p: Projections) -> None:
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, p.rgb)
    ax.set_title("input crop", fontsize=TILE_FONT + 1, pad=3)


def projection_grid(p: Projections, *, scaling: str = "signed", ncols: Optional[int] = None,
                    photo: bool = True, fig: Optional[FigureBase] = None) -> Figure:
    """The photo the network saw beside a grid of projections, one tile per feature.

    Args:
        p: a :class:`Projections` result.
        scaling: display convention (see :mod:`deconvviz.display`).
        ncols: tiles per row (default: a square-ish grid).
        photo: draw the input crop on the left.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    _check_scaling(scaling)
    rows, cols = _grid_shape(len(p), ncols)
    if fig is None:
        width = PAGE_WIDTH if cols > 2 else 4.5
        tile = (width * (cols / (cols + rows * (1.0 if photo else 0)))) / cols
        fig = Figure(figsize=(width, tile * rows * 1.12 + 0.45), layout="constrained")
    grid_fig = fig
    if photo:
        left, grid_fig = fig.subfigures(1, 2, width_ratios=[rows, cols], wspace=0.02)
        _photo_panel(left, p)
    axes = grid_fig.subplots(rows, cols, squeeze=False)
    for ax, image, title in zip(axes.flat, p.images(scaling), p.tile_titles()):
        _show(ax, image, title)
    for ax in list(axes.flat)[len(p):]:
        ax.set_visible(False)
    fig.suptitle(p.title, fontsize=TILE_FONT + 2)
    return fig if not isinstance(fig, SubFigure) else fig.figure


def patch_grid(p: Projections, *, scaling: str = "signed", ncols: Optional[int] = None,
               fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 2 layout for one image: each projection cropped to the receptive
    field of its strongest activation, beside the photo patch under that field."""
    _check_scaling(scaling)
    rows, cols = _grid_shape(len(p), ncols)
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH, PAGE_WIDTH / (2 * cols) * rows * 1.15 + 0.45),
                     layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for i, ((proj, patch), title) in enumerate(zip(p.patches(scaling), p.tile_titles())):
        r, c = divmod(i, cols)
        _show(axes[r, 2 * c], proj, title)
        _show(axes[r, 2 * c + 1], patch, "patch")
    for ax in list(axes.flat)[2 * len(p):]:
        ax.set_visible(False)
    fig.suptitle(p.title, fontsize=TILE_FONT + 2)
    return fig if not isinstance(fig, SubFigure) else fig.figure


def layer_overview(results: Sequence[Projections], *, scaling: str = "signed",
                   labels: Optional[Sequence[str]] = None, fig: Optional[FigureBase] = None) -> Figure:
    """One row per result: by default one per layer, shallow to deep, labelled with the
    layer; ``labels`` names the rows otherwise (e.g. one model per row)."""
    _check_scaling(scaling)
    if not results:
        raise ArgumentError("no layers to draw")
    cols = max(len(p) for p in results)
    rows = len(results)
    if fig is None:
        tile = PAGE_WIDTH / (cols + 1.6)
        fig = Figure(figsize=(PAGE_WIDTH, tile * rows * 1.15 + 0.45), layout="constrained")
    axes = fig.subplots(rows, cols + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [1.6] + [1] * cols})
    for r, p in enumerate(results):
        label_ax = axes[r, 0]
        label_ax.axis("off")
        label_ax.text(1.0, 0.5, labels[r] if labels else p.layer, ha="right", va="center", fontsize=TILE_FONT + 1.5,
                      transform=label_ax.transAxes)
        for c, (image, title) in enumerate(zip(p.images(scaling), p.tile_titles())):
            _show(axes[r, c + 1], image, title)
        for c in range(len(p), cols):
            axes[r, c + 1].set_visible(False)
    first = results[0]
    name = os.path.basename(first.image) if first.image else "image"
    what = f"{first.model}, strongest features per layer" if labels is None else \
        "strongest features"
    untrained = "" if all(p.trained for p in results) else " - untrained weights"
    fig.suptitle(f"{what} ({first.mode}) - {name}{untrained}", fontsize=TILE_FONT + 2)
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


def scan_figure(layers: Sequence[Sequence[FeatureHits]], *, scaling: str = "signed",
                ncols: int = 4, title: str = "", fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 2 from a scan: for each layer, a grid of features; each feature
    is a 3x3 block of its top-9 projections (left panel) beside a 3x3 block of the image
    patches that caused them (right panel).

    Args:
        layers: per layer, the :class:`~deconvviz.visualize.FeatureHits` of its features.
        scaling: display convention, applied to each projection.
        ncols: features per row in each panel.
    """
    _check_scaling(scaling)
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
                if name == "projections":
                    vmax = shared_scale(feature.projections) if scaling == "shared" else None
                    tiles = [to_uint8(p, scaling, vmax=vmax, photo=patch)
                             for p, patch in zip(feature.projections, feature.patches)]
                else:
                    tiles = feature.patches
                _show(ax, mosaic(tiles), f"#{feature.feature}")
            for ax in list(axes.flat)[len(features):]:
                ax.set_visible(False)
            panel.suptitle(f"{features[0].layer}: {name}", fontsize=TILE_FONT + 1.5)
    if title:
        fig.suptitle(title, fontsize=TILE_FONT + 2)
    return fig if not isinstance(fig, SubFigure) else fig.figure


def figure_from_scan(result: "ScanResult", layers: Union[None, str, Sequence[str]] = None,
                     features: str = "0-15", *, seed: int = 0, model: Optional[nn.Module] = None,
                     scaling: str = "signed", ncols: int = 4) -> Figure:
    """Zeiler & Fergus Fig. 2 from a scan result, as ``deconvviz figure`` draws it.

    Args:
        result: a :class:`~deconvviz.scan.ScanResult`.
        layers: a layer name or several (default: every scanned layer).
        features: ``"0-15"``, ``"3,7,40-47"`` or ``"random:16"`` (seeded by ``seed``).
        model: the scanned model; by default rebuilt from the result's zoo name and weights.
        scaling: display convention.
        ncols: features per row.
    """
    from .visualize import choose_features, project_hits
    from .zoo import load_model

    layers = [layers] if isinstance(layers, str) else list(layers or result.layer_names)
    chosen = {l: choose_features(features, result.features(l), seed=seed) for l in layers}
    if model is None:
        model = load_model(result.model, weights=result.weights_argument)
    hits = [project_hits(result, l, chosen[l], model=model) for l in layers]
    untrained = " - untrained weights" if result.weights == "random" else ""
    read = len(result.images) - len(result.skipped)
    title = f"{result.model}: top {result.k} of {read} images{untrained}"
    return scan_figure(hits, scaling=scaling, ncols=ncols, title=title)


def combine(draw: Sequence[Callable[[object], object]], *, height: float) -> Figure:
    """Stack several drawings in one figure: each ``draw[i](subfigure)`` fills one row."""
    fig = Figure(figsize=(PAGE_WIDTH, height * len(draw)), layout="constrained")
    subs = fig.subfigures(len(draw), 1, squeeze=False)
    for sub, fn in zip(subs[:, 0], draw):
        fn(sub)
    return fig


def check_output_path(path: str, formats: Sequence[str] = FORMATS) -> str:
    """Raise :class:`ArgumentError` unless ``path`` has one of ``formats`` as extension and a
    writable folder."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in formats:
        raise ArgumentError(f"unsupported output format {ext or '(none)'!r} for {path}; use "
                            f"{', '.join(formats)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArgumentError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise ArgumentError(f"output folder is not writable: {folder}")
    return path


def write_atomically(path: str, write: Callable[[object], None]) -> str:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".deconvviz-", suffix=ext, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_figure(fig: Figure, path: str, *, dpi: Optional[float] = None) -> str:
    """Save ``fig`` as PNG, JPEG, PDF or SVG (by extension), atomically. Returns ``path``."""
    check_output_path(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    fmt = "jpeg" if fmt == "jpg" else fmt
    return write_atomically(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi or 200))

