"""The atlas: every unit of a scan as a static website (see docs/atlas.md).

:func:`atlas` re-runs each image that holds a hit once (one recorded forward pass for all
the layers), projects all of its hits of a layer in one batched pass through their
receptive-field cones, crops each projection and the photo to the field, and writes the pair
as one small image; :mod:`deconvviz.figures.atlas_site` then writes the pages. Under
``torchrun`` each process projects a disjoint share of the images into the same folder.
"""
from __future__ import annotations

import os
import shutil
import time
from typing import Dict, List, Optional, Sequence, Union

import torch.distributed as dist
from torch import nn

from .. import method_table
from .._io import check_output_folder
from .._progress import ProgressArg
from .._signatures import api
from ..choices import TILE_SCALINGS
from ..engine import Projector
from ..engine.guard import device_for, runs_model
from ..errors import ArgumentError
from ..figures.atlas_site import layer_slugs, write_site
from ..figures.atlas_tiles import (
    IMAGE_FORMATS,
)
from .atlas_pages import (
    feature_vis_tiles,
    project_all,
    relevance_tiles,
    site_info,
    site_layers,
)
from .atlas_result import AtlasResult
from .scan_result import ScanResult, load_scan
from .top_hits import check_scanned_weights

__all__ = ["atlas", "AtlasResult"]



def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@api(legacy=())
@runs_model
def atlas(scan: Union[ScanResult, str, os.PathLike], out: Union[str, os.PathLike], *,
          model: Optional[nn.Module] = None, layers: Optional[Sequence[str]] = None,
          method: str = "deconvnet", scaling: str = "signed", image_format: str = "jpg",
          image_root: Union[None, str, os.PathLike] = None, progress: ProgressArg = True,
          feature_vis: Union[None, bool, Dict[str, object]] = None,
          device: Optional[str] = None, precision: Optional[str] = None) -> AtlasResult:
    """Write a static website of every unit of a scan: an index, a page per layer (every
    unit's strongest hit, sortable) and a page per unit (its hits beside their projections,
    its distribution over the images).

    Args:
        scan: a :class:`ScanResult` or the path of one.
        out: the atlas's folder (created; an earlier atlas there is replaced).
        model: the scanned model; by default rebuilt from the scan (zoo name and weights).
            Other weights than the scan's are refused.
        layers: some of the scan's layers (default: all).
        method: the reverse pass, one of ``deconvnet``, ``guided``, ``gradient``.
        scaling: display convention of each projection: ``signed``, ``paper`` or
            ``heatmap`` (``shared`` needs every tile at once).
        image_format: ``jpg`` or ``webp``.
        image_root: where the scan's photos are now, if they moved (see
            :func:`load_scan`); every photo must still give the values the scan recorded.
        progress: ``True`` (a bar on stderr, counting images), ``False``, or
            ``progress(done, total, label)``.
        feature_vis: also each unit's optimised image on its page (:func:`feature_vis`;
            ``True`` for its defaults, or a dict of its options such as ``{"steps": 128}``),
            beside its hits and their projections.
        device: where to compute (default: where the model is; a model rebuilt from the
            scan: the CPU).
        precision: ``"exact"`` (default: float32 throughout, TF32 off on CUDA) or
            ``"tf32"`` (faster on GPUs, not exact); see ``docs/gpu.md``.

    Returns:
        An :class:`AtlasResult` (on every ``torchrun`` process).

    Examples:
        >>> site = atlas("scan.pt", "atlas/")
        >>> site.unit_page("conv5", 42)
        'atlas/conv5/42.html'
    """
    result, names = _checked(scan, image_root, method, scaling, image_format, layers)
    final = check_output_folder(os.fspath(out), "atlas.json")
    if model is None:
        if result.weights == "user":
            raise ArgumentError(f"the scan is of a model outside the zoo ({result.model}); "
                                f"build its atlas in Python: dv.atlas(scan, out, model=...)")
        model = result.load_model()
        if device is not None:
            model = model.to(device_for(model, device))
    check_scanned_weights(result, model)
    net = Projector(model, method=method)
    units = {l: [[h for h in result.top(l, f) if h.value > 0]  # a zero is not a hit
                 for f in range(result.features(l))] for l in names}
    rank_id, world = _rank_world()
    staging = final + ".partial"
    try:
        info, site_layers, spent = _write(result, model, net, names, units, staging, final,
                                          (method, scaling, image_format), progress,
                                          feature_vis, (rank_id, world))
    except BaseException:
        if rank_id == 0 and os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return AtlasResult(os.fspath(out), info, site_layers, spent)


def _checked(scan, image_root, method, scaling, image_format, layers):
    """The scan (moved to ``image_root``) and its layers to draw, every option checked."""
    result = (scan.relocated(image_root) if isinstance(scan, ScanResult)
              else load_scan(scan, image_root=image_root))
    method_table.check(method, method_table.REVERSE)
    if scaling not in TILE_SCALINGS:
        raise ArgumentError(f"scaling {scaling!r} is not one the atlas draws tile by tile; "
                            f"choose from {', '.join(TILE_SCALINGS)}")
    if image_format not in IMAGE_FORMATS:
        raise ArgumentError(f"unknown image format {image_format!r}; choose from "
                            f"{', '.join(IMAGE_FORMATS)}")
    names = list(layers) if layers is not None else list(result.layer_names)
    if not names:
        raise ArgumentError("no layers for the atlas")
    for name in names:
        result.features(name)  # names the scan's layers if it is not one of them
    return result, names


def _write(result, model, net, names, units, staging, final, drawing, progress, feature_vis,
           ranks):
    """Every tile and page into ``staging`` (each rank its share of the photos), then the
    finished site in place of ``final``."""
    method, scaling, image_format = drawing
    rank_id, world = ranks
    slugs = layer_slugs(names)
    by_image: Dict[str, list] = {}
    for layer in names:
        for f, hits in enumerate(units[layer]):
            for rank, hit in enumerate(hits):
                by_image.setdefault(hit.image, []).append((layer, f, rank, hit))
    if rank_id == 0:
        if os.path.exists(staging):
            shutil.rmtree(staging)
        for slug in slugs.values():
            os.makedirs(os.path.join(staging, slug, "img"))
    if world > 1:
        dist.barrier()
    position = {}
    for i, path in enumerate(result.images):
        position.setdefault(path, i)
    order = sorted(by_image, key=position.__getitem__)
    mine = {p: by_image[p] for p in order[rank_id::world]}
    spent = project_all(result, net, names, slugs, mine, staging, scaling, image_format,
                        progress if rank_id == 0 else False)
    settings = None
    if feature_vis:
        settings, spent["feature_vis"] = feature_vis_tiles(
            model, net, result, names, slugs, staging, feature_vis, rank_id, world)
    if rank_id == 0 and result.has_relevance:
        relevance_tiles(result, net, names, slugs, staging, image_format, spent)
    if world > 1:
        parts: List = [None] * world
        dist.all_gather_object(parts, spent)
        spent = {k: sum(p[k] for p in parts) for k in spent}
    site_layers_ = site_layers(result, net, names, slugs, units)
    info = site_info(result, model, method, scaling, image_format)
    if settings is not None:
        info.feature_vis = settings
        for site_layer in site_layers_:
            for unit in site_layer.units:
                unit.feature_vis = f"img/u{unit.index}_fv.png"
    started = time.perf_counter()
    if rank_id == 0:
        written = write_site(staging, info, site_layers_)
        spent["files"] += len(written)
        spent["bytes"] += sum(os.path.getsize(os.path.join(staging, w)) for w in written)
        _replace(staging, final)
    spent["pages"] = time.perf_counter() - started
    spent["writing"] += spent["pages"]
    if world > 1:
        dist.barrier()
    return info, site_layers_, spent


def _replace(staging: str, final: str) -> None:
    """Put the finished site in place of ``final`` (an earlier atlas or an empty folder)."""
    old = None
    if os.path.exists(final):
        old = f"{final}.old-{os.getpid()}"
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
