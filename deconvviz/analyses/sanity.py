"""Sanity checks (Adebayo et al., NeurIPS 2018): does a picture depend on the learned weights?

Cascading model-parameter randomisation: step 0 is the model as given; step k re-initialises,
with each layer's own default initialisation (``reset_parameters()``) and a fixed seed, the k
topmost layers that hold parameters (the logits first, then downwards to the first
convolution). At each step every method's map of the same target (the original top-1 class)
is compared with its step-0 map:

- Spearman rank correlation of the absolute 2-D maps and of the signed 2-D maps (a method's
  ``[C, H, W]`` map summed over colour channels);
- SSIM of the absolute 2-D maps, each scaled to [0, 1] by its maximum.

Both metrics come from torchmetrics. Values are averaged over the images. A map that is
constant (a Grad-CAM rectified to zero everywhere) shares no rank order with the original:
torchmetrics reports its correlations as 0. The user's model is never changed:
the randomisation happens on a deep copy.
"""
from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures, method_table
from .._io import write_atomically
from ..data.images import ImagesArg, load_images, to_rgb
from ..data.zoo import model_info, model_name
from ..engine import Projector
from ..engine.graph import TracedModel, trace
from ..engine.precision import precise
from ..engine.recording import check_images
from ..errors import ArgumentError
from .attribution import attribute, resolve_target
from .result import Result

__all__ = ["SanityResult", "sanity_check", "parametrised_layers", "METRICS",
           "DEFAULT_METHODS"]

METRICS = ("spearman_abs", "spearman_signed", "ssim")
DEFAULT_METHODS = method_table.SANITY_DEFAULT


@dataclass
class SanityResult(Result):
    """The outcome of :func:`sanity_check`.

    Attributes:
        steps: the layer re-initialised at each step (``"original"`` for step 0).
        methods: the methods compared.
        scores: method -> metric -> one value per step (``METRICS``: ``spearman_abs``,
            ``spearman_signed``, ``ssim``).
        maps: method -> ``[steps, N, C, H, W]`` maps.
        target: the class explained at every step (each image's original top-1).
        rgb: the crops the network saw.
        model: the model's name.
    """

    kind: ClassVar[str] = "sanity"

    steps: List[str]
    methods: List[str]
    scores: Dict[str, Dict[str, List[float]]]
    maps: Dict[str, Tensor]
    target: object
    rgb: List[np.ndarray]
    model: str
    weights: str = "user"  # as in ModelInfo: "random", "imagenet" or a path
    titles: Dict[str, str] = field(default_factory=method_table.titles)
    display: Dict[str, str] = field(default_factory=method_table.displays)

    def figure(self, *, image: int = 0, max_columns: int = 10, fig=None):
        """Adebayo's Fig. 2: a row of maps per method across the steps, above the curves."""
        return figures.sanity_figure(self, image=image, max_columns=max_columns, fig=fig)

    def table(self) -> str:
        """The scores as CSV: one row per step, method and metric."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["step", "layer", "method", *METRICS])
        for method in self.methods:
            for k, step in enumerate(self.steps):
                writer.writerow([k, step, method] + [f"{self.scores[method][m][k]:.6g}"
                                                     for m in METRICS])
        return buffer.getvalue()

    def _save_data(self, path: str, ext: str) -> str:
        text = self.table().encode()  # .csv
        return write_atomically(path, lambda f: f.write(text))

    def __repr__(self) -> str:
        last = {m: self.scores[m]["spearman_abs"][-1] for m in self.methods}
        ends = ", ".join(f"{m} {v:.2f}" for m, v in last.items())
        return (f"SanityResult({self.model}, {len(self.steps) - 1} layers randomised; "
                f"Spearman |map| at the last step: {ends})")


def parametrised_layers(model: nn.Module, *, traced: Optional[TracedModel] = None) -> List[str]:
    """The module paths of the layers that hold parameters, in forward order (the order of
    their first call in the traced graph; ``traced``: the model's trace, if made already)."""
    traced = traced if traced is not None else trace(model)
    seen: List[str] = []
    for op in traced.ops.values():
        path = op.node.target if op.node.op == "call_module" else None
        if path and path not in seen and any(
                True for _ in model.get_submodule(path).parameters(recurse=False)):
            seen.append(path)
    return seen


def _two_d(maps: Tensor) -> Tensor:
    return maps.sum(dim=1)  # [N, H, W]


def _scores(reference: Tensor, other: Tensor) -> Dict[str, float]:
    from torchmetrics.functional.image import structural_similarity_index_measure
    from torchmetrics.functional.regression import spearman_corrcoef

    a, b = _two_d(reference).double(), _two_d(other).double()
    out = {m: 0.0 for m in METRICS}
    for i in range(a.shape[0]):
        out["spearman_abs"] += float(spearman_corrcoef(b[i].abs().flatten(),
                                                       a[i].abs().flatten()))
        out["spearman_signed"] += float(spearman_corrcoef(b[i].flatten(), a[i].flatten()))
        scaled = [t.abs() / t.abs().max() if t.abs().max() > 0 else t.abs()
                  for t in (a[i], b[i])]
        out["ssim"] += float(structural_similarity_index_measure(
            scaled[1][None, None], scaled[0][None, None], data_range=1.0))
    return {m: v / a.shape[0] for m, v in out.items()}


@precise
def sanity_check(model: nn.Module, x: ImagesArg, methods: Optional[Sequence[str]] = None, *,
                 target: Union[None, int, str] = None, seed: int = 0,
                 layers: Optional[Sequence[str]] = None,
                 progress: Optional[Callable[[str], None]] = None,
                 precision: Optional[str] = None, **options) -> SanityResult:
    """Adebayo's cascading randomisation of ``model``'s layers, top down, and how much each
    method's map changes (see the module docstring).

    Args:
        model: the network (never changed: a copy is randomised).
        x: the images, as :func:`compare` takes them: a path, a ``PIL.Image``, a
            normalised tensor ``[N, 3, H, W]``, or a list of these.
        methods: method names (default: deconvnet, guided, gradient, gradcam).
        target: the class explained (default: each image's top-1 class on ``model``).
        seed: seeds the re-initialisations (step k uses ``seed + k``).
        layers: the parametrised layers to randomise, bottom to top (default: all of them,
            :func:`parametrised_layers`).
        progress: called after each map is made (one per method and step: ``(1 +
            len(layers)) * len(methods)`` calls), with ``"layer: method"``.
        **options (Any): passed to the Captum methods (see :func:`attribute`).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        A :class:`SanityResult`; its step 0 is the model as given (every score 1).
    """
    methods = list(methods or DEFAULT_METHODS)
    for method in methods:
        method_table.get(method)
    x, _, _ = load_images(x, model)
    device = next((p.device for p in model.parameters()), None)
    x = check_images(x.to(device) if device is not None else x, model=model)
    resolved = resolve_target(model, x, target)
    if not resolved.is_class:
        raise ArgumentError("the sanity check explains a class")
    copied = copy.deepcopy(model)
    first = Projector(copied)
    nets: dict = {first.method.name: first}  # one trace of the copy, for every method
    order = (list(layers) if layers is not None
             else parametrised_layers(copied, traced=first.traced))
    if not order:
        raise ArgumentError("the model has no layers with parameters to randomise")
    names, collected = ["original"], {m: [] for m in methods}
    for k, path in enumerate([None] + order[::-1]):
        if path is not None:
            module = copied.get_submodule(path)
            if not hasattr(module, "reset_parameters"):
                raise ArgumentError(f"layer {path!r} ({type(module).__name__}) has no "
                                    f"reset_parameters() to re-initialise it with")
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(seed + k)
                module.reset_parameters()
            names.append(path)
        for method in methods:
            collected[method].append(attribute(copied, x, method, resolved=resolved,
                                               nets=nets, **options).detach().cpu())
            if progress is not None:
                progress(f"{path or 'original'}: {method}")
    maps = {m: torch.stack(v) for m, v in collected.items()}
    scores = {m: {metric: [] for metric in METRICS} for m in methods}
    for method in methods:
        for k in range(len(names)):
            for metric, value in _scores(maps[method][0], maps[method][k]).items():
                scores[method][metric].append(value)
    info = model_info(model)
    return SanityResult(names, methods, scores, maps, resolved, to_rgb(x, model),
                        model_name(model),
        weights=info.weights if info else "user")
