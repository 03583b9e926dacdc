"""Invariance, Zeiler & Fergus Fig. 5: how representations and the prediction change as the
image is translated, scaled or rotated.

Each transform is applied to the normalised input tensor with torchvision's
``transforms.v2.functional.affine`` (bilinear, fill 0: the preprocessing's mean colour). For
each image and value: the Euclidean distance between a layer's flattened activations for the
transformed and the original image, and the probability (softmax of the logits) of the
target class (default: each image's top-1 class before transforming).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api, deprecated
from ..choices import TRANSFORMS
from ..data.images import ImagesArg, to_rgb
from ..data.zoo import class_names, model_info, model_name
from ..engine import Deconvnet, Projector
from ..engine.guard import runs_model
from ..engine.passes.recording import forward_to, images_for
from ..errors import ArgumentError, closest
from ..results import Result, csv_columns
from .attribution import resolve_target

__all__ = ["InvarianceResult", "invariance", "default_values", "apply_transform",
           "default_probe_layers"]


def default_values(transform: str) -> List[float]:
    """Vertical shift -60..60 px (step 10), scale 1..1.8 (step 0.1), rotation 0..350 degrees
    (step 10)."""
    if transform == "translate":
        return [float(v) for v in range(-60, 61, 10)]
    if transform == "scale":
        return [round(1 + 0.1 * k, 1) for k in range(9)]
    return [float(v) for v in range(0, 360, 10)]


def check_transform(transform: str) -> str:
    if transform not in TRANSFORMS:
        raise ArgumentError(f"unknown transform {transform!r}.{closest(transform, TRANSFORMS)} "
                            f"Choose one of {', '.join(TRANSFORMS)}.")
    return transform


def _affine(transform: str, value: float):
    """(angle, shift, scale) of the affine map that applies ``transform`` by ``value``."""
    if transform == "translate":
        return 0.0, [0, int(round(value))], 1.0
    if transform == "scale":
        return 0.0, [0, 0], float(value)
    return float(value), [0, 0], 1.0


def is_identity(transform: str, value: float) -> bool:
    """Whether ``transform`` by ``value`` leaves an image as it is."""
    angle, shift, scale = _affine(transform, value)
    return shift == [0, 0] and scale == 1.0 and angle % 360 == 0


def apply_transform(x: Tensor, transform: str, value: float) -> Tensor:
    """``x`` translated vertically by ``value`` pixels, scaled by ``value`` or rotated by
    ``value`` degrees, about the image centre (bilinear, fill 0)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    if is_identity(transform, value):
        return x  # resampling it would add float noise
    angle, shift, scale = _affine(transform, value)
    return TF.affine(x, angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR, fill=0.0)


def default_probe_layers(net: Projector) -> List[str]:
    """The first convolutional layer and the last hidden fully-connected layer (conv1 and
    fc7 on ZFNet, AlexNet and VGG: the paper's layers 1 and 7); where a model has no hidden
    fully-connected layer, the last layer before its classifier."""
    layers = net.layers
    maps = [layer for layer in layers if len(layer.shape) == 3]
    if not maps:
        raise ArgumentError("the model has no convolutional layer to probe; name layers=")
    vectors = [layer for layer in layers if len(layer.shape) == 1]
    hidden = vectors[:-1] if len(vectors) > 1 else []
    last = hidden[-1] if hidden else [layer for layer in layers
                                      if layer.node != net.layer("").node][-1]
    return [maps[0].name, last.name]


@dataclass
class InvarianceResult(Result):
    """The outcome of :func:`invariance` for one transform.

    Attributes:
        transform: ``translate``, ``scale`` or ``rotate``; values: its values.
        distance: layer -> ``[N, V]`` Euclidean distances to the untransformed activations.
        probability: ``[N, V]`` the target class's probability.
        targets: each image's class; rgb: the crops; examples: ``[V][N]`` the transformed
            crops, for the figure.
        names: the class names, where the model has them.
        images: each image's label (its file name, where it came from a file).
        target_given: whether ``target`` was chosen, rather than each image's top-1 class
            before transforming.
    """

    kind: ClassVar[str] = "invariance"

    transform: str
    values: List[float]
    distance: Dict[str, np.ndarray]
    probability: np.ndarray
    targets: List[int]
    rgb: List[np.ndarray]
    examples: List[np.ndarray]
    names: Optional[List[str]]
    model: str
    weights: str = "user"  # as in ModelInfo: "random", "imagenet" or a path
    images: Optional[List[str]] = None
    target_given: bool = False

    @property
    def labels(self) -> List[str]:
        """Each image's label: its file name, else ``image N``."""
        return list(self.images) if self.images else [f"image {n}"
                                                      for n in range(len(self.targets))]

    @property
    def probability_label(self) -> str:
        return "p(target class)" if self.target_given else "p(original top-1 class)"

    def class_name(self, index: int) -> str:
        return self.names[index] if self.names else f"class {index}"

    def figure(self, *, fig=None):
        """One row of Fig. 5: example transformed images, the distance plots, the
        probability plot, one curve per image."""
        return figures.invariance_figure([self], fig=fig)

    def _table(self):
        """The table as columns (``to_dict``/``to_csv``)."""
        return csv_columns(self.table())

    def table(self) -> str:
        """CSV: one row per image and value."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        layers = list(self.distance)
        writer.writerow(["transform", "value", "image", *[f"distance_{l}" for l in layers],
                         "probability", "class"])
        for n in range(self.probability.shape[0]):
            for v, value in enumerate(self.values):
                writer.writerow([self.transform, value, self.labels[n]]
                                + [f"{self.distance[l][n, v]:.6g}" for l in layers]
                                + [f"{self.probability[n, v]:.6g}",
                                   self.class_name(self.targets[n])])
        return buffer.getvalue()

    def _save_data(self, path: str, ext: str) -> str:
        text = self.table().encode()  # .csv
        return write_atomically(path, lambda f: f.write(text))

    def __repr__(self) -> str:
        return (f"InvarianceResult({self.model}, {self.transform}, {len(self.values)} values, "
                f"layers {', '.join(self.distance)})")


def _old_labels(fn):
    """Before the glossary, ``images=`` held the images' labels (the tensor came second): such
    a call still works for one release, its labels read as ``labels=``."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        old = kwargs.get("images")
        if len(args) >= 2 and old is not None and isinstance(old, (list, tuple)) \
                and all(isinstance(i, str) for i in old):
            deprecated("invariance", "images= as the images' labels", "labels=")
            kwargs["labels"] = kwargs.pop("images")
        return fn(*args, **kwargs)

    return wrapper


@_old_labels
@api(renamed={"x": "images"}, legacy=("transform", "values", "layers", "target"))
@runs_model
def invariance(model: nn.Module, images: ImagesArg, *, transform: str,
               values: Optional[Sequence[float]] = None,
               layers: Optional[Sequence[str]] = None,
               target: Union[None, int, str] = None,
               labels: Optional[Sequence[str]] = None, batch_size: int = 16,
               progress: ProgressArg = True, device: Optional[str] = None,
               precision: Optional[str] = None) -> InvarianceResult:
    """Zeiler & Fergus Fig. 5 for one transform (see the module docstring).

    Args:
        model: a classifier.
        images: photos in any form of the glossary (docs/api.md).
        transform: ``"translate"`` (vertical shift, pixels), ``"scale"`` or ``"rotate"``
            (degrees).
        values: the transform's values (default :func:`default_values`).
        layers: the layers compared (default :func:`default_probe_layers`).
        target: the class (default: each image's top-1 before transforming).
        labels: a label per image for the figure's legend and the CSV (default: the images'
            file names; ``image K`` for tensors).
        batch_size: transformed images per forward pass.
        progress, device: as everywhere (docs/api.md); progress counts transformed images.
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.
    """
    check_transform(transform)
    x, rgb, names = images_for(model, images)
    values = list(values) if values is not None else default_values(transform)
    if not values:
        raise ArgumentError("no transform values")
    if labels is not None and len(labels) != x.shape[0]:
        raise ArgumentError(f"{len(labels)} image labels for {x.shape[0]} images")
    if labels is None and any(not n.startswith("image ") for n in names):
        labels = names
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
    net = Deconvnet(model)
    layers = list(layers) if layers is not None else default_probe_layers(net)
    size = tuple(x.shape[-2:])
    nodes = [net.layer(layer, size).node for layer in layers]
    run = forward_to(net.traced, nodes + [net.layer("", size).node], size)
    n = x.shape[0]
    with torch.no_grad():
        *reference, logits = run(x)
        resolved = resolve_target(model, x, target, logits=logits)
        classes = torch.as_tensor(resolved.classes, device=logits.device)
        distance = {layer: np.zeros((n, len(values))) for layer in layers}
        probability = np.zeros((n, len(values)))
        examples = []
        per_batch = max(1, batch_size // n)  # whole values at a time, every image of each
        with progress_bar(progress, total=n * len(values), unit="img",
                          desc=f"invariance ({transform})") as bar:
            for start in range(0, len(values), per_batch):
                chunk = values[start:start + per_batch]
                moved = torch.cat([apply_transform(x, transform, value) for value in chunk])
                *acts, out = run(moved)
                p = F.softmax(out, dim=1).reshape(len(chunk), n, -1)
                for layer, a, a0 in zip(layers, acts, reference):
                    d = (a.reshape(len(chunk), n, -1) - a0.reshape(1, n, -1)).norm(dim=2)
                    distance[layer][:, start:start + len(chunk)] = d.T.cpu().numpy()
                probability[:, start:start + len(chunk)] = \
                    p[:, torch.arange(n), classes].T.cpu().numpy()
                for k, value in enumerate(chunk):
                    if is_identity(transform, value):
                        # the identity: in a batch of another size its activations may
                        # differ from the reference's in the last bits; it is exactly 0 away
                        for layer in layers:
                            distance[layer][:, start + k] = 0.0
                        probability[:, start + k] = F.softmax(logits, dim=1)[
                            torch.arange(n), classes].cpu().numpy()
                photos = to_rgb(moved, model)
                examples += [photos[k * n:(k + 1) * n] for k in range(len(chunk))]
                bar.update(n * len(chunk))
    info = model_info(model)
    return InvarianceResult(transform, values, distance, probability, resolved.classes,
                            rgb, examples, class_names(model),
                            model_name(model),
                            weights=info.weights if info else "user",
                            images=[os.path.basename(os.fspath(i)) for i in labels]
                            if labels is not None else None,
                            target_given=target is not None)
