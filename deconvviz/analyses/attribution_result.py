"""One method's attribution as a result: :class:`Attribution` holds the map that
:func:`~deconvviz.analyses.attribution.attribute` computes (``.map``, ``[N, C, H, W]``) with
what it explains, and draws it in the method's display convention, as
:func:`~deconvviz.analyses.comparison.compare` draws each of its columns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures, method_table
from .._io import write_atomically
from ..choices import weights_label
from ..data.zoo import model_info, model_name
from ..errors import ArgumentError
from ..results import Result

__all__ = ["Attribution"]


@dataclass
class Attribution(Result):
    """One method's attribution of a target, for each image.

    Attributes:
        map: ``[N, C, H, W]`` attributions at the input's resolution (``C`` is 3, or 1 for
            Grad-CAM), as :func:`attribute` computes them.
        method: the method's name (:func:`list_methods`).
        targets: what each image's map explains, as a label (``"tabby (281)"``,
            ``"conv5_3 #12 (max)"``).
        classes: each image's class (class targets), else ``None``.
        layer, features: the unit explained (unit targets), else ``None``.
        model: the model's name; ``weights``: ``"random"``, ``"imagenet"``, a path or
            ``"user"`` (as in :class:`~deconvviz.ModelInfo`).
        rgb: the crops the network saw, ``H x W x 3`` uint8 each, where known.
        images: the photos' names (paths, or ``image K``), where known.
    """

    map: Tensor
    method: str
    targets: List[str]
    classes: Optional[List[int]] = None
    layer: Optional[str] = None
    features: Optional[List[int]] = None
    model: str = "model"
    weights: str = "user"
    rgb: Optional[List[np.ndarray]] = None
    images: Optional[List[str]] = None
    display: str = field(default="signed")
    notes: Optional[List[Optional[str]]] = None  # per image: why its map is not an answer
    kind: ClassVar[str] = "attribution"  # saves .pt and .npy besides the figure

    @classmethod
    def of(cls, map: Tensor, *, method: str, target: object = None,
           model: Union[None, str, nn.Module] = None, weights: Optional[str] = None,
           layer: Optional[str] = None, features: Union[None, int, Sequence[int]] = None,
           rgb: Optional[Sequence[np.ndarray]] = None,
           images: Optional[Sequence[str]] = None,
           notes: Optional[Sequence[Optional[str]]] = None) -> "Attribution":
        """The result of ``map`` (``[N, C, H, W]``, as :func:`attribute` returns it).

        Args:
            method: the method that made it.
            target: a resolved :class:`~deconvviz.analyses.attribution.Target` (its classes,
                layer, feature and labels are taken from it), a class index or a list of
                them (one per image), a label or a list of labels, or ``None``.
            model: the model (its zoo name and weights are read from it) or its name.
            weights: the weights' label, where ``model`` is a name.
            layer: the unit's layer, where ``target`` does not say.
            features: the unit's feature(s), where ``target`` does not say.
            rgb: the photos as the network saw them (``H x W x 3`` uint8 each).
            images: the photos' names.
        """
        if map.dim() != 4:
            raise ArgumentError(f"an attribution map is [N, C, H, W], got {list(map.shape)}")
        count = map.shape[0]
        classes, labels = _targets(target, count)
        if hasattr(target, "label") and getattr(target, "layer", None) is not None:
            layer = target.layer if layer is None else layer
            features = [target.feature] if features is None else features
        if isinstance(features, int):
            features = [features]
        name, trained_as = _model(model, weights)
        for what, items in (("rgb", rgb), ("images", images)):
            if items is not None and len(items) != count:
                raise ArgumentError(f"{what}: give one per image ({count}), got {len(items)}")
        return cls(map, method, labels, classes, layer,
                   None if features is None else [int(f) for f in features], name, trained_as,
                   None if rgb is None else list(rgb), None if images is None else list(images),
                   method_table.displays().get(method, "signed"),
                   None if notes is None else list(notes))

    def __len__(self) -> int:
        return self.map.shape[0]

    def figure(self, *, fig=None):
        """One row per image: the photo (where known), then the map in the method's display
        convention (signed mid-grey, or a heat map over the photo)."""
        title = (f"{self.model}: {method_table.titles().get(self.method, self.method)}"
                 f" - {weights_label(self.weights)}")
        return figures.attribution_figure(
            self.map.detach().cpu(), self.display, self.targets, photos=self.rgb, title=title,
            method_title=method_table.titles().get(self.method, self.method), fig=fig,
            notes=self.notes)

    def to_dict(self) -> Dict[str, object]:
        """Every field: ``map`` the tensor, ``rgb`` a list of arrays (or ``None``), the rest
        plain Python."""
        return {"map": self.map, "method": self.method, "targets": list(self.targets),
                "classes": self.classes, "layer": self.layer, "features": self.features,
                "model": self.model, "weights": self.weights, "images": self.images,
                "rgb": self.rgb, "display": self.display, "notes": self.notes}

    def _save_data(self, path: str, ext: str) -> str:
        if ext == ".npy":
            array = self.map.detach().cpu().numpy()
            return write_atomically(path, lambda f: np.save(f, array))
        data = self.to_dict()  # .pt: readable with torch.load(path, weights_only=True)
        data["map"] = self.map.detach().cpu()
        data["rgb"] = None if self.rgb is None else torch.from_numpy(np.stack(self.rgb))
        return write_atomically(path, lambda f: torch.save(data, f))

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.map.shape)
        return (f"Attribution({self.method}, {self.model}, map {shape}, "
                f"{', '.join(self.targets[:4])}{', ...' if len(self.targets) > 4 else ''})")


def _targets(target: object, count: int):
    """(classes or ``None``, one label per image) of ``target``."""
    if target is None:
        return None, [f"image {i}" for i in range(count)]
    if hasattr(target, "label"):  # a resolved Target
        return (None if target.classes is None else list(target.classes),
                [target.label(i if target.classes is not None else 0) for i in range(count)])
    items = list(target) if isinstance(target, (list, tuple)) else [target] * count
    if len(items) != count:
        raise ArgumentError(f"target: give one per image ({count}), got {len(items)}")
    if all(isinstance(t, int) for t in items):
        return [int(t) for t in items], [f"class {t}" for t in items]
    return None, [str(t) for t in items]


def _model(model: Union[None, str, nn.Module], weights: Optional[str]):
    """(name, weights label) of a model or a model's name."""
    if isinstance(model, nn.Module):
        info = model_info(model)
        return model_name(model), weights or (info.weights if info is not None else "user")
    return model or "model", weights or "user"
