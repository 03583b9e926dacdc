"""One image, one or more layers: choose features, project them, keep what a figure needs.

:func:`project` is what notebooks call; it returns a :class:`Projections` result that
displays itself in Jupyter, draws its figures and saves its arrays. :func:`show` is what
``deconvviz show`` calls: several images, one figure file each (or one for all).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, ClassVar, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import figures
from .._io import FIGURE_FORMATS, check_output_path, figure_paths, write_atomically
from ..choices import MAX_TOP, check_mode, check_scaling, parse_list, weights_label
from ..data.images import load_image, to_rgb
from ..data.zoo import load_model, model_info, model_name
from ..engine import Projector, Recording
from ..engine.catalogue.geometry import Geometry
from ..engine.passes.layers import aliases_of, overview_layers
from ..engine.passes.recording import check_images
from ..engine.passes.seeds import strongest
from ..engine.precision import current_precision, precise
from ..errors import ArgumentError, ImageError
from ..figures.display import crop_window, shared_scale, to_uint8
from .result import Result

__all__ = ["Projections", "ShowReport", "project", "project_layers", "show"]


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
            ``"cpu"``, ``"cuda"``...); the title names them unless exact on a CPU.
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
        how = self.mode if self.method == "deconvnet" else f"{self.method}, {self.mode}"
        where = [f"on {self.device}"] if self.device not in (None, "cpu") else []
        if self.precision not in (None, "exact"):
            where.append(f"{self.precision.upper()}, not exact")
        return (f"{self.model} {self.layer} ({how}) - {name} - {weights_label(self.weights)}"
                + (f" - {', '.join(where)}" if where else ""))

    def tile_titles(self) -> List[str]:
        return [f"#{f}  {v:.3g}" for f, v in zip(self.features, self.values)]

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
            precision=str(self.precision), device=str(self.device)))

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.pixels.shape[1:])
        where = os.path.basename(self.image) if self.image else "an image"
        feats = ", ".join(map(str, self.features[:8])) + (", ..." if len(self) > 8 else "")
        return (f"Projections({self.model} {self.layer}, {len(self)} features [{feats}], "
                f"mode={self.mode!r}, {shape} each, of {where}, "
                f"{weights_label(self.weights)})")


ImageArg = Union[str, os.PathLike, Tensor, Tuple[Tensor, np.ndarray], object]  # or a PIL image


VIEWS = ("auto", "crop", "full")


def _check_view(view: str, mode: Optional[str] = None) -> None:
    """Refuse an unknown view, and the cropped view of a whole map's projection (``mode``
    ``"map"``), which has no one receptive field."""
    if view not in VIEWS:
        raise ArgumentError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if mode == "map" and view == "crop":
        raise ArgumentError("view 'crop' shows one unit's receptive field, but mode 'map' "
                            "projects the whole map; use view 'full' or 'auto' with it")


def _crops(result: "Projections", view: str) -> bool:
    """Whether ``view`` draws ``result`` cropped to each unit's receptive field: always for
    ``"crop"``, for ``"auto"`` where the field is at most half the image; never for the whole
    map's projection (``mode="map"``)."""
    _check_view(view, result.mode)
    if result.mode == "map":
        return False
    return view == "crop" or (view == "auto" and result.crops_by_default())


def _is_pil(image: object) -> bool:
    from PIL import Image

    return isinstance(image, Image.Image)


def _prepare(model: Union[str, nn.Module], image: ImageArg, net: Optional[Projector],
             method: str = "deconvnet", weights: Optional[str] = "default"):
    if isinstance(model, str):
        model = load_model(model, weights=weights)
    net = net or Projector(model, method=method)
    if isinstance(image, tuple):
        x, rgb = image
        path = None
    elif isinstance(image, torch.Tensor):  # the model's input; the photo is undone from it
        x = image[None] if image.dim() == 3 else image
        check_images(x, model=model)
        if x.shape[0] != 1:
            raise ArgumentError(f"project takes one image, got a batch of {x.shape[0]}; "
                                f"project each, or use Deconvnet(model).project for a batch")
        rgb, path = to_rgb(x, model)[0], None
    elif isinstance(image, (str, os.PathLike)) or _is_pil(image):
        x, rgb = load_image(image, model)
        path = None if _is_pil(image) else os.fspath(image)
    else:
        raise ArgumentError(f"image must be a file path, a PIL image, a tensor [1, 3, H, W] "
                            f"or (x, rgb) from load_image; got {type(image).__name__}")
    device = net.device
    x = x.to(device) if device is not None else x
    return model, net, x, rgb, path


@precise
def project(model: Union[str, nn.Module], image: ImageArg, layer: str, *,
            features: Optional[Sequence[int]] = None, top: int = 16, mode: str = "max",
            method: str = "deconvnet", net: Optional[Projector] = None,
            recording: Optional[Recording] = None,
            weights: Optional[str] = "default", precision: Optional[str] = None) -> Projections:
    """Project features of ``layer`` for one photo.

    Args:
        model: a zoo name or a model.
        image: a file path, a ``PIL.Image``, the model's input tensor ``[1, 3, H, W]``
            (the photo shown beside it is undone from its normalisation), or ``(x, rgb)``
            from :func:`load_image`.
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
        precision: ``"exact"`` (default: float32, TF32 off on CUDA) or ``"tf32"``; the
            result records it, with the device.

    Returns:
        A :class:`Projections` (displays itself in Jupyter).

    Examples:
        >>> p = project("zfnet", "examples/images/chelsea.png", "conv3", top=8)
        >>> p.save("chelsea_conv3.pdf")
    """
    check_mode(mode)
    if features is None:
        _check_top(top)
    elif len(features) > MAX_TOP:
        raise ArgumentError(f"{len(features)} features asked for; one figure holds at most "
                            f"{MAX_TOP}: split them over several figures")
    model, net, x, rgb, path = _prepare(model, image, net, method, weights)
    if recording is None or layer not in recording.activations:
        recording = net.record(x, layer)
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
    layer_info = net.layer(layer, tuple(recording.input_shape[-2:]))
    info = model_info(model)
    return Projections(
        pixels=pixels.cpu(), features=list(features), values=values[0].cpu().numpy(),
        positions=torch.stack([ys[0], xs[0]], dim=1).cpu().numpy(), rgb=rgb, layer=layer,
        model=model_name(model), mode=mode,
        geometry=layer_info.geometry, trained=info.trained if info else True,
        image=path, method=net.method.name, weights=info.weights if info else "user",
        precision=net.precision or current_precision(), device=pixels.device.type)


@precise
def project_layers(model: Union[str, nn.Module], image: ImageArg, layers: Sequence[str], *,
                   top: int = 6, mode: str = "max", method: str = "deconvnet",
                   net: Optional[Projector] = None,
                   weights: Optional[str] = "default",
                   precision: Optional[str] = None) -> List[Projections]:
    """:func:`project` for several layers of one photo, from one recorded forward pass."""
    model, net, x, rgb, path = _prepare(model, image, net, method, weights)
    recording = net.record(x, list(layers))
    results = []
    for layer in layers:
        p = project(model, (x, rgb), layer, top=top, mode=mode, net=net, recording=recording)
        p.image = path
        results.append(p)
    return results


def _check_top(top) -> None:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
        raise ArgumentError(f"top must be a number of features from 1 to {MAX_TOP} (one "
                            f"figure's worth), got {top!r}")


@dataclass
class ShowReport:
    """What :func:`show` did: the files written, and the images it could not read."""

    written: List[str]
    failed: List[Tuple[str, str]]  # (image, reason)


@precise
def show(model: nn.Module, images: Sequence[Union[str, os.PathLike]], layer: str, *,
         features: Optional[Sequence[int]] = None, top: Optional[int] = None,
         mode: str = "max", scaling: str = "signed", patches: bool = False,
         view: str = "auto", out: Optional[str] = None, combine: bool = False,
         dpi: int = 200, method: str = "deconvnet", net: Optional[Projector] = None,
         on_image: Optional[Callable[[str], None]] = None,
         precision: Optional[str] = None) -> ShowReport:
    """Project and draw ``layer`` for each image, and write the figures: what
    ``deconvviz show`` does.

    Args:
        model: the network (on the device to use).
        images: photo paths.
        layer: an alias or module path; a comma list, or ``"all"`` (zoo models), for one row
            per layer.
        features: channel indices, as in :func:`project`.
        top: the number of strongest features, as in :func:`project` (default 16, or 6 per
            layer with several layers).
        mode: ``"max"`` or ``"map"``, as in :func:`project`.
        scaling: the display convention, as in :meth:`Projections.figure`.
        patches: pair each projection with its receptive-field patch.
        view: ``"auto"``, ``"crop"`` or ``"full"``, as in :meth:`Projections.figure`.
        out: the output file (see :func:`deconvviz._io.figure_paths`); ``combine`` puts every image in it.
        dpi: resolution of raster output.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        net: a projector of ``model`` to reuse (its method is used).
        on_image: called with each image path once it is done (a progress bar's update).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        A :class:`ShowReport`. An unreadable image is reported there and the others are
        still drawn; every other error (a bad layer, feature or output) raises before any
        work.
    """
    images = [os.fspath(p) for p in images]
    if not images:
        raise ArgumentError("no images given")
    check_mode(mode)
    check_scaling(scaling)
    _check_view(view, mode)
    if top is not None and features is not None:
        raise ArgumentError("give top or features, not both")
    aliases = aliases_of(model)
    if layer == "all":
        if not aliases:
            raise ArgumentError("layer 'all' needs a zoo model; name the layers instead")
        layers = overview_layers(aliases)
    else:
        layers = parse_list(layer, "layer")
    overview = len(layers) > 1
    if overview and (features is not None or patches):
        raise ArgumentError("features and patches need a single layer")
    if top is not None:
        _check_top(top)
    paths = figure_paths(images, model_name(model), layer, out,
                         combine)
    for path in paths:
        check_output_path(path, FIGURE_FORMATS)
    net = net or Projector(model, method=method)
    for name in layers:  # a bad layer name fails here, before any image is read
        net.reverse_pass(name)

    def draw(image_path: str):
        if overview:
            results = project_layers(model, image_path, layers, top=top or 6, mode=mode,
                                     net=net)
            return lambda fig=None: figures.layer_overview(
                results, scaling=scaling, fig=fig,
                crop=[_crops(r, view) for r in results])
        result = project(model, image_path, layers[0], features=features, top=top or 16,
                         mode=mode, net=net)
        return lambda fig=None: result.figure(scaling, patches=patches, view=view, fig=fig)

    written, failed, drawings = [], [], []
    for image_path, path in zip(images, paths * len(images) if combine else paths):
        try:
            drawing = draw(image_path)
        except ImageError as exc:
            failed.append((image_path, str(exc)))
        else:
            if combine:
                drawings.append(drawing)
            else:
                written.append(figures.save_figure(drawing(), path, dpi=dpi))
        if on_image is not None:
            on_image(image_path)
    if combine and drawings:
        height = drawings[0]().get_size_inches()[1]
        written.append(figures.save_figure(figures.combine(drawings, height=height), paths[0],
                                           dpi=dpi))
    return ShowReport(written, failed)
