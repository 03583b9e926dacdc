"""The arithmetic every perturbation metric shares: one value per pixel from a map, the
pixels' order, the "removed" value, and the perturbed images run in batches on the model's
device with their forward passes counted.

Conventions (the same for every method, :data:`deconvviz.metric_table.CHANNELS`): a
``[C, H, W]`` map becomes ``[H, W]`` by summing its channels; pixels are ordered by that
value, largest first for "most relevant first", with ties kept in raster order (a stable
sort), so a map that is zero everywhere removes pixels in raster order.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import metric_table
from ...errors import ArgumentError
from .base import Inputs

__all__ = ["pixel_map", "order", "baseline_image", "Forward", "auc", "pearson", "explained",
           "needs_explain", "BASELINES", "ORDERS"]

BASELINES = metric_table.BASELINES
ORDERS = ("morf", "lerf")


def pixel_map(maps: Tensor) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, H, W]`` float64 on the CPU: the channels summed (orders,
    ranks and masks are made on the CPU and moved to the images' device where used)."""
    if maps.dim() != 4:
        raise ArgumentError(f"maps are [N, C, H, W], got shape {tuple(maps.shape)}")
    return maps.detach().double().cpu().sum(dim=1)


def order(values: Tensor, how: str = "morf") -> Tensor:
    """``[N, P]`` -> ``[N, P]`` indices: largest first (``"morf"``) or smallest first
    (``"lerf"``); ties in the order of the indices."""
    if how not in ORDERS:
        raise ArgumentError(f"order is one of {', '.join(ORDERS)}, got {how!r}")
    return torch.sort(values, dim=1, descending=how == "morf", stable=True).indices


def baseline_image(inputs: Inputs, name: Union[str, float, Tensor], *,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """The "removed" value of each pixel, ``[N, 3, H, W]`` (on the images' device and dtype).

    ``inputs.baseline`` wins where the driver gives it (the model's black, normalised).
    Otherwise ``name``: a number, a tensor, or ``"black"``/``"white"`` (each image's
    smallest/largest value, as Quantus), ``"mean"`` (each image's mean colour, per channel,
    of the unperturbed image), ``"uniform"`` (U[0, 1) per value, as Samek et al.),
    ``"zero"``."""
    x = inputs.images
    given = inputs.baseline if inputs.baseline is not None else name
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        return torch.full_like(x, float(given))
    if isinstance(given, Tensor):
        given = given.to(x)
        if given.dim() == 1:
            given = given.view(1, -1, 1, 1)
        return given.expand_as(x)
    flat = x.flatten(1)
    if given == "black":
        return flat.amin(dim=1).view(-1, 1, 1, 1).expand_as(x)
    if given == "white":
        return flat.amax(dim=1).view(-1, 1, 1, 1).expand_as(x)
    if given == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if given == "zero":
        return torch.zeros_like(x)
    if given == "uniform":
        g = generator or inputs.generator
        return torch.rand(x.shape, generator=g, dtype=torch.float64).to(x)
    raise ArgumentError(f"baseline is a number, a tensor or one of {', '.join(BASELINES)}, "
                        f"got {given!r}")


class Forward:
    """Runs images through the model in batches of ``inputs.batch_size`` on the model's
    device and keeps count of the images run (:attr:`passes`).

    ``output``: ``"probability"`` (softmax) or ``"logit"`` of each image's target class;
    ``"accuracy"``: 1 where the target is the top class, else 0."""

    OUTPUTS = ("probability", "logit", "accuracy")

    def __init__(self, inputs: Inputs, output: str = "probability"):
        if output not in self.OUTPUTS:
            raise ArgumentError(f"output is one of {', '.join(self.OUTPUTS)}, got {output!r}")
        self.inputs, self.output, self.passes = inputs, output, 0
        first = next(inputs.model.parameters(), None)
        self.device = first.device if first is not None else inputs.images.device
        self.dtype = (first.dtype if first is not None and first.is_floating_point()
                      else inputs.images.dtype)

    def read(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The output asked for, ``[M]`` float64, from ``logits`` ``[M, classes]``."""
        targets = targets.to(logits.device)
        if self.output == "logit":
            out = logits.gather(1, targets[:, None])[:, 0]
        elif self.output == "probability":
            out = F.softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]
        else:
            out = (logits.argmax(dim=1) == targets).to(logits.dtype)
        return out.double().cpu()

    def logits(self, images: Tensor) -> Tensor:
        """The model's output for ``images`` (one batch), counted."""
        self.passes += images.shape[0]
        with torch.no_grad():
            return self.inputs.model(images.to(self.device, self.dtype))

    def __call__(self, images: Tensor, targets: Tensor) -> Tensor:
        """``[M]`` float64: the output for each of ``images`` ``[M, 3, H, W]`` and its
        target, run ``batch_size`` at a time."""
        size = max(1, int(self.inputs.batch_size))
        out = [self.read(self.logits(images[k:k + size]), targets[k:k + size])
               for k in range(0, images.shape[0], size)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def images(self, builder, steps: Sequence, targets: Tensor) -> Tensor:
        """``[N, S]``: ``builder(step)`` gives the ``[N, 3, H, W]`` images of one step; the
        steps are stacked into batches of about ``batch_size`` images (several steps of few
        images, or one step split), so small images still run in full batches."""
        n = targets.shape[0]
        per = max(1, int(self.inputs.batch_size) // max(n, 1))
        columns = []
        for k in range(0, len(steps), per):
            group = list(steps[k:k + per])
            batch = torch.cat([builder(s) for s in group])
            columns.append(self(batch, targets.repeat(len(group))).view(len(group), n).T)
            self._tell(k + len(group), len(steps))
        return torch.cat(columns, dim=1) if columns else torch.zeros(n, 0, dtype=torch.float64)

    def _tell(self, done: int, total: int) -> None:
        if self.inputs.progress is not None:
            self.inputs.progress(done, total, "perturbation steps")


def auc(curve: Tensor, x: Tensor) -> Tensor:
    """``[N]``: the trapezoidal area under each row of ``curve`` ``[N, S]`` over ``x``."""
    if curve.shape[1] < 2:
        return curve[:, 0].clone() if curve.shape[1] else torch.zeros(curve.shape[0])
    return torch.trapezoid(curve, x.to(curve), dim=1)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of ``[N, R]`` tensors; 0 where either row is constant."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(dim=1) / den.clamp_min(1e-300),
                       torch.zeros_like(den))


def needs_explain(inputs: Inputs) -> None:
    if inputs.explain is None:
        raise ArgumentError("this metric recomputes maps: it needs the method's explain "
                            "function (inputs.explain)")


def explained(inputs: Inputs, model, images: Tensor, targets: Tensor) -> Tensor:
    """``inputs.explain`` over ``images`` in batches of ``inputs.batch_size``, detached."""
    size = max(1, int(inputs.batch_size))
    out = [inputs.explain(model, images[k:k + size], targets[k:k + size]).detach()
           for k in range(0, images.shape[0], size)]
    return torch.cat(out)
