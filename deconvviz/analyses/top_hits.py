"""A scan's top hits, projected: what Zeiler & Fergus Fig. 2 shows of each feature."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .. import figures
from ..choices import choose_features, weights_label
from ..data.zoo import model_info, model_name, weights_digest
from ..engine import Projector
from ..engine.precision import precise
from ..errors import ArgumentError, ImageError, WeightsError
from ..figures.display import crop_window
from .map_check import check_map

__all__ = ["FeatureHits", "project_hits", "top_hits_figure", "check_scanned_weights",
           "check_hit_values", "VALUE_CHECK", "VALUE_CHECK_TF32",
           "VALUE_CHECK_DECODER", "value_check"]


@dataclass
class FeatureHits:
    """A feature's top hits across a scan, projected: Zeiler & Fergus Fig. 2 for one feature.

    Attributes:
        layer, feature: which feature.
        hits: the scan's hits, strongest first.
        projections: each hit's projection cropped to its receptive field (float
            ``h x w x 3`` arrays, zero outside the image).
        patches: K uint8 photo patches under the same fields (black outside the image).
        notes: per hit, why its projection is not an answer (``None`` where it is):
            :func:`~deconvviz.analyses.map_check.check_map` of the whole projection,
            seeded with the hit's activation.
    """

    layer: str
    feature: int
    hits: list
    projections: List[np.ndarray]
    patches: List[np.ndarray]
    notes: List[Optional[str]] = field(default_factory=list)


def project_hits(result, layer: str, features: Sequence[int], *,
                 model: Optional[nn.Module] = None,
                 method: str = "deconvnet", progress: bool = False) -> List[FeatureHits]:
    """Re-run each hit's image through the reverse pass and crop to the receptive field.

    Each image is recorded once and all the hits it holds (for any feature of ``layer``) are
    projected together in one batched reverse pass.

    Args:
        result: a :class:`~deconvviz.scan.ScanResult`.
        layer: one of its layers.
        features: feature indices.
        model: the scanned model; by default rebuilt from the result (zoo name and weights).
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        progress: a progress bar on stderr, counting the images recorded.
    """
    if model is None:
        model = result.load_model()
    check_scanned_weights(result, model)
    net = Projector(model, method=method)
    per_feature = {f: result.top(layer, f) for f in features}
    strongest = strongest_hit(result, layer)
    by_image: dict = {}
    for f, hits in per_feature.items():
        for slot, hit in enumerate(hits):
            by_image.setdefault(hit.image, []).append((f, slot, hit))
    crops: dict = {}
    device, relevance = net.device, bool(net.method.relevance)
    from tqdm import tqdm

    for image, items in tqdm(by_image.items(), total=len(by_image), unit="img",
                             desc=f"projecting {layer}'s hits", disable=not progress,
                             dynamic_ncols=True):
        x, rgb = result.load_image(image)
        x = x.to(device) if device is not None else x
        rec = net.record(x, layer)
        check_hit_values(image, layer, rec.activations[layer],
                         [(f, hit) for f, _, hit in items], strongest, value_check(result))
        geom = net.layer(layer, tuple(x.shape[-2:])).hit_geometry  # a token: its patch
        pixels = net.project_units(x, layer, positions=[(0, f, hit.y, hit.x) for f, _, hit in items],
                                   recording=rec).cpu()
        for k, (f, slot, hit) in enumerate(items):
            top, left, h, w = (geom.window(hit.y, hit.x) if geom is not None
                               else (0, 0) + tuple(rgb.shape[:2]))
            crop = crop_window(pixels[k].permute(1, 2, 0).numpy(), top, left, h, w)
            crops[(f, slot)] = (crop, crop_window(rgb, top, left, h, w),
                                check_map(pixels[k], hit.value, relevance, what="activation"))
    return [FeatureHits(layer, f, hits, *([crops[(f, s)][i] for s in range(len(hits))]
                                          for i in range(3)))
            for f, hits in per_feature.items()]




VALUE_CHECK = 1e-3  # a re-run hit must give its scanned value to this share of the layer's max
# ... where the scan computed in TF32 (precision="tf32"): on one H200, TF32 moved the
# strongest hits of VGG16 conv3_3/conv5_3 and ResNet-50 layer2/layer3 by up to 8.2e-4 of the
# strongest (benchmarks/gpu.py, 2,048 JPEGs)
VALUE_CHECK_TF32 = 1e-2
# ... where the scan's JPEGs were decoded on a GPU (nvJPEG) and the re-run reads them with
# Pillow: up to 13 grey levels apart (tests/test_gpu.py); on one H200 a VGG16 conv5_3 hit
# scanned at 0.2459 re-ran at 0.2405
VALUE_CHECK_DECODER = 5e-2


def value_check(result) -> float:
    """The share of the layer's strongest hit to which a re-run must give a scanned value:
    :data:`VALUE_CHECK`, or more where the scan's pixels or arithmetic were not the re-run's
    (JPEGs decoded on a GPU: :data:`VALUE_CHECK_DECODER`; TF32: :data:`VALUE_CHECK_TF32`)."""
    if getattr(result, "decoder", "pillow") != "pillow":
        return VALUE_CHECK_DECODER
    return VALUE_CHECK_TF32 if getattr(result, "precision", None) == "tf32" else VALUE_CHECK


def strongest_hit(result, layer: str) -> float:
    """The layer's strongest hit in the scan (0 where none fired): :data:`VALUE_CHECK`'s
    scale."""
    return max(float(result._tops(layer)["values"][:, 0].max()), 0.0)


def check_hit_values(image: str, layer: str, act, hits, strongest: float,
                     tolerance: float = VALUE_CHECK) -> None:
    """Refuse a photo that no longer gives its hits' scanned values (``hits``: ``(feature,
    hit)`` pairs; ``act``: the layer's recorded activation ``[1, C, H, W]`` or ``[1, C]``):
    it changed since the scan, or another photo now has its name (``--image-root``).
    ``tolerance``: a share of ``strongest`` (:func:`value_check`)."""
    if not hits:
        return
    features = torch.tensor([f for f, _ in hits], device=act.device)
    if act.dim() == 4:
        ys = torch.tensor([hit.y for _, hit in hits], device=act.device)
        xs = torch.tensor([hit.x for _, hit in hits], device=act.device)
        values = act[0, features, ys, xs]
    else:
        values = act[0, features]
    for (f, hit), now in zip(hits, values.double().cpu().tolist()):  # one copy, not one a hit
        if abs(now - hit.value) > tolerance * strongest:
            raise ImageError(
                f"{image} gives {layer} unit {f} the value {now:.6g} at (y {hit.y}, "
                f"x {hit.x}), but the scan recorded {hit.value:.6g} (checked to "
                f"{tolerance:g} of the layer's strongest hit, {strongest:.6g}): the file "
                f"changed since the scan (or is another photo of the same name); scan again")


def check_scanned_weights(result, model: nn.Module) -> None:
    """Refuse to project a scan's hits through other weights than those that found them
    (they would draw the other weights' response beside patches they did not choose), or
    through another model than the one scanned (named as such, before the weights)."""
    name = model_name(model)
    if getattr(result, "model", None) not in (None, name):  # another model: not the weights
        raise ArgumentError(f"the scan is of {result.model}, not {name}: draw it with "
                            f"{result.model} (--model {result.model}) or scan {name} first")
    if result.weights_digest is None:  # a scan of format 1 did not record it
        return
    digest = weights_digest(model)
    if digest != result.weights_digest:
        info = model_info(model)
        given = info.weights if info is not None else "the model given"
        raise WeightsError(
            f"the scan ran with {_described(result.weights)} (digest "
            f"{result.weights_digest}); {_described(given)} differ (digest {digest}): "
            f"draw it with the scan's own weights (omit --weights) or scan again")


def _described(weights: str) -> str:
    return {"random": "random weights", "imagenet": "ImageNet weights",
            "user": "the model's own weights"}.get(weights, f"weights {weights}")


@precise
def top_hits_figure(result, layers: Union[None, str, Sequence[str]] = None,
                    features: str = "0-15", *, seed: int = 0,
                    model: Optional[nn.Module] = None, scaling: str = "signed",
                    ncols: int = 4, method: str = "deconvnet",
                    image_root: Optional[str] = None,
                    progress: bool = False, precision: Optional[str] = None) -> "figures.Figure":
    """Zeiler & Fergus Fig. 2 from a scan result, as ``deconvviz figure`` draws it.

    Args:
        result: a :class:`~deconvviz.analyses.scan_result.ScanResult`.
        layers: a layer name or several (default: every scanned layer).
        features: ``"0-15"``, ``"3,7,40-47"`` or ``"random:16"`` (seeded by ``seed``).
        model: the scanned model; by default rebuilt from the result's zoo name and weights.
        scaling: display convention.
        ncols: features per row.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        image_root: where the scan's photos are now, if they moved (see
            :func:`~deconvviz.analyses.scan_result.load_scan`).
        progress: a progress bar per layer on stderr.
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.
    """
    result = result.relocated(image_root)
    layers = [layers] if isinstance(layers, str) else list(layers or result.layer_names)
    chosen = {l: choose_features(features, result.features(l), seed=seed) for l in layers}
    if model is None:
        model = result.load_model()
    hits = [project_hits(result, l, chosen[l], model=model, method=method, progress=progress)
            for l in layers]
    how = "" if method == "deconvnet" else f" ({method})"
    info = model_info(model)  # the weights that drew it (the scan's digest): where they are now
    drawn = info.weights if info is not None else result.weights
    title = (f"{result.model}{how}: top {result.k} of {result.images_read} images - "
             f"{weights_label(drawn)}")
    return figures.scan_figure(hits, scaling=scaling, ncols=ncols, title=title,
                               slots=min(result.k, result.images_read))
