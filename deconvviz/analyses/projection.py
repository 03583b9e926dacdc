"""One image, one or more layers: choose features, project them, keep what a figure needs.

:func:`project` is what notebooks call; it returns a :class:`Projections` result that
displays itself in Jupyter, draws its figures and saves its arrays. :func:`show` is what
``deconvviz show`` calls: several images, one figure file each (or one for all).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures
from .._io import write_atomically
from .._signatures import api
from ..choices import (
    MAX_TOP,
    check_mode,
    weights_label,
    where_computed,
)
from ..data.images import ImagesArg, image_list, load_image, to_rgb
from ..data.zoo import load_model, model_info, model_name
from ..engine import Projector, Recording
from ..engine.catalogue.geometry import Geometry
from ..engine.guard import device_for, runs_model
from ..engine.passes.recording import check_images
from ..engine.passes.seeds import make_seeds, strongest
from ..engine.precision import current_precision
from ..errors import ArgumentError
from ..figures.display import crop_window, shared_scale, to_uint8
from .map_check import map_notes
from .result import Result

__all__ = ["Projections", "project", "project_layers"]


@dataclass
class Projections(Result):
    """Deconvnet projections of some features of one layer, for one image.

    Attributes:
        pixels: ``[K, 3, H, W]`` signed projections, one per feature.
        features: the K channel indices.
        values: ``[K]`` each feature's strongest activation on this image.
        positions: ``[K, 2]`` (row, column) of that activation in the layer's map.
        rgb: ``H x W x 3`` uint8 crop the network saw.
        layer, model, mode: what was projected, and how.
        method: the reverse-pass method (``deconvnet``, ``guided`` or ``gradient``).
        geometry: the layer's receptive-field geometry (``None`` for global layers).
        trained: ``False`` when the weights are random (figures then say "untrained").
        image: the photo's path, when it came from a file.
        weights: which weights (as :class:`ModelInfo` says: ``"random"``, ``"imagenet"``,
            a checkpoint path, or ``"user"`` for a model deconvviz did not load).
        precision, device: how and where it was computed (``"exact"`` or ``"tf32"``;
            ``"cpu"``, ``"cuda"``...); the title names them off the CPU (TF32 on CUDA only).
        fired: per feature, whether it fired on this image (its strongest activation is
            > 0); a feature that did not is titled "never fired", not with its value.
        notes: per feature, why its projection is not an answer (``None`` where it is):
            "numerically zero", or for relevance "relevance not conserved"
            (:func:`~deconvviz.analyses.map_check.check_map`, seeded with the activation);
            drawn under the tile.
        whole_image: where each unit sees the whole image (no field to crop to: a ViT's
            tokens after attention), the sentence that says why; else ``None``.
        token: the named token of a ViT's layer (``"cls"``) each feature was projected at
            (``positions`` are then 0), else ``None`` (each feature's strongest patch).
    """

    kind: ClassVar[str] = "projections"

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
    method: str = "deconvnet"
    weights: str = "user"
    precision: Optional[str] = None
    device: Optional[str] = None
    fired: Optional[List[bool]] = None
    notes: Optional[List[Optional[str]]] = None
    whole_image: Optional[str] = None
    token: Optional[str] = None

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
        how = self.mode if self.token is None else f"at the {self.token} token"
        how = how if self.method == "deconvnet" else f"{self.method}, {how}"
        where = where_computed(self.device, self.precision)
        return (f"{self.model} {self.layer} ({how}) - {name} - {weights_label(self.weights)}"
                + (f" - {where}" if where else ""))

    def tile_titles(self) -> List[str]:
        """Each tile's title: the feature and its strongest activation, or "never fired"."""
        fired = self.fired if self.fired is not None else [True] * len(self)
        return [f"#{f}  {v:.3g}" if up else f"#{f} never fired"
                for f, v, up in zip(self.features, self.values, fired)]

    def tile_notes(self) -> List[Optional[str]]:
        """What each tile says under it: why its projection is not an answer (``None``
        where it is, and where the title already says it never fired)."""
        notes = self.notes if self.notes is not None else [None] * len(self)
        fired = self.fired if self.fired is not None else [True] * len(self)
        return [n if up else None for n, up in zip(notes, fired)]

    def crops_by_default(self) -> bool:
        """Whether the paper's view (each projection cropped to its receptive field) suits
        this layer better than the full frame: where the field is at most half the image."""
        if self.geometry is None:
            return False
        return max(self.geometry.size) * 2 <= min(self.rgb.shape[:2])

    def figure(self, scaling: str = "signed", *, patches: bool = False,
               view: str = "auto", ncols: Optional[int] = None, fig=None):
        """The projection grid beside the photo, or with ``patches``, projection/patch pairs.

        ``view``: ``"crop"`` draws each projection cropped to its receptive field and
        enlarged (the paper's view), ``"full"`` the whole frame, ``"auto"`` crops where the
        field is at most half the image.
        """
        _check_view(view)
        if patches:
            return figures.patch_grid(self, scaling=scaling, ncols=ncols, fig=fig)
        crop = _crops(self, view)
        return figures.projection_grid(self, scaling=scaling, ncols=ncols, crop=crop, fig=fig)

    def _save_data(self, path: str, ext: str) -> str:
        if ext == ".npy":
            return write_atomically(path, lambda f: np.save(f, self.pixels.cpu().numpy()))
        return write_atomically(path, lambda f: np.savez_compressed(
            f, pixels=self.pixels.cpu().numpy(), features=np.asarray(self.features),
            values=self.values, positions=self.positions, rgb=self.rgb,
            layer=self.layer, model=self.model, mode=self.mode,
            precision=str(self.precision), device=str(self.device),
            fired=np.asarray(self.fired if self.fired is not None else [True] * len(self)),
            notes=np.asarray([n or "" for n in self.tile_notes()])))

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.pixels.shape[1:])
        where = os.path.basename(self.image) if self.image else "an image"
        feats = ", ".join(map(str, self.features[:8])) + (", ..." if len(self) > 8 else "")
        return (f"Projections({self.model} {self.layer}, {len(self)} features [{feats}], "
                f"mode={self.mode!r}, {shape} each, of {where}, "
                f"{weights_label(self.weights)})")


VIEWS = ("auto", "crop", "full")


def _check_view(view: str, mode: Optional[str] = None) -> None:
    """Refuse an unknown view, and the cropped view of a whole map's projection (``mode``
    ``"map"``), which has no one receptive field."""
    if view not in VIEWS:
        raise ArgumentError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if mode == "map" and view == "crop":
        raise ArgumentError("view 'crop' shows one unit's receptive field, but mode 'map' "
                            "projects the whole map; use view 'full' or 'auto' with it")


def check_crop(whole_image: Optional[str]) -> None:
    """Refuse the cropped view of a layer whose units see the whole image (``whole_image``:
    why, :attr:`~deconvviz.engine.passes.layers.Layer.whole_image`)."""
    if whole_image is not None:
        raise ArgumentError(f"view 'crop' crops each projection to its unit's receptive "
                            f"field, but {whole_image}: there is no smaller field to crop "
                            f"to; use view 'full' or 'auto'")


def _crops(result: "Projections", view: str) -> bool:
    """Whether ``view`` draws ``result`` cropped to each unit's receptive field: always for
    ``"crop"``, for ``"auto"`` where the field is at most half the image; never for the whole
    map's projection (``mode="map"``)."""
    _check_view(view, result.mode)
    if view == "crop":
        check_crop(result.whole_image)
    if result.mode == "map":
        return False
    return view == "crop" or (view == "auto" and result.crops_by_default())


def _is_pil(image: object) -> bool:
    from PIL import Image

    return isinstance(image, Image.Image)


def _prepare(model: Union[str, nn.Module], images: ImagesArg, net: Optional[Projector],
             method: str = "deconvnet", weights: Optional[str] = "default",
             device: Optional[str] = None):
    """The model (loaded where a zoo name is given), its projector, and the one image as
    ``(x, rgb, path)``, ``x`` on the model's device."""
    if isinstance(model, str):
        model = load_model(model, weights=weights)
        if device is not None:
            model = model.to(device_for(model, device))
    net = net or Projector(model, method=method)
    items = image_list(images)
    if len(items) != 1:
        raise ArgumentError(f"project draws one image, got {len(items)}; use show (or "
                            f"Deconvnet(model).project for a batch)")
    item = items[0]
    if isinstance(item, torch.Tensor):  # the model's input; the photo is undone from it
        x = check_images(item[None], model=model)
        rgb, path = to_rgb(x, model)[0], None
    else:
        x, rgb = load_image(item, model)
        path = item if isinstance(item, str) else None
    device = net.device
    x = x.to(device) if device is not None else x
    return model, net, x, rgb, path


@api(renamed={"image": "images"}, legacy=("layer",))
@runs_model
def project(model: Union[str, nn.Module], images: ImagesArg, *, layer: str,
            features: Optional[Sequence[int]] = None, top: int = 16, mode: str = "max",
            method: str = "deconvnet", net: Optional[Projector] = None,
            recording: Optional[Recording] = None, weights: Optional[str] = "default",
            device: Optional[str] = None, precision: Optional[str] = None,
            token: Optional[str] = None) -> Projections:
    """Project features of ``layer`` for one photo.

    Args:
        model: a zoo name or a model.
        images: one photo in any form of the glossary (docs/api.md): a file path, a
            ``PIL.Image``, the model's input tensor ``[1, 3, H, W]`` or ``[3, H, W]`` (the
            photo shown beside it is undone from its normalisation), a folder or list
            holding one image.
        layer: alias or module path.
        features: channel indices; by default the ``top`` channels with the strongest
            activation on this image, strongest first.
        top: how many features to pick when ``features`` is not given (at most 64, and at
            most the layer's number of features).
        mode: ``"max"`` or ``"map"`` (see :meth:`Deconvnet.project`).
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"`` (ignored when ``net`` is
            given: the net's own method is used).
        net: a :class:`Deconvnet` (or other :class:`Projector`) of ``model`` to reuse.
        recording: a recording of this image holding ``layer`` to reuse.
        weights: for a zoo name, the weights to load (as :func:`load_model` and the CLI's
            ``--weights``: ``"default"`` is torchvision's ImageNet weights, ZFNet's random
            ones; ``None`` random; or a checkpoint path). The result says which
            (``weights``).
        device: where to compute (default: where the model is).
        precision: ``"exact"`` (default: float32, TF32 off on CUDA) or ``"tf32"``; the
            result records it, with the device.
        token: for a vision transformer's token layer, a named token (``"cls"``) whose
            unit of each feature is projected, instead of the feature's strongest patch
            (and ``top`` ranks the features by their value at that token).

    Returns:
        A :class:`Projections` (displays itself in Jupyter).

    Examples:
        >>> p = project("zfnet", "examples/images/chelsea.png", layer="conv3", top=8)
        >>> p.save("chelsea_conv3.pdf")
    """
    check_mode(mode)
    if isinstance(features, int):
        features = [features]
    if features is None:
        _check_top(top)
    _check_count(features)
    model, net, x, rgb, path = _prepare(model, images, net, method, weights, device)
    return _project(model, net, x, rgb, path, layer, features, top, mode, recording, token)


def _project(model: nn.Module, net: Projector, x: Tensor, rgb: np.ndarray, path: Optional[str],
             layer: str, features: Optional[Sequence[int]], top: int, mode: str,
             recording: Optional[Recording], token: Optional[str] = None) -> Projections:
    if recording is None or layer not in recording.activations:
        recording = net.record(x, layer)
    if token is not None:
        return _project_token(model, net, x, rgb, path, layer, features, top, recording, token)
    act = recording.activations[layer]
    channels = act.shape[1]
    if features is None:
        if top > channels:
            raise ArgumentError(f"layer {layer!r} has {channels} features; ask for top "
                                f"{channels} or fewer")
        peaks = act[0].reshape(channels, -1).max(dim=1).values
        features = torch.argsort(peaks, descending=True, stable=True)[:top].tolist()
    pixels = net.project(x, layer, features=list(features), mode=mode, recording=recording)[0]
    values, ys, xs = strongest(act, list(features))
    seeds = make_seeds(act[:1], list(features), mode)[0].double().flatten(1).sum(1)
    layer_info = net.layer(layer, tuple(recording.input_shape[-2:]))
    info = model_info(model)
    return Projections(
        pixels=pixels.cpu(), features=list(features), values=values[0].cpu().numpy(),
        positions=torch.stack([ys[0], xs[0]], dim=1).cpu().numpy(), rgb=rgb, layer=layer,
        model=model_name(model), mode=mode,
        geometry=layer_info.geometry, trained=info.trained if info else True,
        image=path, method=net.method.name, weights=info.weights if info else "user",
        precision=net.precision or current_precision(), device=pixels.device.type,
        fired=(values[0] > 0).tolist(), whole_image=layer_info.whole_image,
        notes=map_notes(pixels, seeds.tolist(), bool(net.method.relevance), what="activation"))


def _project_token(model: nn.Module, net: Projector, x: Tensor, rgb: np.ndarray,
                   path: Optional[str], layer: str, features: Optional[Sequence[int]],
                   top: int, recording: Recording, token: str) -> Projections:
    """:func:`project` at a ViT's named token (``"cls"``): one unit per feature."""
    layer_info = net.layer(layer, tuple(recording.input_shape[-2:]))
    grid = layer_info.tokens
    named = recording.named_tokens.get(layer)
    at = named[0, grid.index(token)] if named is not None and token in grid.prefix else None
    if features is None and at is not None:
        if top > at.shape[0]:
            raise ArgumentError(f"layer {layer!r} has {at.shape[0]} features; ask for top "
                                f"{at.shape[0]} or fewer")
        features = torch.argsort(at, descending=True, stable=True)[:top].tolist()
    pixels = net._project(x, layer, features=list(features or [0]), recording=recording,
                          token=token)[0]  # refuses a layer or token that is not there
    values = at[list(features)]
    info = model_info(model)
    return Projections(
        pixels=pixels.cpu(), features=list(features), values=values.cpu().numpy(),
        positions=np.zeros((len(features), 2), dtype=np.int64), rgb=rgb, layer=layer,
        model=model_name(model), trained=info.trained if info else True, image=path,
        method=net.method.name, weights=info.weights if info else "user",
        precision=net.precision or current_precision(), device=pixels.device.type,
        fired=(values > 0).tolist(), token=token,
        whole_image=layer_info.whole_image or (
            f"the {token!r} token of layer {layer!r} is a learnt token, not a patch of the "
            f"image"),
        notes=map_notes(pixels, values.double().tolist(), bool(net.method.relevance),
                        what="activation"))


def project_layers(model: nn.Module, image: object, layers: Sequence[str], *, top: int = 6,
                   mode: str = "max", net: Optional[Projector] = None) -> List[Projections]:
    """:func:`project` for several layers of one photo, from one recorded forward pass
    (inside a guarded call: :func:`show`)."""
    model, net, x, rgb, path = _prepare(model, image, net)
    recording = net.record(x, list(layers))
    return [_project(model, net, x, rgb, path, layer, None, top, mode, recording)
            for layer in layers]


def _check_count(features) -> None:
    if features is not None and len(features) > MAX_TOP:
        raise ArgumentError(f"{len(features)} features asked for; one figure holds at most "
                            f"{MAX_TOP}: split them over several figures")


def _check_top(top) -> None:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        raise ArgumentError(f"top must be a number of features from 1 to {MAX_TOP} (one "
                            f"figure's worth), got {top!r}")


