"""The evaluation's figure: each metric's mean curve per method (or its means, for a metric
without a curve), above a few images' maps by every method.

It takes an :class:`~deconvviz.analyses.evaluation.result.EvaluationResult` (any object with
its attributes will do) and only draws what it holds.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from matplotlib.figure import FigureBase

from ..choices import weights_label
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, show_tile, wrapped
from .display import to_uint8

__all__ = ["evaluation_figure"]

_PER_ROW = 4  # metric panels per row
_TILES_PER_ROW = 10  # map tiles per row (the photo, then the methods)


def _colours(count: int):
    from matplotlib import colormaps

    cmap = colormaps["tab20" if count > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(count)]


def _panel(ax, result, metric: str, ran, colours) -> None:
    title = result.metric_titles.get(metric, metric)
    arrow = "↑" if result.higher_is_better.get(metric, True) else "↓"
    ax.set_title(f"{title} {arrow}", fontsize=TILE_FONT + 1)
    ax.tick_params(labelsize=TILE_FONT)
    curved = [m for m in ran if metric in result.curves.get(m, {})]
    if curved:
        for k, method in enumerate(ran):
            if method not in curved:
                continue
            curve, x = result.curves[method][metric]
            finite = curve.double()
            ax.plot(x.double().numpy(), np.nanmean(finite.numpy(), axis=0),
                    color=colours[k], lw=1.0, ls="-" if k < 10 else "--")
        fraction = float(x.max()) <= 1.0  # a share of the image, else a count of steps
        ax.set_xlabel("fraction of the image" if fraction else "step", fontsize=TILE_FONT)
        return
    means, sems = zip(*[result.summary(m, metric)[:2] for m in ran]) if ran else ((), ())
    ys = np.arange(len(ran))
    ax.barh(ys, [0 if not math.isfinite(v) else v for v in means],
            xerr=[0 if not math.isfinite(e) else e for e in sems], color=colours[:len(ran)],
            error_kw={"lw": 0.6})
    ax.set_yticks(ys, [result.titles.get(m, m) for m in ran], fontsize=TILE_FONT - 1)
    ax.invert_yaxis()


def _curves(sub, result, ran, colours) -> None:
    metrics = list(result.metrics)
    cols = min(_PER_ROW, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / cols) if metrics else 0
    if not rows:
        return
    axes = sub.subplots(rows, cols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        _panel(ax, result, metric, ran, colours)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if any(result.curves.get(m) for m in ran):
        handles = [__import__("matplotlib.lines", fromlist=["Line2D"]).Line2D(
            [], [], color=colours[k], lw=1.2, ls="-" if k < 10 else "--")
            for k in range(len(ran))]
        sub.legend(handles, [result.titles.get(m, m) for m in ran], loc="outside right upper",
                   fontsize=TILE_FONT - 1, frameon=False)


def _maps(sub, result, ran, count: int) -> None:
    shown = min(count, len(result.rgb))
    tiles = 1 + len(ran)
    per_row = min(tiles, _TILES_PER_ROW)
    lines = math.ceil(tiles / per_row)
    if not shown:
        return
    axes = sub.subplots(shown * lines, per_row, squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for image in range(shown):
        photo = result.rgb[image]
        for t in range(tiles):
            ax = axes[image * lines + t // per_row, t % per_row]
            ax.set_visible(True)
            if t == 0:
                show_tile(ax, photo, wrapped(str(result.images[image]).split("/")[-1], 18))
                continue
            method = ran[t - 1]
            maps = result.maps[method]
            show_tile(ax, to_uint8(maps[image], result.display.get(method, "signed"),
                                   photo=photo),
                      wrapped(result.titles.get(method, method), 14, words=True))


def evaluation_figure(result, *, count: int = 3, fig: Optional[FigureBase] = None) -> Figure:
    """The curves (or means) per metric, then the first ``count`` images' maps per method.

    Args:
        result (EvaluationResult): what to draw.
        count: how many images' maps to draw.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    ran = [m for m in result.methods if m in result.scores]
    colours = _colours(len(ran))
    panels = math.ceil(len(result.metrics) / _PER_ROW)
    shown = min(count, len(result.rgb), len(result.images))
    tiles = 1 + len(ran)
    tile_rows = shown * math.ceil(tiles / min(tiles, _TILES_PER_ROW))
    tile = PAGE_WIDTH * 1.4 / _TILES_PER_ROW
    legend = 0.12 * len(ran) + 0.4  # the curves' legend, one line per method
    top = max(2.4 * panels, legend) if any(result.curves.get(m) for m in ran) else \
        max(2.4, 0.13 * len(ran) + 0.8) * panels
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH * 1.4, top + tile * 1.2 * tile_rows + 0.6),
                     layout="constrained")
    upper, lower = fig.subfigures(2, 1, height_ratios=[top, max(tile * 1.2 * tile_rows,
                                                                 0.01)])
    _curves(upper, result, ran, colours)
    _maps(lower, result, ran, count)
    missing = "" if not result.not_applicable else \
        f"; n/a: {', '.join(result.not_applicable)}"
    changed = result.changed()
    changed = f"\nparameters other than the papers': {changed}" if changed else ""
    fig.suptitle(f"{result.model} ({weights_label(result.weights)}), "
                 f"{len(result.images)} image(s){missing}{changed}", fontsize=TILE_FONT + 2)
    return finish(fig)
