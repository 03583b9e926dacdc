"""One image, one or more layers: choose features, project them, keep what a figure needs.

:func:`project` is what ``deconvviz show`` and notebooks call; it returns a
:class:`Projections` result that displays itself in Jupyter, draws its figures and saves its
arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .deconvnet import MODES, Deconvnet, strongest
from .display import crop_window, shared_scale, to_uint8
from .errors import ArgumentError
from .images import load_image
from .layers import Geometry, geometry
from .recording import Recording
from .zoo import load_model, model_info

__all__ = ["Projections", "FeatureHits", "project", "project_layers", "project_hits",
           "parse_features", "choose_features"]


@dataclass
class Projections:
    """Deconvnet projections of some features of one layer, for one image.

    Attributes:
        pixels: ``[K, 3, H, W]`` signed projections, one per feature.
        features: the K channel indices.
        values: ``[K]`` each feature's strongest activation on this image.
        positions: ``[K, 2]`` (row, column) of that activation in the layer's map.
        rgb: ``H x W x 3`` uint8 crop the network saw.
        layer, model, mode: what was projected, and how.
        geometry: the layer's receptive-field geometry (``None`` for global layers).
        trained: ``False`` when the weights are random (figures then say "untrained").
        image: the photo's path, when it came from a file.
    """

    pixels: Tensor
    features: List[int]
    values: np.ndarray
    positions: np.ndarray
    rgb: np.ndarray
    layer: str
    model: str
    mode: str = "max"
    geometry: Optional[Geometry] = None
    trained: bool = True
    image: Optional[str] = None

    def __len__(self) -> int:
        return len(self.features)

    def images(self, scaling: str = "signed") -> List[np.ndarray]:
        """Each projection as a displayable uint8 image (see :func:`to_uint8`)."""
        vmax = shared_scale(self.pixels) if scaling == "shared" else None
        return [to_uint8(p, scaling, vmax=vmax, photo=self.rgb) for p in self.pixels]

    def windows(self) -> List[Tuple[int, int, int, int]]:
        """(top, left, height, width) of each feature's strongest unit's receptive field."""
        h, w = self.rgb.shape[:2]
        if self.geometry is None:
            return [(0, 0, h, w)] * len(self)
        return [self.geometry.window(int(y), int(x)) for y, x in self.positions]

    def patches(self, scaling: str = "signed") -> List[Tuple[np.ndarray, np.ndarray]]:
        """(projection crop, photo patch) under each feature's receptive field, padded at the
        image borders (photo with black, projection with its own zero level)."""
        out = []
        for img, (top, left, hh, ww) in zip(self.images(scaling), self.windows()):
            zero = 128 if scaling in ("signed", "shared") else 0
            out.append((crop_window(img, top, left, hh, ww, fill=zero),
                        crop_window(self.rgb, top, left, hh, ww, fill=0)))
        return out

    @property
    def title(self) -> str:
        name = os.path.basename(self.image) if self.image else "image"
        text = f"{self.model} {self.layer} ({self.mode}) - {name}"
        return text + (" - untrained weights" if not self.trained else "")

    def tile_titles(self) -> List[str]:
        return [f"#{f}  {v:.3g}" for f, v in zip(self.features, self.values)]

    def figure(self, scaling: str = "signed", *, patches: bool = False, ncols: Optional[int] = None,
               fig=None):
        """The projection grid beside the photo (or, with ``patches``, projection/patch pairs)."""
        from . import figures

        if patches:
            return figures.patch_grid(self, scaling=scaling, ncols=ncols, fig=fig)
        return figures.projection_grid(self, scaling=scaling, ncols=ncols, fig=fig)

    def _repr_png_(self) -> bytes:
        return self.figure()._repr_png_()

    def save(self, path: Union[str, os.PathLike], **figure_options) -> str:
        """Save as arrays (``.npz``/``.npy``) or as a figure (``.png .jpg .pdf .svg``)."""
        from .figures import FORMATS, check_output_path, save_figure, write_atomically

        path = check_output_path(os.fspath(path), FORMATS + (".npy", ".npz"))
        ext = os.path.splitext(path)[1].lower()
        if ext == ".npy":
            return write_atomically(path, lambda f: np.save(f, self.pixels.cpu().numpy()))
        if ext == ".npz":
            return write_atomically(path, lambda f: np.savez_compressed(
                f, pixels=self.pixels.cpu().numpy(), features=np.asarray(self.features),
                values=self.values, positions=self.positions, rgb=self.rgb,
                layer=self.layer, model=self.model, mode=self.mode))
        dpi = figure_options.pop("dpi", None)
        return save_figure(self.figure(**figure_options), path, dpi=dpi)


def parse_features(spec: str) -> List[int]:
    """``"3,17,40-47"`` -> ``[3, 17, 40, ..., 47]``."""
    out: List[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                out.extend(range(lo_i, hi_i + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ArgumentError(f"bad feature list {spec!r}: use indices and ranges like "
                                f"3,17,40-47") from None
    return out


ImageArg = Union[str, os.PathLike, Tuple[Tensor, np.ndarray]]


def _prepare(model: Union[str, nn.Module], image: ImageArg, net: Optional[Deconvnet]):
    if isinstance(model, str):
        model = load_model(model, weights=None)
    net = net or Deconvnet(model)
    if isinstance(image, tuple):
        x, rgb = image
        path = None
    else:
        x, rgb = load_image(image, model)
        path = os.fspath(image)
    device = net._device()
    x = x.to(device) if device is not None else x
    return model, net, x, rgb, path


def project(model: Union[str, nn.Module], image: ImageArg, layer: str, *,
            features: Optional[Sequence[int]] = None, top: int = 16, mode: str = "max",
            net: Optional[Deconvnet] = None, recording: Optional[Recording] = None) -> Projections:
    """Project features of ``layer`` for one photo.

    Args:
        model: a zoo name (random weights) or a model.
        image: a file path, or ``(x, rgb)`` from :func:`load_image`.
        layer: alias or module path.
        features: channel indices; by default the ``top`` channels with the strongest
            activation on this image, strongest first.
        top: how many features to pick when ``features`` is not given.
        mode: ``"max"`` or ``"map"`` (see :meth:`Deconvnet.project`).
        net: a :class:`Deconvnet` of ``model`` to reuse.
        recording: a recording of this image holding ``layer`` to reuse.

    Returns:
        A :class:`Projections` (displays itself in Jupyter).

    Examples:
        >>> p = project("zfnet", "examples/images/chelsea.png", "conv3", top=8)
        >>> p.save("chelsea_conv3.pdf")
    """
    if mode not in MODES:
        raise ArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    model, net, x, rgb, path = _prepare(model, image, net)
    if recording is None or layer not in recording.activations:
        recording = net.record(x, layer)
    act = recording.activations[layer]
    channels = act.shape[1]
    if features is None:
        if not isinstance(top, int) or top < 1:
            raise ArgumentError(f"top must be a positive number of features, got {top!r}")
        peaks = act[0].reshape(channels, -1).max(dim=1).values
        features = torch.argsort(peaks, descending=True, stable=True)[:top].tolist()
    pixels = net.project(x, layer, list(features), mode=mode, recording=recording)[0]
    values, ys, xs = strongest(act, list(features))
    geoms = geometry(net.traced, recording.shapes)
    info = model_info(model)
    return Projections(
        pixels=pixels.cpu(), features=list(features), values=values[0].cpu().numpy(),
        positions=torch.stack([ys[0], xs[0]], dim=1).cpu().numpy(), rgb=rgb, layer=layer,
        model=info.name if info else type(model).__name__, mode=mode,
        geometry=geoms.get(net._node(layer)), trained=info.trained if info else True,
        image=path)


def project_layers(model: Union[str, nn.Module], image: ImageArg, layers: Sequence[str], *,
                   top: int = 6, mode: str = "max",
                   net: Optional[Deconvnet] = None) -> List[Projections]:
    """:func:`project` for several layers of one photo, from one recorded forward pass."""
    model, net, x, rgb, path = _prepare(model, image, net)
    recording = net.record(x, list(layers))
    results = []
    for layer in layers:
        p = project(model, (x, rgb), layer, top=top, mode=mode, net=net, recording=recording)
        p.image = path
        results.append(p)
    return results


@dataclass
class FeatureHits:
    """A feature's top hits across a scan, projected: Zeiler & Fergus Fig. 2 for one feature.

    Attributes:
        layer, feature: which feature.
        hits: the scan's hits, strongest first.
        projections: each hit's projection cropped to its receptive field (float
            ``h x w x 3`` arrays, zero outside the image).
        patches: K uint8 photo patches under the same fields (black outside the image).
    """

    layer: str
    feature: int
    hits: list
    projections: List[np.ndarray]
    patches: List[np.ndarray]


def project_hits(result, layer: str, features: Sequence[int], *,
                 model: Optional[nn.Module] = None) -> List[FeatureHits]:
    """Re-run each hit's image through the deconvnet and crop to the receptive field.

    Each image is recorded once and all the hits it holds (for any feature of ``layer``) are
    projected together in one batched reverse pass.

    Args:
        result: a :class:`~deconvviz.scan.ScanResult`.
        layer: one of its layers.
        features: feature indices.
        model: the scanned model; by default rebuilt from the result (zoo name and weights).
    """
    if model is None:
        model = load_model(result.model, weights=result.weights_argument)
    net = Deconvnet(model)
    per_feature = {f: result.top(layer, f) for f in features}
    by_image: dict = {}
    for f, hits in per_feature.items():
        for slot, hit in enumerate(hits):
            by_image.setdefault(hit.image, []).append((f, slot, hit))
    crops: dict = {}
    device = net._device()
    for image, items in by_image.items():
        x, rgb = load_image(image, preprocessing=result.preprocessing)
        x = x.to(device) if device is not None else x
        rec = net.record(x, layer)
        geom = geometry(net.traced, rec.shapes).get(net._node(layer))
        pixels = net.project_units(x, layer, [(0, f, hit.y, hit.x) for f, _, hit in items],
                                   recording=rec).cpu()
        for k, (f, slot, hit) in enumerate(items):
            top, left, h, w = (geom.window(hit.y, hit.x) if geom is not None
                               else (0, 0) + tuple(rgb.shape[:2]))
            crop = crop_window(pixels[k].permute(1, 2, 0).numpy(), top, left, h, w)
            crops[(f, slot)] = (crop, crop_window(rgb, top, left, h, w))
    return [FeatureHits(layer, f, hits, [crops[(f, s)][0] for s in range(len(hits))],
                        [crops[(f, s)][1] for s in range(len(hits))])
            for f, hits in per_feature.items()]


def choose_features(spec: str, channels: int, *, seed: int = 0) -> List[int]:
    """``"0-15"``, ``"3,7"`` or ``"random:16"`` (a seeded random subset, sorted)."""
    if str(spec).startswith("random:"):
        try:
            count = int(spec.split(":", 1)[1])
        except ValueError:
            raise ArgumentError(f"bad feature choice {spec!r}: use random:N") from None
        generator = torch.Generator().manual_seed(seed)
        count = min(count, channels)
        return sorted(torch.randperm(channels, generator=generator)[:count].tolist())
    features = parse_features(spec)
    bad = [f for f in features if not 0 <= f < channels]
    if bad:
        raise ArgumentError(f"feature {bad[0]} is out of range: valid features are 0 to "
                            f"{channels - 1}")
    return features
