"""``show``: project and draw a layer for each image and write the figures (what
``deconvviz show`` does), reporting what it wrote and which images it could not read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Sequence, Tuple

from torch import nn

from .. import figures
from .._io import FIGURE_FORMATS, check_output_path, figure_paths
from .._progress import ProgressArg, progress_bar
from .._signatures import api
from ..choices import (
    check_mode,
    check_scaling,
    parse_list,
)
from ..data.images import ImagesArg, image_list, image_name
from ..data.zoo import model_name
from ..engine import Projector
from ..engine.guard import runs_model
from ..engine.passes.layers import aliases_of, overview_layers
from ..errors import ArgumentError, ImageError
from .projection import (
    _check_count,
    _check_top,
    _check_view,
    _crops,
    _prepare,
    _project,
    check_crop,
    project_layers,
)
from .result import Result

__all__ = ["show", "ShowReport"]


@dataclass
class ShowReport(Result):
    """What :func:`show` did: the files written, and the images it could not read. It has
    no figure (its figures are the files): ``to_dict()``, ``to_csv()`` and
    ``save("report.csv")`` list both, one row per file or image."""

    written: List[str]
    failed: List[Tuple[str, str]]  # (image, reason)
    kind: ClassVar[str] = "show"

    def _table(self):
        """``status`` (written or failed), ``path`` (the file written, or the image) and
        ``reason`` (why it failed; empty for a written file)."""
        rows = [("written", p, "") for p in self.written] + \
            [("failed", image, reason) for image, reason in self.failed]
        return {"status": [r[0] for r in rows], "path": [r[1] for r in rows],
                "reason": [r[2] for r in rows]}



def _shown_layers(model: nn.Module, layer: str, features, top, patches) -> List[str]:
    """The layers ``show`` draws (``"all"``: the zoo model's overview), checked with the
    options that need a single layer."""
    if top is not None and features is not None:
        raise ArgumentError("give top or features, not both")
    _check_count(features)
    aliases = aliases_of(model)
    if layer == "all":
        if not aliases:
            raise ArgumentError("layer 'all' needs a zoo model; name the layers instead")
        layers = overview_layers(aliases)
    else:
        layers = parse_list(layer, "layer")
    if len(layers) > 1 and (features is not None or patches):
        raise ArgumentError("features, patches and a token need a single layer")
    if top is not None:
        _check_top(top)
    return layers



@api(renamed={"on_image": "progress"}, legacy=("layer",),
     adapt={"on_image": lambda old: lambda done, total, label: old(label)})
@runs_model
def show(model: nn.Module, images: ImagesArg, *, layer: str,
         features: Optional[Sequence[int]] = None, top: Optional[int] = None,
         mode: str = "max", scaling: str = "signed", patches: bool = False,
         view: str = "auto", out: Optional[str] = None, combine: bool = False,
         dpi: int = 200, method: str = "deconvnet", net: Optional[Projector] = None,
         progress: ProgressArg = False, device: Optional[str] = None,
         precision: Optional[str] = None, token: Optional[str] = None) -> ShowReport:
    """Project and draw ``layer`` for each image, and write the figures: what
    ``deconvviz show`` does.

    Args:
        model: the network.
        images: photos in any form of the glossary (docs/api.md); a figure is named after
            its image's file (``image_K`` for a PIL image or a tensor).
        layer: an alias or module path; a comma list, or ``"all"`` (zoo models), for one row
            per layer.
        features: channel indices, as in :func:`project`.
        top: the number of strongest features, as in :func:`project` (default 16, or 6 per
            layer with several layers).
        mode: ``"max"`` or ``"map"``, as in :func:`project`.
        scaling: the display convention, as in :meth:`Projections.figure`.
        patches: pair each projection with its receptive-field patch.
        view: ``"auto"``, ``"crop"`` or ``"full"``, as in :meth:`Projections.figure`.
        out: the output file (see :func:`deconvviz._io.figure_paths`).
        combine: every image in one file.
        dpi: the resolution of raster output.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        net: a projector of ``model`` to reuse (its method is used).
        progress: as everywhere (docs/api.md), once each image is done, ``label`` its name.
        device: where to compute (docs/api.md).
        precision: ``"exact"`` or ``"tf32"`` (docs/api.md).
        token: a vision transformer's named token (``"cls"``) to project each feature at,
            as in :func:`project`, instead of its strongest patch (one layer).

    Returns:
        A :class:`ShowReport`. An unreadable image is reported there and the others are
        still drawn; every other error (a bad layer, feature or output) raises before any
        work.
    """
    return _show(**locals())


def _show(model, images, *, layer, features, top, mode, scaling, patches, view, out, combine,
          dpi, method, net, progress, device, precision, token) -> ShowReport:
    items = image_list(images)
    names = [image_name(item, k) for k, item in enumerate(items)]
    check_mode(mode), check_scaling(scaling), _check_view(view, mode)
    if isinstance(features, int):
        features = [features]
    layers = _shown_layers(model, layer, features, top, patches or token is not None)
    stems = [n if isinstance(item, str) else n.replace(" ", "_")
             for n, item in zip(names, items)]
    paths = figure_paths(stems, model_name(model), layer, out, combine)
    for path in paths:
        check_output_path(path, FIGURE_FORMATS)
    net = net or Projector(model, method=method)
    for name in layers:  # a bad layer name fails here, before any image is read
        net.reverse_pass(name)
        if view == "crop":  # a layer whose units see the whole image has nothing to crop
            check_crop(net.layer(name).whole_image or (token and f"the {token!r} token of layer "
                                                           f"{name!r} is no patch of the image"))

    def draw(item):
        if len(layers) > 1:
            results = project_layers(model, item, layers, top=top or 6, mode=mode, net=net)
            return lambda fig=None: figures.layer_overview(
                results, scaling=scaling, fig=fig,
                crop=[_crops(r, view) for r in results])
        model_, net_, x, rgb, path = _prepare(model, item, net)
        result = _project(model_, net_, x, rgb, path, layers[0], features, top or 16, mode,
                          None, token)
        return lambda fig=None: result.figure(scaling, patches=patches, view=view, fig=fig)

    written, failed, drawings = [], [], []
    with progress_bar(progress, total=len(items), desc="images", unit="image") as bar:
        for item, name, path in zip(items, names,
                                    paths * len(items) if combine else paths):
            try:
                drawing = draw(item)
            except ImageError as exc:
                failed.append((name, str(exc)))
            else:
                if combine:
                    drawings.append(drawing)
                else:
                    written.append(figures.save_figure(drawing(), path, dpi=dpi))
            bar.update(1, name)
    if combine and drawings:
        height = drawings[0]().get_size_inches()[1]
        written.append(figures.save_figure(figures.combine(drawings, height=height), paths[0],
                                           dpi=dpi))
    return ShowReport(written, failed)
