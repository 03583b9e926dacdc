"""An interactive explorer for Jupyter: pick a layer and a feature, see its projection.

``ipywidgets`` is optional (``pip install -e ".[notebook]"`` in the clone). Each image's forward pass
is recorded once, for every layer, and reused; switching layer or feature only runs the
deconvnet for the chosen feature. With ``feature_vis``, the unit's optimised image (what it
wants, :func:`deconvviz.feature_vis`) is shown beside its projection.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from . import method_table
from ._signatures import api
from .analyses.top_hits import project_hits
from .choices import MODES, SCALINGS, check_mode, check_scaling
from .data.images import ImagesArg, load_images
from .data.zoo import load_model
from .engine import Projector
from .engine.guard import device_for, runs_model
from .engine.passes.seeds import strongest
from .engine.precision import check_precision, computing
from .errors import ArgumentError
from .figures import mosaic
from .figures.display import crop_window, to_uint8

if TYPE_CHECKING:
    import ipywidgets

    from .analyses.feature_vis import FeatureVisResult
    from .analyses.scan_result import ScanResult

__all__ = ["explore", "png_bytes"]

THUMBNAILS = 24  # activation maps shown per layer, strongest first


def png_bytes(rgb: np.ndarray, size: Optional[int] = None) -> bytes:
    """PNG bytes of a uint8 ``H x W x 3`` (or ``H x W``) image, optionally resized to
    ``size`` pixels on its long side (nearest neighbour, so units stay crisp)."""
    if size is not None:
        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def _widgets():
    try:
        import ipywidgets
    except ImportError:
        raise ImportError('deconvviz.explore needs ipywidgets: pip install -e ".[notebook]" '
                          'in the clone of deconvviz'
                          ) from None
    return ipywidgets


@api(renamed={"image": "images"})
@runs_model
def explore(model: Union[str, nn.Module], images: ImagesArg, *,
            weights: Optional[str] = "default", scan: Optional["ScanResult"] = None,
            mode: str = "max", method: str = "deconvnet", scaling: str = "signed",
            feature_vis: Union[bool, Dict[str, Any], "FeatureVisResult"] = False,
            device: Union[None, str, torch.device] = None, precision: Optional[str] = None,
            ) -> "ipywidgets.VBox":
    """An ipywidgets explorer of one model's features on one or several images.

    The explorer's pickers ``layer_picker``, ``feature_picker``, ``mode_picker``,
    ``method_picker``, ``scaling_picker`` and ``image_picker`` can be set from code; ``projection_view`` shows
    the projection.

    Args:
        model: a zoo name (loaded with ``weights``) or a model in eval mode.
        images: the photos, in any form of docs/api.md's glossary (a path, a folder, a list
            of paths, a PIL image, a normalised tensor ``[N, 3, H, W]`` or ``[3, H, W]``);
            with several, ``image_picker`` chooses among them.
        weights: for zoo names: ``"default"``, ``None`` or a checkpoint path.
        scan: a :class:`~deconvviz.scan.ScanResult` of this model: the feature view then
            also shows the feature's top-9 across that dataset.
        mode: ``"max"`` or ``"map"`` to start with.
        method: the reverse-pass method to start with: ``"deconvnet"``, ``"guided"`` or
            ``"gradient"``.
        scaling: the display convention to start with.
        feature_vis: show each unit's optimised image beside its projection: ``True``
            (optimised when the unit is first shown, with :func:`deconvviz.feature_vis`'s
            defaults), a dict of its options (``{"steps": 128}``), or a
            :class:`~deconvviz.analyses.feature_vis.FeatureVisResult` already computed
            (its units of its layer are shown; others say so).
        device: where the explorer computes; ``None``: where the model is (another device:
            a copy of the model there).
        precision: ``"exact"`` or ``"tf32"`` for every projection the explorer runs;
            ``None``: ``"exact"``.

    Returns:
        The explorer widget, which displays itself in Jupyter.

    Raises:
        ImportError: ipywidgets is not installed.
        TrainingModeError: the model is in training mode (call ``model.eval()``).

    Examples:
        >>> explorer = explore("zfnet", "examples/images/chelsea.png", weights=None)
        >>> explorer.layer_picker.value = "conv5"
    """
    widgets = _widgets()
    check_mode(mode)
    check_scaling(scaling)
    if precision is not None:
        check_precision(precision)
    if isinstance(model, str):  # ours: moved to the device asked for, not copied
        model = load_model(model, weights=weights)
        if device is not None:
            model = model.to(device_for(model, device))
    method_table.check(method, method_table.REVERSE)  # the explorer shows the reverse passes
    if not isinstance(feature_vis, (bool, dict)) and not hasattr(feature_vis, "row_of"):
        raise ArgumentError("feature_vis is True, a dict of dv.feature_vis options, or a "
                            "FeatureVisResult")
    return _explorer_class(widgets)(model, images, scan, mode, scaling, method, feature_vis,
                                    precision)


class _Parts:
    """The explorer's data and event handlers; :func:`_explorer_class` mixes them into an
    ipywidgets ``VBox``, whose module is ``self._ui``."""

    _ui: Any  # the ipywidgets module

    # -- building -------------------------------------------------------------------------
    def _setup(self, model, images, scan, mode, scaling, method, feature_vis, precision):
        self.model, self.scan, self.feature_vis = model, scan, feature_vis
        self.precision = precision
        self._wanted: dict = {}  # (layer, feature) -> the optimised image
        first = Projector(model, precision=precision)  # one trace, shared by every method
        self.nets = {name: first.with_method(name)
                     for name in method_table.names(method_table.REVERSE)}
        self.layers = [l.name for l in self.nets["deconvnet"].layers
                       if len(l.shape) == 3 or l.alias is not None]
        self.images = self._images(images)
        self._cache: dict = {}
        self._make_pickers(mode, scaling, method)
        self._make_views()
        self.children = self._layout()
        self._on_image()

    def _make_pickers(self, mode, scaling, method):
        ui = self._ui
        names = [name for name, _, _ in self.images]
        self.image_picker = ui.Dropdown(options=[(n, i) for i, n in enumerate(names)], value=0,
                                        description="image",
                                        layout={"display": "" if len(names) > 1 else "none"})
        self.layer_picker = ui.Dropdown(options=self.layers, value=self.layers[0],
                                        description="layer")
        self.feature_picker = ui.BoundedIntText(value=0, min=0, max=0, description="feature")
        self.method_picker = ui.ToggleButtons(options=list(self.nets), value=method,
                                              description="method")
        self.mode_picker = ui.ToggleButtons(options=list(MODES), value=mode,
                                            description="mode")
        self.scaling_picker = ui.Dropdown(options=list(SCALINGS), value=scaling,
                                          description="display")
        for picker, handler in [(self.image_picker, self._on_image),
                                (self.layer_picker, self._on_layer),
                                (self.feature_picker, self._on_feature),
                                (self.mode_picker, self._on_feature),
                                (self.method_picker, self._on_feature),
                                (self.scaling_picker, self._on_feature)]:
            picker.observe(handler, names="value")

    def _make_views(self):
        ui = self._ui
        self.photo_view = ui.Image(format="png")
        self.projection_view = ui.Image(format="png")
        self.patch_view = ui.Image(format="png")
        self.wanted_view = ui.Image(format="png")
        self.wanted_label = ui.HTML()
        self.value_label = ui.HTML()
        self.thumbnails = ui.GridBox(layout={
            "grid_template_columns": "repeat(8, 64px)", "grid_gap": "2px"})
        self.scan_view = ui.Image(format="png", layout={
            "display": "" if self.scan is not None else "none"})
        # CSS classes, so that a browser (or a test driving one) can find the parts.
        for part, name in [(self.layer_picker, "layer"), (self.feature_picker, "feature"),
                           (self.projection_view, "projection"), (self.patch_view, "patch"),
                           (self.wanted_view, "feature-vis")]:
            part.add_class(f"deconvviz-{name}")

    def _layout(self) -> list:
        ui = self._ui
        labelled = lambda title, w: ui.VBox([ui.HTML(f"<b>{title}</b>"), w])  # noqa: E731
        wanted = ([labelled("what it wants (optimised)",
                            ui.VBox([self.wanted_view, self.wanted_label]))]
                  if self.feature_vis is not False else [])
        return [
            ui.HBox([self.image_picker, self.layer_picker, self.feature_picker]),
            ui.HBox([self.mode_picker, self.method_picker, self.scaling_picker]),
            ui.HBox([labelled("input crop", self.photo_view),
                     labelled("strongest maps (click to pick)", self.thumbnails)]),
            ui.HBox([labelled("projection", self.projection_view),
                     labelled("receptive field", self.patch_view)]
                    + wanted + [self.value_label]),
            self.scan_view,
        ]

    # -- data -----------------------------------------------------------------------------
    def _images(self, images) -> list:
        """``(name, x [1, 3, H, W], rgb)`` of each image, in the glossary's one reader."""
        x, photos, names = load_images(images, self.model)
        return [(os.path.basename(name), x[i:i + 1], rgb)
                for i, (name, rgb) in enumerate(zip(names, photos))]

    @property
    def _x(self) -> Tensor:
        x = self.images[self.image_picker.value][1]
        device = self.net.device
        return x.to(device) if device is not None else x

    @property
    def net(self):
        """The projector of the method picked."""
        return self.nets[self.method_picker.value]

    @property
    def recording(self):
        """The current image's recording for the method picked (every layer, recorded
        once per image and method: guided backprop and the gradient also keep each
        ReLU's input)."""
        key = (self.image_picker.value, self.method_picker.value)
        if key not in self._cache:
            self._cache[key] = self.net.record(self._x, self.layers)
        return self._cache[key]

    # -- events ---------------------------------------------------------------------------
    def _on_image(self, change=None):
        self.photo_view.value = png_bytes(self.images[self.image_picker.value][2], 224)
        self._on_layer()

    def _on_layer(self, change=None):
        act = self.recording.activations[self.layer_picker.value][0]
        channels = act.shape[0]
        peaks = act.reshape(channels, -1).max(dim=1).values
        order = torch.argsort(peaks, descending=True, stable=True)[:THUMBNAILS].tolist()
        self.feature_picker.max = channels - 1
        boxes = []
        for f in order:
            amap = act[f].reshape(act.shape[1:] if act.dim() == 3 else (1, 1)).cpu().numpy()
            top = float(amap.max())
            grey = np.zeros(amap.shape, np.uint8) if top <= 0 else \
                np.clip(amap / top * 255, 0, 255).astype(np.uint8)
            button = self._ui.Button(description=f"#{f}", layout={"width": "64px"})
            button.on_click(lambda _, f=f: setattr(self.feature_picker, "value", f))
            boxes.append(self._ui.VBox([self._ui.Image(value=png_bytes(grey, 64),
                                                       format="png"), button]))
        self.thumbnails.children = boxes
        if self.feature_picker.value != order[0]:
            self.feature_picker.value = order[0]  # fires _on_feature
        else:
            self._on_feature()

    def _on_feature(self, change=None):
        layer, feature = self.layer_picker.value, int(self.feature_picker.value)
        rec = self.recording
        act = rec.activations[layer]
        pixels = self.net.project(self._x, layer, features=feature, mode=self.mode_picker.value,
                                  recording=rec)[0].cpu()
        rgb = self.images[self.image_picker.value][2]
        shown = to_uint8(pixels, self.scaling_picker.value,
                         vmax=float(pixels.abs().max()), photo=rgb)
        self.projection_view.value = png_bytes(shown, 224)
        values, ys, xs = strongest(act, [feature])
        value, y, x = float(values[0, 0]), int(ys[0, 0]), int(xs[0, 0])
        geom = self.net.layer(layer, tuple(rec.input_shape[-2:])).geometry
        window = geom.window(y, x) if geom is not None else (0, 0) + rgb.shape[:2]
        self.patch_view.value = png_bytes(crop_window(rgb, *window), 112)
        self.value_label.value = (f"<b>{layer} #{feature}</b><br>strongest activation "
                                  f"{value:.4g}<br>at ({y}, {x})")
        with computing(self.precision):  # the explorer's precision, also after explore returns
            if self.feature_vis is not False:
                self._show_wanted(layer, feature)
            if self.scan is not None and layer in self.scan.layer_names:
                self._show_scan(layer, feature)

    def _show_wanted(self, layer: str, feature: int):
        """The unit's optimised image: from the result given, or optimised once."""
        given = self.feature_vis
        if not isinstance(given, (bool, dict)):
            if given.layer != layer or feature not in given.units:
                self.wanted_view.value = png_bytes(np.full((8, 8, 3), 255, np.uint8), 112)
                self.wanted_label.value = (f"not in the result given ({given.layer}, "
                                           f"{len(given.units)} units)")
                return
            image, settings = given.image(feature), given.settings()
        else:
            if (layer, feature) not in self._wanted:
                from .analyses.feature_vis import feature_vis

                options = dict(given) if isinstance(given, dict) else {}
                result = feature_vis(self.model, layer, features=[feature], net=self.nets["deconvnet"],
                                     **options)
                self._wanted[(layer, feature)] = (result.image(feature), result.settings())
            image, settings = self._wanted[(layer, feature)]
        self.wanted_view.value = png_bytes(image, 224)
        self.wanted_label.value = f"<small>{settings}</small>"

    def _show_scan(self, layer: str, feature: int):
        [hits] = project_hits(self.scan, layer, [feature], model=self.model,
                              method=self.method_picker.value)
        tiles: List[np.ndarray] = [to_uint8(p, self.scaling_picker.value, photo=patch)
                                   for p, patch in zip(hits.projections, hits.patches)]
        left, right = mosaic(tiles, size=72), mosaic(hits.patches, size=72)
        gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
        self.scan_view.value = png_bytes(np.concatenate([left, gap, right], axis=1))


@functools.lru_cache(maxsize=None)
def _explorer_class(widgets):
    """The explorer's widget class, built on the ipywidgets imported (so that deconvviz
    imports without them)."""

    class Explorer(_Parts, widgets.VBox):
        """The explorer widget (see :func:`explore`)."""

        _ui = widgets

        def __init__(self, model, images, scan, mode, scaling, method="deconvnet",
                     feature_vis=False, precision=None):
            super().__init__()
            self._setup(model, images, scan, mode, scaling, method, feature_vis, precision)

    return Explorer
