"""Methods side by side: every method's attribution of the same target, for several images.

:func:`compare` returns a :class:`Comparison`: one row per image, one column per method, in the
layout of Grad-CAM's Fig. 1 and Springenberg's Fig. 2; each method is drawn in its own display
convention (signed mid-grey for gradients and reverse passes, a heat map over the photo for
Grad-CAM and occlusion).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures, method_table
from .._io import write_atomically
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..data.images import ImagesArg
from ..data.zoo import model_info, model_name
from ..engine.guard import runs_model
from ..engine.passes.recording import images_for
from ..errors import ArgumentError
from .attribution import Target, attribute_map, probabilities, resolve_target
from .map_check import notes_for
from .result import Result

__all__ = ["Comparison", "compare", "DEFAULT_METHODS"]

DEFAULT_METHODS = method_table.COMPARE_DEFAULT


@dataclass
class Comparison(Result):
    """Every method's attribution of one target per image.

    Attributes:
        methods: the method names, in column order.
        maps: method -> ``[N, C, H, W]`` attributions (``C`` is 1 for Grad-CAM); a method
            that cannot explain the target is missing here and listed in ``not_applicable``.
        not_applicable: method -> why it cannot explain the target.
        target: what is explained.
        probabilities: each image's probability of its class (class targets), else ``None``.
        rgb: the crops the network saw, ``N x H x W x 3`` uint8.
        images: the photos' paths (``image K`` for a PIL image or a tensor).
        model: the model's name; ``trained`` is ``False`` for random weights.
        notes: method -> per image, why its map is not an answer (``None`` where it is):
            "numerically zero", or for relevance methods "relevance not conserved: the
            input holds R of the logit" (:func:`~deconvviz.analyses.map_check.check_map`);
            the figure writes it under the tile.
    """

    methods: List[str]
    maps: Dict[str, Tensor]
    not_applicable: Dict[str, str]
    target: Target
    probabilities: Optional[List[float]]
    rgb: List[np.ndarray]
    images: List[str]
    model: str
    trained: bool = True
    weights: str = "user"  # as in ModelInfo: "random", "imagenet" or a path
    display: Dict[str, str] = field(default_factory=method_table.displays)
    titles: Dict[str, str] = field(default_factory=method_table.titles)
    notes: Dict[str, List[Optional[str]]] = field(default_factory=dict)
    kind: ClassVar[str] = "comparison"  # saves .npz besides the figure

    def row_label(self, index: int) -> str:
        """The label of image ``index``'s row: its target, and its probability for a class."""
        label = self.target.label(index)
        if self.probabilities is not None:
            label += f", p = {self.probabilities[index]:.3f}"
        return label

    def figure(self, *, fig=None):
        """The comparison grid: the photo, then one column per method."""
        return figures.comparison_grid(self, fig=fig)

    def _save_data(self, path: str, ext: str) -> str:
        arrays = {f"map_{m}": t.cpu().numpy() for m, t in self.maps.items()}
        arrays.update({f"notes_{m}": np.asarray([n or "" for n in notes])
                       for m, notes in self.notes.items()})
        return write_atomically(path, lambda f: np.savez_compressed(
            f, rgb=np.stack(self.rgb), methods=np.asarray(self.methods),
            images=np.asarray(self.images), **arrays))

    def __repr__(self) -> str:
        return (f"Comparison({self.model}, {len(self.images)} image(s), target "
                f"{self.target.label(0)}, methods {', '.join(self.methods)})")


@api(legacy=("methods",), renamed={"feature": "features"})
@runs_model
def compare(model: nn.Module, images: ImagesArg, *,
            methods: Optional[Sequence[str]] = None, target: Union[None, int, str] = None,
            layer: Optional[str] = None, features: Optional[int] = None, mode: str = "max",
            cam_layer: Optional[str] = None, progress: ProgressArg = False,
            device: Optional[str] = None, precision: Optional[str] = None,
            **options: object) -> Comparison:
    """Every method's attribution of one target, for each photo.

    Args:
        model: the network, on the device to use.
        images: photos in any form of the glossary (docs/api.md): a path, a folder, a
            ``PIL.Image``, a normalised tensor ``[N, 3, H, W]`` or ``[3, H, W]``, or a list.
        methods: method names (default: deconvnet, guided, gradient, gradcam,
            guided_gradcam; see :func:`list_methods`).
        target: a class index or name (default: each image's top-1 class).
        layer: explain a unit of this layer instead (alias or module path).
        features: the unit's feature (channel index).
        mode: ``"max"`` (the feature's strongest activation) or ``"map"`` (its whole map).
        cam_layer: Grad-CAM's layer.
        progress: ``True`` (a bar), ``False``, or ``progress(done, total, label)`` called
            once each method's maps (of every image) are made, ``label`` its name.
        device: where to compute (default: where the model is).
        **options (Any): passed to the Captum methods (see :func:`attribute`).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        A :class:`Comparison`; a method that cannot explain the target (Grad-CAM for a unit
        below its layer) is drawn as "n/a".
    """
    methods = list(methods or DEFAULT_METHODS)
    for method in methods:
        method_table.get(method)
    if isinstance(images, (list, tuple)) and not images:
        raise ArgumentError("no images to compare")
    x, photos, paths = images_for(model, images)
    with torch.no_grad():
        logits = model(x)
    resolved = resolve_target(model, x, target, layer, features, mode, logits=logits)
    maps, not_applicable, nets, notes = {}, {}, {}, {}
    with progress_bar(progress, total=len(methods), desc="methods", where="compare",
                      legacy=lambda old: lambda done, total, label: old(label)) as bar:
        for method in methods:
            try:
                maps[method] = attribute_map(model, x, method, resolved=resolved,
                                             cam_layer=cam_layer, nets=nets,
                                             **options).detach().cpu()
                notes[method] = notes_for(model, x, method, resolved, maps[method],
                                          net=next(iter(nets.values()), None), logits=logits)
            except ArgumentError as exc:
                if "n/a" not in str(exc) and " explains a " not in str(exc):
                    raise
                not_applicable[method] = str(exc)
            bar.update(1, method)
    probs = probabilities(model, x, resolved.classes) if resolved.is_class else None
    info = model_info(model)
    return Comparison(methods, maps, not_applicable, resolved, probs,
                      photos, paths,
                      model_name(model),
                      info.trained if info else True, info.weights if info else "user",
                      notes=notes)

