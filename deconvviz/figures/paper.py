"""The paper's other figures: occlusion (Fig. 7), invariance (Fig. 5) and the boxes of the
correspondence experiment (Table 1).

They take an :class:`~deconvviz.analyses.occlusion.OcclusionResult`, a list of
:class:`~deconvviz.analyses.invariance.InvarianceResult` or a
:class:`~deconvviz.analyses.correspondence.CorrespondenceResult` (any object with the same
attributes will do).
"""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.patches as patches
import numpy as np
from matplotlib.figure import FigureBase

from ..choices import weights_label
from .base import PAGE_WIDTH, TILE_FONT, Figure, finish, show_tile
from .display import to_uint8

__all__ = ["occlusion_figure", "invariance_figure", "correspondence_figure"]


def _box(ax, top: int, left: int, height: int, width: int, color: str = "yellow") -> None:
    ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), width, height, fill=False,
                                   edgecolor=color, linewidth=1.2))


def _map(ax, values: np.ndarray, title: str, cmap: str = "jet") -> None:
    image = ax.imshow(values, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=TILE_FONT, pad=2)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(
        labelsize=TILE_FONT - 2)


def occlusion_figure(result, *, fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 7: per image, (a) the image with an example occluder (where the
    target's probability drops most), (b) the activity map, (c) the projection of the
    feature's strongest activation with its receptive field, (d) the probability map, (e)
    the label map with a legend naming the classes that occur.

    Args:
        result (OcclusionResult): the maps to draw.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    rows = len(result.rgb)
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH * 1.25, 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, 5, squeeze=False)
    for n in range(rows):
        rgb, f, c = result.rgb[n], result.features[n], result.targets[n]
        worst = np.unravel_index(np.argmin(result.probability[n]), result.probability[n].shape)
        shown = rgb.copy()
        top, left = worst[0] * result.stride, worst[1] * result.stride
        shown[top:top + result.size, left:left + result.size] = 128
        show_tile(axes[n, 0], shown, "(a) input, an occluder")
        _map(axes[n, 1], result.activity[n], f"(b) {result.layer} #{f}: summed activity")
        show_tile(axes[n, 2], to_uint8(result.projection[n], "signed"),
                  f"(c) projection of #{f}")
        _box(axes[n, 2], *result.boxes[n])
        _map(axes[n, 3], result.probability[n], f"(d) p({result.class_name(c)})")
        labels = result.label[n]
        classes = list(dict.fromkeys(np.unique(labels).tolist()))
        codes = np.searchsorted(classes, labels)
        axes[n, 4].imshow(codes, cmap="tab10" if len(classes) <= 10 else "tab20",
                          vmin=0, vmax=max(9, len(classes) - 1), interpolation="nearest")
        axes[n, 4].set_xticks([])
        axes[n, 4].set_yticks([])
        axes[n, 4].set_title("(e) most probable class", fontsize=TILE_FONT, pad=2)
        cmap = axes[n, 4].images[0].cmap
        handles = [patches.Patch(color=cmap(k / max(9, len(classes) - 1)),
                                 label=result.class_name(k2)[:22])
                   for k, k2 in enumerate(classes[:8])]
        axes[n, 4].legend(handles=handles, fontsize=TILE_FONT - 2, loc="upper left",
                          bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(f"{result.model}: occlusion with a {result.size}-px grey square every "
                 f"{result.stride} px - {weights_label(result.weights)}",
                 fontsize=TILE_FONT + 2)
    return finish(fig)


def invariance_figure(results: Sequence, *, examples: int = 5,
                      fig: Optional[FigureBase] = None) -> Figure:
    """Zeiler & Fergus Fig. 5: one row per transform: ``examples`` transformed thumbnails of
    each image (a row of them per image), the distance plot of each layer and the plot of
    the probability of each image's class, one curve per image, named in the legend.

    Args:
        results (Sequence[InvarianceResult]): one per transform.
        examples: transformed thumbnails per image.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    results = list(results)
    layers = len(results[0].distance)
    images = len(results[0].targets)
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH * 1.25, (1.2 + 0.7 * images) * len(results) + 0.6),
                     layout="constrained")
    rows = fig.subfigures(len(results), 1, squeeze=False)[:, 0]
    units = {"translate": "vertical shift (px)", "scale": "scale", "rotate": "rotation (°)"}
    for sub, result in zip(rows, results):
        left, right = sub.subfigures(1, 2, width_ratios=[examples, 2.2 * (layers + 1)])
        picks = np.linspace(0, len(result.values) - 1, min(examples, len(result.values)))
        picks = picks.round().astype(int)
        thumbs = left.subplots(images, len(picks), squeeze=False)
        for n in range(images):
            for ax, k in zip(thumbs[n], picks):
                show_tile(ax, result.examples[k][n], f"{result.values[k]:g}" if n == 0 else None)
            thumbs[n, 0].set_ylabel(result.labels[n][:14], fontsize=TILE_FONT - 1)
        left.suptitle(result.transform, fontsize=TILE_FONT + 1)
        plots = right.subplots(1, layers + 1, squeeze=False)[0]
        series = list(result.distance.items()) + [(result.probability_label, result.probability)]
        for ax, (name, values) in zip(plots, series):
            for n in range(values.shape[0]):
                ax.plot(result.values, values[n], marker="o", markersize=2, linewidth=1,
                        label=f"{result.labels[n]} ({result.class_name(result.targets[n])})")
            ax.set_title(name if name.startswith("p(") else f"{name}: distance",
                         fontsize=TILE_FONT + 0.5)
            ax.set_xlabel(units[result.transform], fontsize=TILE_FONT)
            ax.tick_params(labelsize=TILE_FONT - 1)
        plots[-1].legend(fontsize=TILE_FONT - 2, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                         frameon=False)
    fig.suptitle(f"{results[0].model}: invariance - {weights_label(results[0].weights)}",
                 fontsize=TILE_FONT + 2)
    return finish(fig)


def correspondence_figure(result, *, fig: Optional[FigureBase] = None) -> Figure:
    """The images with every part's box, one colour per part, to check the boxes.

    Args:
        result (CorrespondenceResult or PartBoxes): the boxes and images to draw.
        fig: a ``Figure`` or ``SubFigure`` to draw into (default: a new Figure).
    """
    count = len(result.rgb)
    if fig is None:
        fig = Figure(figsize=(PAGE_WIDTH, PAGE_WIDTH / count * 1.25 + 0.4),
                     layout="constrained")
    axes = fig.subplots(1, count, squeeze=False)[0]
    colors = ["yellow", "cyan", "magenta", "lime", "orange", "red", "white"]
    for i, ax in enumerate(axes):
        show_tile(ax, result.rgb[i], f"image {i}")
        for k, part in enumerate(result.parts):
            x, y, w, h = result.boxes[part][i]
            _box(ax, y, x, h, w, colors[k % len(colors)])
    handles = [patches.Patch(color=colors[k % len(colors)], label=part)
               for k, part in enumerate(result.parts)]
    fig.legend(handles=handles, fontsize=TILE_FONT, loc="lower center",
               ncols=min(len(handles), 6), frameon=False)
    weights = getattr(result, "weights", None)
    fig.suptitle(f"{result.model}: the parts masked - {weights_label(weights)}" if weights
                 else f"{result.model}'s crops: the parts to mask (boxes only, no model run)",
                 fontsize=TILE_FONT + 2)
    return finish(fig)
