"""First-layer filters and the statistics behind Zeiler & Fergus's Fig. 6 diagnosis.

The paper looked at AlexNet's first-layer filters and saw two problems: a mix of extremely
high- and low-frequency filters with few in between, several of them dead, and aliasing
from the large stride. :func:`filters` makes that measurable, per filter:

- ``rms``: the root mean square of the filter's weights (what the paper's renormalisation
  caps at 0.1);
- ``dead``: the filter's RMS is below ``dead_fraction`` (default 0.1) of the layer's median
  filter RMS: it has stopped contributing;
- ``high_freq``: the share of the filter's spectral energy (``|FFT|^2`` of each input
  channel, 2-D, summed over channels) at frequencies above half the Nyquist frequency, i.e.
  where ``|f_y| > 1/4`` or ``|f_x| > 1/4`` cycles per pixel. A constant filter has none; a
  checkerboard has nearly all of it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from ..data.zoo import model_info
from ..engine.passes.layers import aliases_of
from ..errors import ArgumentError
from ..results import Result, csv_columns

__all__ = ["filter_stats", "filters", "filter_figure", "FilterResult", "conv_of",
           "DEAD_FRACTION"]

DEAD_FRACTION = 0.1


def filter_stats(weight: Tensor, dead_fraction: float = DEAD_FRACTION) -> Dict[str, Tensor]:
    """Per-filter ``rms``, ``dead`` and ``high_freq`` of a conv weight ``[O, I, kh, kw]``
    (see the module docstring)."""
    if weight.dim() != 4:
        raise ArgumentError(f"expected a conv weight [out, in, kh, kw], got shape "
                            f"{list(weight.shape)}")
    w = weight.detach().double().cpu()
    rms = w.pow(2).mean(dim=(1, 2, 3)).sqrt()
    dead = rms < dead_fraction * rms.median()
    energy = torch.fft.fft2(w).abs().pow(2).sum(dim=1)  # [O, kh, kw]
    fy = torch.fft.fftfreq(w.shape[2], dtype=torch.float64).abs().reshape(-1, 1)
    fx = torch.fft.fftfreq(w.shape[3], dtype=torch.float64).abs().reshape(1, -1)
    high = (fy > 0.25) | (fx > 0.25)
    total = energy.sum(dim=(1, 2))
    share = torch.where(total > 0, (energy * high).sum(dim=(1, 2)) / total.clamp_min(1e-300),
                        torch.zeros_like(total))
    return {"rms": rms.float(), "dead": dead, "high_freq": share.float()}


def conv_of(model: nn.Module, layer: Optional[str] = None) -> tuple:
    """``(path, conv)``: the model's first ``Conv2d`` (``layer=None``), the conv at a module
    path, or the conv that feeds a layer alias (ZFNet's ``conv1`` names its ReLU)."""
    modules = list(model.named_modules())
    convs = [(p, m) for p, m in modules if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ArgumentError(f"{type(model).__name__} has no Conv2d layer")
    if layer is None:
        return convs[0]
    path = aliases_of(model).get(layer, layer)
    paths = [p for p, _ in modules]
    if path not in paths:
        raise ArgumentError(f"no layer {layer!r} in {type(model).__name__}; its convolutions "
                            f"are {', '.join(p for p, _ in convs[:8])}"
                            + (" ..." if len(convs) > 8 else ""))
    before = [(p, m) for p, m in modules[:paths.index(path) + 1] if isinstance(m, nn.Conv2d)]
    if not before:
        raise ArgumentError(f"no convolution at or before {layer!r}")
    return before[-1]


@dataclass
class FilterResult(Result):
    """The filters of one conv layer of several models (or checkpoints), side by side.

    Attributes:
        labels: one per model.
        layer: the conv's module path in each model.
        weights: each model's filters ``[O, I, kh, kw]`` (CPU).
        stats: each model's :func:`filter_stats`.
    """

    kind: ClassVar[str] = "filters"

    labels: List[str]
    layers: List[str]
    weights: List[Tensor]
    stats: List[Dict[str, Tensor]]

    def _table(self):
        """The table as columns (``to_dict``/``to_csv``)."""
        return csv_columns(self.table())

    def table(self) -> str:
        """CSV: one row per model and filter."""
        rows = ["model,layer,filter,rms,dead,high_freq"]
        for label, layer, s in zip(self.labels, self.layers, self.stats):
            for i in range(len(s["rms"])):
                rows.append(f"{_csv(label)},{layer},{i},{float(s['rms'][i]):.6g},"
                            f"{int(s['dead'][i])},{float(s['high_freq'][i]):.6g}")
        return "\n".join(rows) + "\n"

    def summary(self) -> List[str]:
        """One line per model: filters, dead, median RMS, mean high-frequency share (or how
        many filters hold non-finite weights)."""
        return [f"{label}: {', '.join(_describe(s))}"
                for label, s in zip(self.labels, self.stats)]

    def figure(self, *, scaling: str = "layer", ncols: Optional[int] = None):
        """Zeiler & Fergus Fig. 6 (a-c): each model's filters as RGB tiles, side by side.
        ``scaling="layer"`` (one scale per model: dominant and dead filters show as such) or
        ``"filter"`` (each filter stretched on its own)."""
        notes = []
        for s in self.stats:  # two facts a line under each panel's title
            parts = _describe(s, short=True)
            notes.append("\n".join(", ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)))
        return figures.filters_figure(self.weights, self.labels, notes, scaling=scaling,
                                      ncols=ncols)

    def _save_data(self, path: str, ext: str) -> str:
        text = self.table().encode()  # .csv
        return write_atomically(path, lambda f: f.write(text))

    def __repr__(self) -> str:
        return "FilterResult(" + "; ".join(self.summary()) + ")"


def _describe(stats: Dict[str, Tensor], short: bool = False) -> List[str]:
    """Filters, dead, median RMS and mean high-frequency share (or, for a diverged run, how
    many filters hold non-finite weights)."""
    count = f"{len(stats['rms'])} filters"
    broken = int((~torch.isfinite(stats["rms"])).sum())
    if broken:  # a diverged run: its statistics mean nothing
        return [count, f"{broken} with non-finite weights (the run diverged)"]
    share = "HF share" if short else "high-frequency share"
    return [count, f"{int(stats['dead'].sum())} dead",
            f"median RMS {float(stats['rms'].median()):.3g}",
            f"{share} {float(stats['high_freq'].mean()):.2f}"]


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def _label(model: nn.Module) -> str:
    info = model_info(model)
    if info is None:
        return type(model).__name__
    if info.weights in ("imagenet", "random"):
        return f"{info.name} ({info.weights})"
    return f"{info.name} ({os.path.basename(info.weights)})"


def filters(models: Union[nn.Module, Sequence[nn.Module]], layer: Optional[str] = None, *,
            labels: Optional[Sequence[str]] = None,
            dead_fraction: float = DEAD_FRACTION) -> FilterResult:
    """The filters of ``layer`` (default: each model's first convolution) of one or several
    models, with their statistics.

    Args:
        models: models (e.g. ``load_model("zfnet", weights="run/epoch_5.pt")``) to put side by
            side.
        layer: a module path or alias; an alias that names a ReLU means the conv feeding it.
        labels: one per model (default: the zoo name and weights).
        dead_fraction: a filter is dead below this fraction of the layer's median RMS.

    Examples:
        >>> result = filters([load_model("alexnet"), load_model("zfnet", weights="z.pt")])
        >>> result.save("fig6.pdf"); result.save("fig6.csv")
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ArgumentError("no models to draw")
    if labels is not None and len(labels) != len(models):
        raise ArgumentError(f"{len(labels)} labels for {len(models)} models")
    found = [conv_of(m, layer) for m in models]
    weights = [conv.weight.detach().cpu().clone() for _, conv in found]
    return FilterResult(labels=list(labels) if labels else [_label(m) for m in models],
                        layers=[p for p, _ in found], weights=weights,
                        stats=[filter_stats(w, dead_fraction) for w in weights])


def filter_figure(models: Union[nn.Module, Sequence[nn.Module]], layer: Optional[str] = None,
                  **options):
    """The figure of :func:`filters` (Zeiler & Fergus Fig. 6 a-c)."""
    return filters(models, layer).figure(**options)
