"""Figures of training: feature evolution (Zeiler & Fergus Fig. 4), first-layer filters
(Fig. 6 a-c) and learning curves. They draw arrays they are given."""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import FigureBase

from ..choices import check_scaling
from ..errors import ArgumentError
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, show_note, show_tile
from .display import shared_scale, to_uint8

__all__ = ["evolution_figure", "filters_figure", "training_curves"]


def evolution_figure(projections: Mapping[str, np.ndarray], features: Mapping[str, Sequence[int]],
                     labels: Sequence[str], *, patches: Optional[Mapping[str, np.ndarray]] = None,
                     scaling: str = "signed", title: str = "",
                     notes: Optional[Mapping[str, Sequence[Sequence[Optional[str]]]]] = None,
                     fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 4: a block per layer, side by side as in the paper, each with a
    row per feature and a column per checkpoint; tiles sized so the whole fits a page width.

    Args:
        projections: per layer, ``[features, checkpoints, 3, H, W]``.
        features: per layer, the feature index of each row.
        labels: one per checkpoint (column).
        patches: per layer, ``[features, checkpoints, H, W, 3]`` uint8 image patches drawn
            to the right of each projection.
        scaling: display convention of each projection.
        notes: per layer, ``notes[layer][feature][checkpoint]``: why a tile is not an answer
            ("never fired", "numerically zero"), written under it; ``None`` where it is.
    """
    check_scaling(scaling)
    layers = [l for l in projections if len(projections[l])]
    if not layers:
        raise ArgumentError("nothing to draw: no layer has features")
    columns = len(labels)
    per = 2 if patches else 1
    rows = max(projections[l].shape[0] for l in layers)
    if fig is None:
        # each block: its tiles plus room for the feature labels on the left
        cell = min(0.6, PAGE_WIDTH / (len(layers) * (columns * per + 0.9)))
        fig = Figure(figsize=(len(layers) * cell * (columns * per + 0.9) + 0.2,
                              cell * rows * 1.12 + 0.75), layout="constrained")
    subs = fig.subfigures(1, len(layers), squeeze=False, wspace=0.02)[0]
    # "epoch 1", "epoch 2", ... above narrow columns: the numbers, and "epoch" once below
    words = {str(l).split(" ", 1)[0] for l in labels}
    unit = words.pop() if len(words) == 1 and all(" " in str(l) for l in labels) else None
    heads = [str(l).split(" ", 1)[1] for l in labels] if unit else list(labels)
    for sub, layer in zip(subs, layers):
        if unit:
            sub.supxlabel(unit, fontsize=TILE_FONT - 0.5)
        arr = projections[layer]
        axes = sub.subplots(rows, columns * per, squeeze=False)
        for f in range(rows):
            if f >= arr.shape[0]:
                for ax in axes[f]:
                    ax.set_visible(False)
                continue
            vmax = shared_scale(list(arr[f])) if scaling == "shared" else None
            for c in range(columns):
                photo = patches[layer][f, c] if patches else None
                tile = to_uint8(arr[f, c], scaling, vmax=vmax, photo=photo)
                ax = axes[f, c * per]
                show_tile(ax, tile, heads[c] if f == 0 else None)
                show_note(ax, notes[layer][f][c] if notes and layer in notes else None, 12)
                if patches:
                    show_tile(axes[f, c * per + 1], patches[layer][f, c])
            axes[f, 0].set_ylabel(f"#{features[layer][f]}", fontsize=TILE_FONT - 1, rotation=0,
                                  ha="right", va="center")
        sub.suptitle(layer, fontsize=TILE_FONT + 1)
    if title:
        fig.suptitle(title, fontsize=TILE_FONT + 1.5)
    return finish(fig)


def _filter_tile(w: np.ndarray, scale: float) -> np.ndarray:
    """One filter ``[I, kh, kw]`` as an RGB tile in the signed convention, zero at mid-grey
    (one-channel filters in grey; only the first three input channels are shown)."""
    rgb = w[:3] if w.shape[0] >= 3 else np.repeat(w[:1], 3, axis=0)
    return to_uint8(np.moveaxis(rgb, 0, -1), "signed", vmax=scale)


def filters_figure(weights: Sequence, labels: Sequence[str], notes: Sequence[str] = (), *,
                   scaling: str = "layer", ncols: Optional[int] = None,
                   fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 6 (a-c): each model's first-layer filters as RGB tiles, in panels
    side by side.

    Args:
        weights: per model, the conv weight ``[O, I, kh, kw]`` (array or tensor).
        labels: a title per panel.
        notes: text under each title (e.g. the statistics, one or two lines).
        scaling: ``"layer"``: one scale per panel (max |w|), so dominant and dead filters
            show as such; ``"filter"``: each filter by its own max |w|.
        ncols: filters per row in each panel (default: about square).
    """
    if scaling not in ("layer", "filter"):
        raise ArgumentError(f"unknown filter scaling {scaling!r}; choose layer or filter")
    arrays = [np.asarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w,
                         dtype=np.float32) for w in weights]
    if not arrays:
        raise ArgumentError("no filters to draw")
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH, PAGE_WIDTH / len(arrays) + 0.6), layout="constrained")
    panels = fig.subfigures(1, len(arrays), squeeze=False)[0]
    for i, (panel, w) in enumerate(zip(panels, arrays)):
        count = w.shape[0]
        cols = ncols or math.ceil(math.sqrt(count))
        rows = math.ceil(count / cols)
        layer_scale = float(np.abs(w).max())
        kh, kw = w.shape[2:]
        pad = 1
        board = np.full((rows * (kh + pad) + pad, cols * (kw + pad) + pad, 3), 255, np.uint8)
        for o in range(count):
            r, c = divmod(o, cols)
            scale = layer_scale if scaling == "layer" else float(np.abs(w[o]).max())
            board[pad + r * (kh + pad):pad + r * (kh + pad) + kh,
                  pad + c * (kw + pad):pad + c * (kw + pad) + kw] = _filter_tile(w[o], scale)
        ax = panel.subplots()
        ax.imshow(board, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        note = notes[i] if i < len(notes) else ""
        ax.set_title(f"({chr(ord('a') + i)}) {labels[i]}" + (f"\n{note}" if note else ""),
                     fontsize=TILE_FONT)
    return finish(fig)


def training_curves(metrics: Sequence[Mapping[str, float]], *, title: str = "",
                    fig: Optional[FigureBase] = None) -> Figure:
    """Loss and top-1 error per epoch, training and validation (rows of ``metrics.csv``)."""
    if not metrics:
        raise ArgumentError("no epochs to draw")
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH, 2.4), layout="constrained")
    epochs = [m["epoch"] for m in metrics]
    axes = fig.subplots(1, 2)
    for ax, key, name in ((axes[0], "loss", "loss"), (axes[1], "top1_error", "top-1 error")):
        for split, style in (("train", "-"), ("val", "--")):
            values: List[float] = [m.get(f"{split}_{key}", math.nan) for m in metrics]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, style, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch", fontsize=TILE_FONT + 1)
        ax.set_title(name, fontsize=TILE_FONT + 1.5)
        ax.tick_params(labelsize=TILE_FONT)
        ax.legend(fontsize=TILE_FONT)
    if title:
        fig.suptitle(title, fontsize=TILE_FONT + 2)
    return finish(fig)

